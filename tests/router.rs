//! REST edge cases that need no second node, against the router of one
//! node built in-process (no socket): `tower::ServiceExt::oneshot`.

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use ringshare_tests::built;
use serde_json::Value;
use tower::ServiceExt;

/// A node's router with the default plugins in a fresh folder (kept alive
/// by the returned guard).
async fn router() -> (axum::Router, tempfile::TempDir) {
    built(|config| config.max_upload_bytes = 1000).await
}

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, to_bytes(body, 1 << 20).await.unwrap().to_vec())
}

fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder().method(method).uri(uri).body(body.into()).unwrap()
}

/// The `code` of a JSON error body.
fn code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("a JSON error");
    v["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn uploads_are_checked_before_a_byte_is_stored() {
    let (app, _dir) = router().await;
    // Over the limit by its declared length: refused before the body is read.
    let big = Request::builder()
        .method(Method::PUT)
        .uri("/files/big")
        .header(header::CONTENT_LENGTH, "5000")
        .body(Body::from(vec![0u8; 5000]))
        .unwrap();
    let (status, headers, body) = call(&app, big).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too-large"));
    assert_eq!(headers[header::CONNECTION], "close");
    // A bad query and a bad name.
    let (status, _, body) = call(&app, request(Method::PUT, "/files/x?overwrite=maybe", "x")).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::BAD_REQUEST, "bad-query"));
    for name in ["%2E%2E", "a%2Fb", "nul%00", "line%0Abreak"] {
        let (status, _, body) = call(&app, request(Method::PUT, &format!("/files/{name}"), "x")).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::BAD_REQUEST, "invalid-name"), "{name}");
    }
    let (_, _, listing) = call(&app, request(Method::GET, "/files", Body::empty())).await;
    assert_eq!(listing, b"[]");
    // A stored file answers with its hash, b3sum's.
    let (status, headers, body) = call(&app, request(Method::PUT, "/files/ok", "fine")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[header::LOCATION], "/files/ok");
    let entry: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(entry["blake3"], blake3::hash(b"fine").to_hex().as_str());
    assert_eq!(entry["copies_wanted"], 1);
    let (status, _, body) = call(&app, request(Method::PUT, "/files/ok", "again")).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::CONFLICT, "already-exists"));
}

#[tokio::test]
async fn downloads_answer_ranges_and_conditions_exactly() {
    let (app, _dir) = router().await;
    let data: Vec<u8> = (0..900u32).map(|i| (i % 251) as u8).collect();
    let (status, _, _) = call(&app, request(Method::PUT, "/files/r", data.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    let etag = format!("\"{}\"", blake3::hash(&data).to_hex());
    let get = |headers: &[(&str, &str)]| {
        let mut builder = Request::builder().uri("/files/r");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(Body::empty()).unwrap()
    };
    let (status, headers, body) = call(&app, get(&[("range", "bytes=10-19")])).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 10-19/900");
    assert_eq!(body, &data[10..20]);
    // Several ranges, or a header that does not parse: the whole file.
    for range in ["bytes=0-1,5-6", "bytes=x-y"] {
        let (status, _, body) = call(&app, get(&[("range", range)])).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 900), "{range}");
    }
    let (status, headers, body) = call(&app, get(&[("range", "bytes=900-")])).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::RANGE_NOT_SATISFIABLE, "range-not-satisfiable"));
    assert_eq!(headers[header::CONTENT_RANGE], "bytes */900");
    let (status, _, body) = call(&app, get(&[("if-none-match", &etag)])).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    let (status, _, body) = call(&app, get(&[("range", "bytes=0-9"), ("if-range", "\"stale\"")])).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 900));
    let head = request(Method::HEAD, "/files/r", Body::empty());
    let (status, headers, body) = call(&app, head).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(headers[header::ETAG], etag.as_str());
    assert_eq!(headers[header::CONTENT_LENGTH], "900");
}

#[tokio::test]
async fn unknown_routes_missing_files_and_long_prefixes_are_json_errors() {
    let (app, _dir) = router().await;
    let cases = [
        (Method::GET, "/nowhere".to_owned(), StatusCode::NOT_FOUND, "no-route"),
        (Method::POST, "/files/x".to_owned(), StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
        (Method::GET, "/files/missing".to_owned(), StatusCode::NOT_FOUND, "not-found"),
        (Method::DELETE, "/files/missing".to_owned(), StatusCode::NOT_FOUND, "not-found"),
        (Method::GET, format!("/search?q={}", "a".repeat(300)), StatusCode::BAD_REQUEST, "bad-query"),
        (Method::GET, "/files?scope=galaxy".to_owned(), StatusCode::BAD_REQUEST, "bad-query"),
    ];
    for (method, uri, status, expected) in cases {
        let (got, headers, body) = call(&app, request(method.clone(), &uri, Body::empty())).await;
        assert_eq!((got, code(&body).as_str()), (status, expected), "{method} {uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{method} {uri}");
    }
}

/// A router whose node takes writes with `write` tokens (a file) and reads
/// with `read` tokens, if given.
async fn router_with_tokens(write: Option<&str>, read: Option<&str>) -> (axum::Router, tempfile::TempDir) {
    router_limited(write, read, ringshare::NodeConfig::new("d", "p").write_rate).await
}

/// The same, with writes limited to `write_rate` a second per client.
async fn router_limited(write: Option<&str>, read: Option<&str>, write_rate: u32) -> (axum::Router, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let tokens = tempfile::tempdir().unwrap();
    let mut files = [None, None];
    for ((token, slot), name) in [write, read].into_iter().zip(&mut files).zip(["write", "read"]) {
        if let Some(token) = token {
            let path = tokens.path().join(name);
            std::fs::write(&path, format!("{token}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            *slot = Some(path);
        }
    }
    let [write_token, read_token] = files;
    let (app, dir) = built(|config| {
        config.write_rate = write_rate;
        (config.write_token, config.read_token) = (write_token, read_token);
    })
    .await;
    // The node has read its tokens: their folder may go.
    drop(tokens);
    (app, dir)
}

/// `request` as if it came through the listener from `remote`.
fn from(remote: &str, mut request: Request<Body>) -> Request<Body> {
    request.extensions_mut().insert(ringshare::tls::Peer { remote: remote.parse().unwrap(), certificate: None });
    request
}

#[tokio::test]
async fn without_write_tokens_writes_come_only_from_this_machine() {
    let (app, _dir) = router().await;
    let (status, _, body) = call(&app, from("10.1.2.3:4000", request(Method::PUT, "/files/far", "x"))).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::FORBIDDEN, "protected-mode"));
    let (status, _, body) = call(&app, from("10.1.2.3:4000", request(Method::DELETE, "/files/far", ""))).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::FORBIDDEN, "protected-mode"));
    // Reads from anywhere, writes from loopback.
    let (status, _, _) = call(&app, from("10.1.2.3:4000", request(Method::GET, "/files", ""))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&app, from("127.0.0.1:4000", request(Method::PUT, "/files/near", "x"))).await;
    assert!(status.is_success(), "{status}");
}

#[tokio::test]
async fn with_write_tokens_every_write_needs_one_and_reads_stay_open() {
    let (app, _dir) = router_with_tokens(Some("s3cret-w"), None).await;
    let with = |token: &str, mut r: Request<Body>| {
        r.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        from("10.1.2.3:4000", r)
    };
    for refused in [
        from("127.0.0.1:1", request(Method::PUT, "/files/a", "x")),
        with("wrong", request(Method::PUT, "/files/a", "x")),
        from("10.1.2.3:4000", request(Method::DELETE, "/files/a", "")),
        from("10.1.2.3:4000", request(Method::POST, "/upload/", "")),
        from("10.1.2.3:4000", request(Method::POST, "/x/gallery/upload", "")),
    ] {
        let what = format!("{} {}", refused.method(), refused.uri());
        let (status, _, body) = call(&app, refused).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{what}");
    }
    let (status, _, _) = call(&app, with("s3cret-w", request(Method::PUT, "/files/a", "x"))).await;
    assert!(status.is_success(), "{status}");
    let (status, _, body) = call(&app, from("10.1.2.3:4000", request(Method::GET, "/files/a", ""))).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, b"x".as_slice()));
    let (status, _, _) = call(&app, with("s3cret-w", request(Method::DELETE, "/files/a", ""))).await;
    assert!(status.is_success(), "{status}");
}

#[tokio::test]
async fn with_read_tokens_reads_need_a_read_or_write_token() {
    let (app, _dir) = router_with_tokens(Some("w-token"), Some("r-token")).await;
    let with = |token: &str| {
        let mut r = request(Method::GET, "/files", "");
        r.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        r
    };
    let (status, _, body) = call(&app, request(Method::GET, "/files", "")).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert_eq!(call(&app, with("nope")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, with("r-token")).await.0, StatusCode::OK);
    assert_eq!(call(&app, with("w-token")).await.0, StatusCode::OK);
    // The ring page's cookie (for its live events and download links):
    // reads only, never writes.
    let cookie = |method: Method, uri: &str, value: &str| {
        let mut r = request(method, uri, "x");
        r.headers_mut().insert(header::COOKIE, format!("theme=dark; ringshare_token={value}").parse().unwrap());
        r
    };
    assert_eq!(call(&app, cookie(Method::GET, "/files", "r-token")).await.0, StatusCode::OK);
    assert_eq!(call(&app, cookie(Method::GET, "/files", "w%2Dtoken")).await.0, StatusCode::OK, "percent-encoded");
    assert_eq!(call(&app, cookie(Method::GET, "/files", "nope")).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(&app, cookie(Method::PUT, "/files/by-cookie", "w-token")).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "a write needs the header");
}

#[tokio::test]
async fn a_client_writing_too_fast_is_told_to_wait_and_others_are_not() {
    let (app, _dir) = router_limited(Some("w"), None, 2).await;
    let put = |remote: &str, i: usize| {
        let mut r = request(Method::PUT, &format!("/files/f{i}?overwrite=true"), "x");
        r.headers_mut().insert(header::AUTHORIZATION, "Bearer w".parse().unwrap());
        from(remote, r)
    };
    // Bursts of twice the rate, then 429 with retry-after.
    for i in 0..4 {
        let (status, _, _) = call(&app, put("10.1.2.3:4000", i)).await;
        assert!(status.is_success(), "write {i}: {status}");
    }
    let (status, headers, body) = call(&app, put("10.1.2.3:4001", 4)).await;
    assert_eq!((status, code(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, "too-many-writes"));
    assert!(headers[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Reads are not limited; another client, and loopback, write on.
    let (status, _, _) = call(&app, from("10.1.2.3:4000", request(Method::GET, "/files", ""))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&app, put("10.9.9.9:4000", 5)).await;
    assert!(status.is_success(), "{status}");
    for i in 0..10 {
        let (status, _, _) = call(&app, put("127.0.0.1:4000", 10 + i)).await;
        assert!(status.is_success(), "loopback write {i}: {status}");
    }
}
