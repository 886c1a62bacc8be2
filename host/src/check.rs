//! `ringshare plugin check FILE.wasm`: what a plugin author runs before
//! dropping a component into a node's folder. It says what the component
//! is (world, contract version, imports), loads it the way a node does
//! (with its manifest, if one is beside it), and exercises it against a
//! temporary store: a file stored, listed, read back whole and in part,
//! and removed, each step through the checked plugin where its kind does
//! that step and through the default plugins beside it for the others; an
//! HTTP plugin answers a request for its root. The first problem ends the
//! check with a line in plain words, and makes it fail.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::config::PluginLimits;
use crate::integrity::Digest;
use crate::plugins::{PluginHost, PluginKind, describe};
use crate::store::records::Records;
use crate::store::sync::GroupSync;
use crate::store::{FileName, StoreDir};

/// The deadline each plugin call gets during a check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The sample stored: five blocks, the last one partial.
const SAMPLE_BYTES: usize = (1 << 20) + 12_345;
const SAMPLE_NAME: &str = "ringshare-check.bin";

/// What a check found, line by line.
#[derive(Default)]
pub struct Report {
    lines: Vec<(Mark, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Info,
    Pass,
    Skip,
    Fail,
}

impl Report {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        !self.lines.iter().any(|(mark, _)| *mark == Mark::Fail)
    }

    fn say(&mut self, mark: Mark, line: impl Into<String>) {
        self.lines.push((mark, line.into()));
    }

    fn outcome<T>(&mut self, step: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => {
                self.say(Mark::Pass, step);
                Some(value)
            }
            Err(why) => {
                self.say(Mark::Fail, format!("{step}: {why}"));
                None
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (mark, line) in &self.lines {
            let tag = match mark {
                Mark::Info => "       ",
                Mark::Pass => "ok     ",
                Mark::Skip => "skipped",
                Mark::Fail => "FAILED ",
            };
            writeln!(f, "{tag} {line}")?;
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        write!(f, "{verdict}")
    }
}

/// Checks the component at `file`, with the default plugins found in
/// `companions` (`index.wasm`, `upload.wasm`, `download.wasm`) for the
/// steps its kind does not do.
pub async fn check_plugin(file: &Path, companions: &Path) -> Report {
    let mut report = Report::default();
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let Some(bytes) =
        report.outcome(&format!("read {}", file.display()), std::fs::read(file).map_err(|e| e.to_string()))
    else {
        return report;
    };
    let version = Digest(*blake3::hash(&bytes).as_bytes());
    report.say(Mark::Info, format!("{name}: {} bytes, version (BLAKE3) {version}", bytes.len()));
    let Some(description) = report.outcome("is a WebAssembly component", describe(&bytes)) else {
        return report;
    };
    report.say(Mark::Info, format!("exports: {}", description.exports.join(", ")));
    report.say(Mark::Info, format!("imports: {}", list_or_none(&description.imports)));
    let Some(kind) = report.outcome("implements one plugin world", description.kind) else {
        return report;
    };
    report.say(Mark::Info, format!("world: {}", world_of(kind)));

    let Some((_dir, host)) = report.outcome("loads into a node", load(file, &name, kind, companions).await) else {
        return report;
    };
    let name = Path::new(&name).with_extension("wasm").to_string_lossy().into_owned();
    let status = host.statuses().into_iter().find(|s| s.file == name);
    let route = status.as_ref().and_then(|s| s.grant.as_ref()?.route.clone());
    match status {
        Some(s) if s.loaded => {
            if let Some(grant) = &s.grant {
                report.say(
                    Mark::Info,
                    format!(
                        "granted: store {}, memory {} MiB, call deadline {} ms{}",
                        grant.store,
                        grant.memory_bytes >> 20,
                        grant.call_timeout.as_millis(),
                        grant.route.as_ref().map_or_else(String::new, |r| format!(", route /x/{r}/"))
                    ),
                );
            }
            report.say(Mark::Pass, "its imports are all provided by the host");
        }
        Some(s) => {
            report.say(Mark::Fail, format!("refused by the node: {}", s.reason.unwrap_or_default()));
            return report;
        }
        None => {
            report.say(Mark::Fail, "the node did not see it");
            return report;
        }
    }
    match (kind, route) {
        (PluginKind::Http, Some(route)) => {
            let answer = front_page(&host, &route).await;
            if let Some(line) = report.outcome(&format!("answers GET /x/{route}/ without failing"), answer) {
                report.say(Mark::Info, line);
            }
        }
        _ => exercise(&mut report, &host, kind, companions).await,
    }
    report
}

/// Asks an HTTP plugin for its front page; a failure, a 5xx or a body cut
/// short is a problem.
async fn front_page(host: &Arc<PluginHost>, route: &str) -> Result<String, String> {
    let request = axum::http::Request::get(format!("/x/{route}/"))
        .header("host", "localhost")
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let answer = host.serve_http(route, request).await.map_err(|e| e.to_string())?;
    let answer = answer.ok_or_else(|| format!("nothing serves /x/{route}/"))?;
    let (status, kind) = (answer.status(), answer.headers().get("content-type").cloned());
    let body = tokio::time::timeout(CHECK_TIMEOUT * 2, axum::body::to_bytes(answer.into_body(), 64 << 20))
        .await
        .map_err(|_| "its answer never ended".to_owned())?
        .map_err(|e| format!("its answer was cut short: {e}"))?;
    if status.is_server_error() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
    }
    let kind = kind.as_ref().and_then(|k| k.to_str().ok()).unwrap_or("no content-type");
    Ok(format!("its answer: {status}, {kind}, {} bytes", body.len()))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

fn world_of(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Index => crate::plugins::contract!("index-plugin"),
        PluginKind::Upload => crate::plugins::contract!("upload-plugin"),
        PluginKind::Download => crate::plugins::contract!("download-plugin"),
        PluginKind::Http => "wasi:http/proxy (an HTTP plugin)",
    }
}

/// A node's plugin host over a temporary store, with the checked plugin
/// (and its manifest) and the companions for the other kinds.
async fn load(
    file: &Path,
    name: &str,
    kind: PluginKind,
    companions: &Path,
) -> Result<(tempfile::TempDir, Arc<PluginHost>), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
    // A node reads `*.wasm` only: the component goes in under that name.
    let as_loaded = Path::new(name).with_extension("wasm");
    std::fs::copy(file, plugins.join(&as_loaded)).map_err(|e| e.to_string())?;
    let manifest = file.with_extension("toml");
    if manifest.is_file() {
        let target = plugins.join(&as_loaded).with_extension("toml");
        std::fs::copy(&manifest, target).map_err(|e| e.to_string())?;
    }
    for other in PluginKind::ALL.into_iter().filter(|k| *k != kind) {
        let companion = companions.join(format!("{other}.wasm"));
        let target = plugins.join(format!("{other}.wasm"));
        if companion.is_file() && !target.exists() {
            std::fs::copy(&companion, target).map_err(|e| e.to_string())?;
        }
    }
    let store = StoreDir::prepare(&dir.path().join("data")).map_err(|e| format!("a temporary store: {e}"))?;
    // A check stores one small sample: it keeps no disk space in reserve.
    let limits = PluginLimits { call_timeout: CHECK_TIMEOUT, reserve_free_bytes: 0, ..PluginLimits::default() };
    let root = store.root().to_path_buf();
    // The plugins built into the binary stand in for companions missing
    // beside it, so that a check runs from any folder.
    let synced = Arc::new(GroupSync::open(&[&root]).map_err(|e| format!("a temporary store: {e}"))?);
    let records = Arc::new(Records::in_memory());
    let host = tokio::task::spawn_blocking(move || PluginHost::load(&plugins, &root, limits, true, (synced, records)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e:#}"))?;
    Ok((dir, host))
}

/// Stores, lists, reads and removes a sample, noting which plugin each
/// step ran on.
async fn exercise(report: &mut Report, host: &Arc<PluginHost>, kind: PluginKind, companions: &Path) {
    let missing: Vec<PluginKind> =
        PluginKind::ALL.into_iter().filter(|k| *k != kind && host.serving(*k).is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|k| format!("{k}.wasm")).collect();
        report.say(
            Mark::Skip,
            format!("no {} beside it to pair with (--plugins): steps that need them are skipped", names.join(", ")),
        );
    }
    let has = |k: PluginKind| host.serving(k).is_some();
    if kind != PluginKind::Upload && !has(PluginKind::Upload) {
        report.say(
            Mark::Fail,
            format!(
                "a {kind} plugin is exercised on a file stored by an upload plugin, and there is no upload.wasm in {} \
                 (--plugins DIR), and none is built into this binary",
                companions.display()
            ),
        );
        return;
    }
    let by = |k: PluginKind| if k == kind { String::new() } else { format!(" (with the {k} plugin from --plugins)") };
    let name = FileName::parse(SAMPLE_NAME).expect("a valid name");
    let sample: Bytes = (0..SAMPLE_BYTES).map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8).collect::<Vec<u8>>().into();
    let digest = Digest(*blake3::hash(&sample).as_bytes());

    if kind == PluginKind::Index {
        let empty = host.list_by_plugin().await.map_err(|e| e.to_string()).and_then(|l| match l.len() {
            0 => Ok(()),
            n => Err(format!("an empty store was listed with {n} entries")),
        });
        report.outcome("lists an empty store as empty", empty);
    }
    if !has(PluginKind::Upload) || !report.passed() {
        return;
    }
    let stored = store(host, &name, &sample, digest).await;
    if report.outcome(&format!("stores a {SAMPLE_BYTES}-byte file{}", by(PluginKind::Upload)), stored).is_none() {
        return;
    }
    if kind == PluginKind::Upload {
        let again = match host.upload(&name, false, None).await {
            Err(crate::PluginError::Refused { refusal: crate::plugins::Refusal::AlreadyExists, .. }) => Ok(()),
            Err(e) => Err(format!("expected already-exists, got: {e}")),
            Ok(handle) => {
                handle.abort().await;
                Err("it accepted a second file of the same name without overwrite".into())
            }
        };
        report.outcome("refuses to overwrite unless asked", again);
    }
    if has(PluginKind::Index) && report.passed() {
        let listed = host.list_by_plugin().await.map_err(|e| e.to_string()).and_then(|l| {
            match l.iter().find(|e| e.name == SAMPLE_NAME) {
                Some(e) if e.size == SAMPLE_BYTES as u64 && e.blake3 == Some(digest) => Ok(()),
                Some(e) => Err(format!("listed with size {} and hash {:?}", e.size, e.blake3)),
                None => Err(format!("{SAMPLE_NAME} is not in the listing of {} entries", l.len())),
            }
        });
        report.outcome(&format!("lists it with its size and hash{}", by(PluginKind::Index)), listed);
    }
    if has(PluginKind::Download) && report.passed() {
        let whole = read(host, &name, 0..=SAMPLE_BYTES as u64 - 1).await.and_then(|got| {
            if got == sample { Ok(()) } else { Err(format!("read back {} bytes that differ", got.len())) }
        });
        report.outcome(&format!("reads it back whole, every block verified{}", by(PluginKind::Download)), whole);
        if !report.passed() {
            return;
        }
        let (from, to) = (300_000u64, 700_000u64);
        let part = read(host, &name, from..=to).await.and_then(|got| {
            if got[..] == sample[from as usize..=to as usize] { Ok(()) } else { Err("the bytes differ".into()) }
        });
        report.outcome(&format!("reads bytes {from}-{to}{}", by(PluginKind::Download)), part);
    }
    if !report.passed() {
        return;
    }
    let removed = host
        .remove(&name)
        .await
        .map_err(|e| e.to_string())
        .and_then(|existed| if existed { Ok(()) } else { Err("it said there was no such file".into()) });
    report.outcome(&format!("removes it{}", by(PluginKind::Upload)), removed);
    if has(PluginKind::Index) && report.passed() {
        let gone = host.list_by_plugin().await.map_err(|e| e.to_string()).and_then(|l| {
            match l.iter().find(|e| e.name == SAMPLE_NAME) {
                None => Ok(()),
                Some(_) => Err("still listed".into()),
            }
        });
        report.outcome(&format!("no longer lists it{}", by(PluginKind::Index)), gone);
    }
}

async fn store(host: &Arc<PluginHost>, name: &FileName, sample: &Bytes, digest: Digest) -> Result<(), String> {
    let mut upload = host.upload(name, false, None).await.map_err(|e| e.to_string())?;
    for piece in sample.chunks(256 << 10) {
        upload.write(vec![sample.slice_ref(piece)]).await.map_err(|e| e.to_string())?;
    }
    let entry = upload.finish(Some(digest)).await.map_err(|e| e.to_string())?.entry;
    if entry.size != sample.len() as u64 {
        return Err(format!("it reported {} bytes stored", entry.size));
    }
    Ok(())
}

async fn read(host: &Arc<PluginHost>, name: &FileName, range: std::ops::RangeInclusive<u64>) -> Result<Bytes, String> {
    let handle = host.download(name).await.map_err(|e| e.to_string())?;
    if handle.outboard().is_none() {
        return Err("it does not hand back the outboard recorded with the file".into());
    }
    let mut got = Vec::new();
    let mut stream = std::pin::pin!(handle.stream(range));
    while let Some(piece) = stream.next().await {
        got.extend_from_slice(&piece.map_err(|e| e.to_string())?);
    }
    Ok(got.into())
}
