//! Answers of the REST API as text for people: aligned columns, sizes in
//! KiB/MiB/GiB, times in UTC.

use serde_json::Value;

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// `1536` → `1.5 KiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Nanoseconds since the epoch as `2026-11-27 14:03:07`.
fn time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// A listing (this node's, or the network's with holders).
pub fn files(files: &Value, network: bool) -> String {
    let Some(files) = files.as_array() else { return String::new() };
    if files.is_empty() {
        return "no files".into();
    }
    let rows = files
        .iter()
        .map(|f| {
            let mut row = vec![
                text(&f["name"]),
                size(f["size"].as_u64().unwrap_or(0)),
                time(f["modified_ns"].as_u64().unwrap_or(0)),
                f["blake3"].as_str().map_or_else(|| "-".into(), |h| h.get(..16).unwrap_or(h).to_owned()),
            ];
            if network {
                let holders = f["holders"].as_array().map(|h| h.iter().map(text).collect::<Vec<_>>().join(" "));
                row.push(holders.unwrap_or_default());
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "SIZE", "MODIFIED (UTC)", "BLAKE3"];
    if network {
        header.push("HOLDERS");
    }
    table(&header, rows)
}

/// `lookup NAME`.
pub fn lookup(name: &str, found: &Value) -> String {
    let holders: Vec<String> =
        found["holders"].as_array().map(|h| h.iter().map(|n| text(&n["addr"])).collect()).unwrap_or_default();
    format!(
        "{name}: key {}\nresponsible: {} (found in {} hops)\nholders: {}",
        text(&found["key"]),
        text(&found["node"]["addr"]),
        found["hops"],
        holders.join(", ")
    )
}

/// `nodes`.
pub fn nodes(nodes: &Value) -> String {
    let Some(nodes) = nodes.as_array() else { return String::new() };
    let rows = nodes
        .iter()
        .map(|n| {
            let state = if n["alive"] == true { "answers" } else { "does not answer" };
            vec![text(&n["addr"]), text(&n["id"]), state.to_owned()]
        })
        .collect();
    table(&["NODE", "ID", "STATE"], rows)
}

/// `ring`.
pub fn ring(ring: &Value) -> String {
    let list = |v: &Value| -> String {
        v.as_array().map(|a| a.iter().map(|n| text(&n["addr"])).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    let mut distinct: Vec<String> = Vec::new();
    for finger in ring["fingers"].as_array().into_iter().flatten() {
        let addr = text(&finger["node"]["addr"]);
        if finger["node"].is_object() && !distinct.contains(&addr) {
            distinct.push(addr);
        }
    }
    format!(
        "node: {} (id {}){}\npredecessor: {}\nsuccessors: {}\nfingers (distinct): {}",
        text(&ring["addr"]),
        text(&ring["id"]),
        if ring["joined"] == true { "" } else { ", not joined yet" },
        ring["predecessor"].get("addr").map_or_else(|| "none".into(), text),
        list(&ring["successors"]),
        distinct.join(", ")
    )
}

/// `plugins`.
pub fn plugins(plugins: &Value) -> String {
    let Some(plugins) = plugins.as_array() else { return String::new() };
    let rows = plugins
        .iter()
        .map(|p| {
            let version = p["version"].as_str().map_or_else(|| "-".into(), |v| v.get(..12).unwrap_or(v).to_owned());
            let state = if p["loaded"] == true {
                p["grant"]["route"].as_str().map_or_else(|| "serving".into(), |r| format!("serving /x/{r}/"))
            } else {
                p["reason"].as_str().unwrap_or("not serving").to_owned()
            };
            let file = match p["source"].as_str() {
                Some("embedded") => format!("{} (embedded)", text(&p["file"])),
                _ => text(&p["file"]),
            };
            vec![
                file,
                p["kind"].as_str().unwrap_or("-").to_owned(),
                version,
                format!("{}/{}", p["calls_in_flight"], p["calls"]),
                state,
            ]
        })
        .collect();
    table(&["FILE", "KIND", "VERSION", "RUNNING/CALLS", "STATE"], rows)
}

/// One event heard (`events`).
pub fn event(kind: &str, data: &str) -> String {
    let value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let at = value["at_ns"].as_u64().map(time).unwrap_or_default();
    let about = ["name", "addr"].iter().find_map(|k| value[*k].as_str()).unwrap_or_default();
    format!("{at}  {kind:<16} {about}  (from {})", value["node"].as_str().unwrap_or("?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_like_people_write_them() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_795_792_147_000_000_000), "2026-11-27 15:09:07");
        assert_eq!(time(951_782_400_000_000_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn columns_line_up() {
        let shown = table(&["A", "LONGER"], vec![vec!["wide cell".into(), "x".into()]]);
        assert_eq!(shown, "A          LONGER\nwide cell  x");
    }
}
