//! Hostile test plugin (`wasi:http/proxy` world). Under its mount (the
//! `x-ringshare-mount` request header; the host passes the full path):
//!
//! - `GET /loop` never returns: the host's epoch deadline must stop it;
//! - `GET /hog` allocates 1 MiB blocks without bound, touching every page:
//!   the host's memory cap must stop it;
//! - `GET /escape` tries to read `/etc/passwd`, to read
//!   `/store/../../etc/passwd` and to create a file under `/store/files/`,
//!   and answers 200 with `{"etc_passwd": bool, "dotdot": bool, "write":
//!   bool}`, true for each attempt that succeeded (the host's tests expect
//!   all false);
//! - `GET /stall` answers 200 and a first line, then loops without
//!   writing more: the host must cut the body short, not end it cleanly;
//! - `GET /net` tries an outgoing HTTP request (to 127.0.0.1:9) and answers
//!   200 with `{"sent": bool}` (the host refuses it: false);
//! - `GET /sleep` sleeps for an hour before answering (waiting in a host
//!   call, not computing: the host's watchdog must drop it);
//! - `GET /ok` answers 200 "ok" (the control);
//! - its root (`GET /`) loops like `/loop`: the front page never answers,
//!   so `ringshare plugin check` fails it.

use std::io::Write;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Plugin;

wasi::http::proxy::export!(Plugin);

impl Guest for Plugin {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mount = request
            .headers()
            .get("x-ringshare-mount")
            .first()
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .unwrap_or_default();
        let path = request.path_with_query().unwrap_or_default();
        let rest = path.strip_prefix(mount.trim_end_matches('/')).unwrap_or(&path);
        drop(request);
        match rest {
            "/loop" | "/" | "" => spin(),
            "/stall" => stall(out),
            "/sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                reply(out, 200, "text/plain", "woke up")
            }
            "/net" => reply(out, 200, "application/json", &format!("{{\"sent\": {}}}", outgoing())),
            "/hog" => hog(),
            "/escape" => reply(out, 200, "application/json", &escape()),
            "/ok" => reply(out, 200, "text/plain", "ok"),
            _ => reply(out, 404, "text/plain", "not found"),
        }
    }
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn stall(out: ResponseOutparam) -> ! {
    let headers = [("content-type".to_owned(), b"text/plain".to_vec())];
    if let Ok(fields) = Fields::from_list(&headers) {
        let response = OutgoingResponse::new(fields);
        if let Ok(outgoing) = response.body() {
            ResponseOutparam::set(out, Ok(response));
            if let Ok(mut stream) = outgoing.write() {
                let _ = stream.write_all(b"a first line, then nothing\n");
                let _ = stream.blocking_flush();
                std::mem::forget(stream);
            }
            std::mem::forget(outgoing);
        }
    }
    spin()
}

/// Whether an outgoing request got an answer.
fn outgoing() -> bool {
    use wasi::http::types::{OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some("127.0.0.1:9"));
    let _ = request.set_path_with_query(Some("/"));
    match wasi::http::outgoing_handler::handle(request, None) {
        Ok(future) => {
            future.subscribe().block();
            matches!(future.get(), Some(Ok(Ok(_))))
        }
        Err(_) => false,
    }
}

fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled, not just reserved, so every page is really touched.
        hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
    }
}

/// Each escape attempt, true when it worked.
fn escape() -> String {
    let etc_passwd = std::fs::read("/etc/passwd").is_ok();
    let dotdot = std::fs::read("/store/../../etc/passwd").is_ok();
    let meta = std::fs::read_dir("/store/meta").is_ok() || std::fs::read_dir("/store/files/../meta").is_ok();
    let planted = "/store/files/planted-by-http-hostile.txt";
    let write = std::fs::File::create(planted).and_then(|mut f| f.write_all(b"planted")).is_ok();
    format!("{{\"etc_passwd\": {etc_passwd}, \"dotdot\": {dotdot}, \"meta\": {meta}, \"write\": {write}}}")
}

fn reply(out: ResponseOutparam, status: u16, content_type: &str, body: &str) {
    let headers = [("content-type".to_owned(), content_type.as_bytes().to_vec())];
    let Ok(fields) = Fields::from_list(&headers) else { return };
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    // The stream is dropped at the end of the `if`, before the body is finished.
    if let Ok(mut stream) = outgoing.write()
        && stream.write_all(body.as_bytes()).is_ok()
    {
        let _ = stream.blocking_flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
