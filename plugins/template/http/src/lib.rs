//! Template: an HTTP plugin. It implements the standard `wasi:http/proxy`
//! world (it exports `wasi:http/incoming-handler`), not ringshare's
//! contract, so it needs no wit/ folder: the `wasi` crate has the bindings.
//!
//! The node mounts it at `/x/{route}/`, the route being the file's name
//! (`hello.wasm` serves `/x/hello/`) unless its manifest names one. Each
//! request runs `handle` on a fresh instance, which sees:
//!
//! - the full original path and query (`/x/hello/...?...`), and the mount
//!   (`/x/hello`) in the `x-ringshare-mount` header;
//! - the store's complete files read-only at `/store/files/` (nothing else
//!   of the store), unless its manifest asks for `store = "none"`;
//! - no network: outgoing requests are refused.
//!
//! It must answer within its call deadline, and once it has answered, keep
//! its body moving: a body stalled for longer than the deadline is cut.
//!
//! This one answers `GET {mount}/` with a small JSON document (a greeting
//! and the number of files in the store), and 404 to anything else.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Plugin;

wasi::http::proxy::export!(Plugin);

impl Guest for Plugin {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = answer(&request);
        drop(request);
        respond(out, status, &body);
    }
}

/// The status and JSON body for `request`.
fn answer(request: &IncomingRequest) -> (u16, String) {
    // The mount without its trailing '/' ("" without the header: served
    // from the root).
    let mount = request.headers().get("x-ringshare-mount").first().and_then(|v| String::from_utf8(v.clone()).ok());
    let mount = mount.as_deref().unwrap_or("").trim_end_matches('/').to_owned();
    let target = request.path_with_query().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let at_root = path.strip_prefix(mount.as_str()).is_some_and(|rest| rest.is_empty() || rest == "/");
    if !(at_root && matches!(request.method(), Method::Get)) {
        return (404, "{\"error\":\"not found\"}\n".into());
    }
    // `null` when the store is not granted (manifest: store = "none").
    let files = count_files().map_or_else(|| "null".to_owned(), |n| n.to_string());
    (200, format!("{{\"hello\":\"from the ringshare HTTP plugin template\",\"files\":{files}}}\n"))
}

/// The number of files in the store (names starting with '.' left out).
fn count_files() -> Option<usize> {
    let entries = std::fs::read_dir("/store/files").ok()?;
    let visible = |e: &std::fs::DirEntry| !e.file_name().to_string_lossy().starts_with('.');
    let is_file = |e: &std::fs::DirEntry| e.file_type().is_ok_and(|t| t.is_file());
    Some(entries.filter_map(Result::ok).filter(|e| visible(e) && is_file(e)).count())
}

/// Sends the answer: status and headers first, then the body, then the
/// body's end. A body dropped without `OutgoingBody::finish` tells the host
/// the answer is broken (the client's connection is cut).
fn respond(out: ResponseOutparam, status: u16, body: &str) {
    let headers = [
        ("content-type".to_owned(), b"application/json".to_vec()),
        ("content-length".to_owned(), body.len().to_string().into_bytes()),
    ];
    // These cannot fail with the constant headers and fresh response here;
    // a panic would trap, and the client would get a 500 naming the plugin.
    let response = OutgoingResponse::new(Fields::from_list(&headers).expect("valid headers"));
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body, taken once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = outgoing.write().expect("the body's stream, taken once");
    // `write_all` (std's io::Write) writes in pieces the stream accepts.
    let written = stream.write_all(body.as_bytes()).is_ok() && stream.blocking_flush().is_ok();
    drop(stream); // the stream must go before its body is finished
    if written {
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
