//! The gallery: an optional plugin for the standard `wasi:http/proxy` world
//! (it exports `wasi:http/incoming-handler`, as Spin apps do).
//!
//! The node grants it the store's files read-only at `/store/files/` (and
//! nothing else of the store; names starting with '.' are ignored) and passes it
//! every request under its mount, with the full original path and query,
//! plus the mount itself in the `x-ringshare-mount` header (e.g.
//! `/x/gallery`). Under the mount it answers:
//!
//! - `GET /` — an HTML page: images as thumbnails, text files with a preview
//!   of their first lines, other files as plain links;
//! - `GET /file/{name}` — the file's bytes with its content type, spliced
//!   from the file to the response body by the host in chunks (they never
//!   pass through the plugin's memory);
//! - `GET /search?q=TEXT` — JSON `[{"name", "line", "text"}]`: lines of text
//!   files containing TEXT, case-insensitive, at most 200 of them; files over
//!   8 MiB are skipped.
//!
//! A bad name (empty, with '/', '\\' or "..", starting with '.') is a 400, a
//! missing file a 404, any method but GET a 405. Without the `/store`
//! preopen every request gets a 503 explaining why.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};

use wasi::exports::http::incoming_handler::Guest;
use wasi::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode as FsError, OpenFlags, PathFlags,
};
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{OutputStream, StreamError};

/// Where the node grants the store's files (read-only).
const FILES: &str = "/store/files";
/// The request header carrying the plugin's mount prefix.
const MOUNT_HEADER: &str = "x-ringshare-mount";
/// Search skips text files larger than this.
const MAX_SEARCH_FILE: u64 = 8 << 20;
/// Search stops after this many matching lines.
const MAX_MATCHES: usize = 200;
/// A matching line is cut to this many characters in the search answer.
const MAX_MATCH_CHARS: usize = 500;
/// The page previews at most this many lines of a text file...
const PREVIEW_LINES: usize = 6;
/// ... read from at most this many bytes of it.
const PREVIEW_BYTES: u64 = 2048;
/// Bytes asked of the host per splice when streaming a file.
const CHUNK: u64 = 256 << 10;

/// Security headers of every answer: nothing sniffed, and nothing served
/// here (an SVG or a page opened directly) may run scripts.
const FILE_CSP: &str = "sandbox; default-src 'none'; style-src 'unsafe-inline'";
const PAGE_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'";

struct Gallery;

wasi::http::proxy::export!(Gallery);

impl Guest for Gallery {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let reply = route(&request);
        drop(request);
        reply.send(out);
    }
}

/// What a file is, by its extension.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Text,
    Other,
}

/// A file of the store as the gallery shows it.
struct FileInfo {
    name: String,
    size: u64,
    kind: Kind,
}

/// The file's kind and the content type it is served with.
fn classify(name: &str) -> (Kind, &'static str) {
    let ext = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => (Kind::Image, "image/png"),
        "jpg" | "jpeg" => (Kind::Image, "image/jpeg"),
        "gif" => (Kind::Image, "image/gif"),
        "webp" => (Kind::Image, "image/webp"),
        "svg" => (Kind::Image, "image/svg+xml"),
        "md" | "markdown" => (Kind::Text, "text/markdown; charset=utf-8"),
        "csv" => (Kind::Text, "text/csv; charset=utf-8"),
        "json" => (Kind::Text, "application/json"),
        "txt" | "log" | "rs" | "toml" | "yaml" | "yml" | "ini" | "cfg" | "conf" | "tsv" | "xml"
        | "html" | "htm" | "css" | "js" | "ts" | "py" | "sh" | "c" | "h" | "cpp" | "go" | "java"
        | "wit" | "sql" => (Kind::Text, "text/plain; charset=utf-8"),
        _ => (Kind::Other, "application/octet-stream"),
    }
}

/// Routes a request: the mount prefix, the method, then the path under it.
fn route(request: &IncomingRequest) -> Reply {
    let mount = mount_of(request);
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let Some(rest) = path.strip_prefix(mount.as_str()).filter(|r| r.is_empty() || r.starts_with('/')) else {
        return Reply::text(404, format!("{path} is not under this plugin's mount {mount:?}"));
    };
    if !matches!(request.method(), Method::Get) {
        return Reply::text(405, "only GET is supported").header("allow", "GET");
    }
    if !store_granted() {
        return Reply::text(
            503,
            "the gallery has no access to the node's store (no /store directory was granted to it)",
        );
    }
    match rest {
        "" | "/" => index_page(&mount),
        "/search" => search(query),
        _ => match rest.strip_prefix("/file/") {
            Some(raw) => serve_file(raw),
            None => Reply::text(404, format!("no such page: {path}")),
        },
    }
}

/// The mount prefix the host passed, without its trailing '/' ("" when the
/// header is missing or unusable: the plugin then serves from the root).
fn mount_of(request: &IncomingRequest) -> String {
    let values = request.headers().get(MOUNT_HEADER);
    let mount = values.first().and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
    let mount = mount.trim_end_matches('/');
    if mount.starts_with('/') { mount.to_owned() } else { String::new() }
}

/// The preopened files directory, if the node granted one.
fn store_dir() -> Option<Descriptor> {
    wasi::filesystem::preopens::get_directories().into_iter().find(|(_, path)| path == FILES).map(|(dir, _)| dir)
}

fn store_granted() -> bool {
    store_dir().is_some()
}

/// Whether `name` is one plain file name the gallery may serve.
fn valid_name(name: &str) -> bool {
    !(name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.contains("..")
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control))
}

/// The store's regular files (names starting with '.' left out), by name.
fn list_files() -> std::io::Result<Vec<FileInfo>> {
    let mut files = Vec::new();
    for dirent in fs::read_dir(FILES)? {
        let dirent = dirent?;
        let Ok(name) = dirent.file_name().into_string() else { continue };
        if !valid_name(&name) {
            continue;
        }
        // A file can vanish between the listing and the stat: skip it.
        let Ok(metadata) = dirent.metadata() else { continue };
        if metadata.is_file() {
            files.push(FileInfo { kind: classify(&name).0, name, size: metadata.len() });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// `GET {mount}/`: the HTML page.
fn index_page(mount: &str) -> Reply {
    let files = match list_files() {
        Ok(files) => files,
        Err(e) => return Reply::text(500, format!("cannot list the store: {e}")),
    };
    let mount_html = escape_html(mount);
    let href = |name: &str| format!("{mount_html}/file/{}", percent_encode(name));
    let mut page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Gallery</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;max-width:70em}}\
         .grid{{display:flex;flex-wrap:wrap;gap:1em}}\
         figure{{margin:0;width:180px;text-align:center}}\
         figure img{{width:180px;height:180px;object-fit:cover;border:1px solid #ccc}}\
         figcaption{{font-size:.85em;overflow-wrap:anywhere}}\
         pre{{background:#f4f4f4;padding:.5em;overflow:auto;max-height:10em}}\
         </style></head><body>\n<h1>Gallery</h1>\n\
         <form action=\"{mount_html}/search\"><input name=\"q\" placeholder=\"search text files\" required> \
         <button>Search</button></form>\n"
    );
    let images: Vec<_> = files.iter().filter(|f| f.kind == Kind::Image).collect();
    page += &format!("<h2>Images ({})</h2>\n<div class=\"grid\">\n", images.len());
    for f in images {
        let (name, link) = (escape_html(&f.name), href(&f.name));
        page += &format!(
            "<a href=\"{link}\"><figure><img src=\"{link}\" loading=\"lazy\" alt=\"{name}\">\
             <figcaption>{name}</figcaption></figure></a>\n"
        );
    }
    page += "</div>\n";
    let texts: Vec<_> = files.iter().filter(|f| f.kind == Kind::Text).collect();
    page += &format!("<h2>Text files ({})</h2>\n", texts.len());
    for f in texts {
        page += &format!(
            "<h3><a href=\"{}\">{}</a> <small>{}</small></h3>\n<pre>{}</pre>\n",
            href(&f.name),
            escape_html(&f.name),
            human_size(f.size),
            escape_html(&preview(&f.name)),
        );
    }
    let others: Vec<_> = files.iter().filter(|f| f.kind == Kind::Other).collect();
    if !others.is_empty() {
        page += &format!("<h2>Other files ({})</h2>\n<ul>\n", others.len());
        for f in others {
            page += &format!(
                "<li><a href=\"{}\">{}</a> <small>{}</small></li>\n",
                href(&f.name),
                escape_html(&f.name),
                human_size(f.size)
            );
        }
        page += "</ul>\n";
    }
    page += "</body></html>\n";
    Reply::new(200, "text/html; charset=utf-8", page).header("content-security-policy", PAGE_CSP)
}

/// The first lines of a text file, from a bounded read.
fn preview(name: &str) -> String {
    let mut head = Vec::new();
    let read = File::open(format!("{FILES}/{name}")).and_then(|f| f.take(PREVIEW_BYTES).read_to_end(&mut head));
    if let Err(e) = read {
        return format!("(unreadable: {e})");
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines: Vec<&str> = text.lines().take(PREVIEW_LINES).collect();
    if head.len() as u64 == PREVIEW_BYTES && lines.len() < PREVIEW_LINES {
        lines.push("…");
    }
    lines.join("\n")
}

/// `GET {mount}/file/{name}`: the file, streamed.
fn serve_file(raw: &str) -> Reply {
    let Some(name) = percent_decode(raw, false) else {
        return Reply::text(400, "the file name is not valid percent-encoded UTF-8");
    };
    if !valid_name(&name) {
        return Reply::text(400, format!("{name:?} is not a plain file name"));
    }
    let Some(store) = store_dir() else {
        return Reply::text(503, "the gallery has no access to the node's store");
    };
    let file = match store.open_at(PathFlags::empty(), &name, OpenFlags::empty(), DescriptorFlags::READ)
    {
        Ok(file) => file,
        Err(FsError::NoEntry) => return Reply::text(404, format!("no file named {name:?}")),
        Err(e) => return Reply::text(500, format!("cannot open {name:?}: {e}")),
    };
    match file.stat() {
        Ok(stat) if stat.type_ == DescriptorType::RegularFile => Reply {
            status: 200,
            headers: vec![("content-type".into(), classify(&name).1.into())],
            body: Body::File { file, size: stat.size },
        }
        .header("content-security-policy", FILE_CSP),
        Ok(_) => Reply::text(404, format!("{name:?} is not a regular file")),
        Err(e) => Reply::text(500, format!("cannot stat {name:?}: {e}")),
    }
}

/// `GET {mount}/search?q=TEXT`: matching lines of the text files, as JSON.
fn search(query: &str) -> Reply {
    let needle = match query_param(query, "q") {
        Ok(Some(q)) if !q.is_empty() => q.to_lowercase(),
        Ok(_) => return Reply::text(400, "missing search text: use ?q=TEXT"),
        Err(()) => return Reply::text(400, "the query is not valid percent-encoded UTF-8"),
    };
    let files = match list_files() {
        Ok(files) => files,
        Err(e) => return Reply::text(500, format!("cannot list the store: {e}")),
    };
    let mut json = String::from("[");
    let mut matches = 0;
    'files: for f in files.iter().filter(|f| f.kind == Kind::Text && f.size <= MAX_SEARCH_FILE) {
        let Ok(file) = File::open(format!("{FILES}/{}", f.name)) else { continue };
        // `take` keeps the read bounded even if the file grew since the listing.
        let mut reader = BufReader::new(file.take(MAX_SEARCH_FILE));
        let mut line = Vec::new();
        for number in 1u64.. {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.to_lowercase().contains(&needle) {
                continue;
            }
            let cut: String = text.chars().take(MAX_MATCH_CHARS).collect();
            if matches > 0 {
                json.push(',');
            }
            json += &format!(
                "{{\"name\":\"{}\",\"line\":{number},\"text\":\"{}\"}}",
                escape_json(&f.name),
                escape_json(&cut)
            );
            matches += 1;
            if matches == MAX_MATCHES {
                break 'files;
            }
        }
    }
    json.push(']');
    Reply::new(200, "application/json", json)
}

/// The answer's body.
enum Body {
    Bytes(Vec<u8>),
    /// A regular file of the store, `size` bytes as stat'ed.
    File { file: Descriptor, size: u64 },
}

/// An answer, built by the routes and sent once by [`Reply::send`].
struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, headers: vec![("content-type".into(), content_type.into())], body: Body::Bytes(body.into()) }
    }

    fn text(status: u16, message: impl Into<String>) -> Reply {
        let mut message = message.into();
        message.push('\n');
        Reply::new(status, "text/plain; charset=utf-8", message)
    }

    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the status and headers, then writes the body.
    fn send(mut self, out: ResponseOutparam) {
        let length = match &self.body {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File { size, .. } => *size,
        };
        self.headers.push(("content-length".into(), length.to_string().into()));
        self.headers.push(("x-content-type-options".into(), "nosniff".into()));
        let fields = match Fields::from_list(&self.headers) {
            Ok(fields) => fields,
            Err(e) => {
                ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(format!("bad header: {e:?}")))));
                return;
            }
        };
        let response = OutgoingResponse::new(fields);
        let (Ok(()), Ok(body)) = (response.set_status_code(self.status), response.body()) else {
            ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some("cannot build the response".into()))));
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        let written = match body.write() {
            Ok(mut stream) => {
                let written = match &self.body {
                    Body::Bytes(bytes) => stream.write_all(bytes).is_ok() && stream.blocking_flush().is_ok(),
                    Body::File { file, size } => splice_file(&stream, file, *size),
                };
                drop(stream); // the stream must go before its body is finished
                written
            }
            Err(()) => false,
        };
        // A body dropped unfinished tells the host the response is broken.
        if written {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

/// Has the host copy `size` bytes of `file` into `out`, a chunk at a time.
fn splice_file(out: &OutputStream, file: &Descriptor, size: u64) -> bool {
    let Ok(input) = file.read_via_stream(0) else { return false };
    let mut left = size;
    let mut idle = 0;
    while left > 0 {
        match out.blocking_splice(&input, left.min(CHUNK)) {
            Ok(0) => {
                idle += 1;
                if idle > 1000 {
                    return false;
                }
            }
            Ok(n) => {
                idle = 0;
                left = left.saturating_sub(n);
            }
            // Closed: the file shrank since its stat; the length is now wrong.
            Err(StreamError::Closed | StreamError::LastOperationFailed(_)) => return false,
        }
    }
    out.blocking_flush().is_ok()
}

/// The decoded value of `key` in a form-encoded query string.
fn query_param(query: &str, key: &str) -> Result<Option<String>, ()> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k, true).as_deref() == Some(key) {
            return percent_decode(v, true).map(Some).ok_or(());
        }
    }
    Ok(None)
}

/// Decodes %XX escapes (and '+' as a space in query strings); None when an
/// escape is broken or the result is not UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

fn escape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            '\r' => out += "\\r",
            '\t' => out += "\\t",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
