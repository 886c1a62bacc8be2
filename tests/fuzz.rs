//! Fuzzed outside input, through the router of a real node built in-process
//! (default plugins, no socket), with a fixed budget of cases each
//! (proptest; a failing case is shrunk, kept in `proptest-regressions/` and
//! tried first ever after):
//!
//! - names of any bytes in `PUT`/`GET`/`HEAD`/`DELETE /files/{name}`;
//! - `Range`, `If-Range` and `If-None-Match` of any text on a stored file;
//! - multipart bodies of any shape to the legacy `POST /upload/`;
//! - any bytes as the message of every ring and file RPC.
//!
//! Each answer is one the API documents, errors are its JSON shape, a
//! refused write stores nothing, and the node answers afterwards. The
//! parsers' own fuzz targets (protobuf conversions, hand-offs, events,
//! manifests, plugin entries, ranges, names) are unit tests of the host.

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ringshare_tests::{built, pattern};
use tower::ServiceExt;

/// Cases tried per target (about a second each on a 2-core machine).
const CASES: u32 = 1000;

struct Node {
    app: axum::Router,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Node {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (app, _dir) = rt.block_on(built(|config| config.max_upload_bytes = 1 << 20));
        Node { app, _dir, rt }
    }

    fn call(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        self.rt.block_on(async {
            let (parts, body) = self.app.clone().oneshot(request).await.unwrap().into_parts();
            (parts.status, parts.headers, to_bytes(body, 4 << 20).await.unwrap().to_vec())
        })
    }

    fn names(&self) -> Vec<String> {
        let (status, _, body) = self.call(Request::get("/files").body(Body::empty()).unwrap());
        assert_eq!(status, StatusCode::OK, "the node still lists its files");
        let listing: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let mut names: Vec<String> = listing.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    }
}

/// The runner of a target: failing cases are kept in
/// `tests/proptest-regressions/fuzz.txt` and tried first ever after.
fn runner() -> TestRunner {
    let kept = proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/fuzz.txt");
    TestRunner::new(Config { cases: CASES, failure_persistence: Some(Box::new(kept)), ..Config::default() })
}

/// Answers seen, by status: a target that never reached an answer it is
/// meant to check fails, so the budget is not spent on one kind of case.
#[derive(Default)]
struct Seen(std::sync::Mutex<std::collections::BTreeMap<String, u32>>);

impl Seen {
    fn saw(&self, what: impl ToString) {
        *self.0.lock().unwrap().entry(what.to_string()).or_default() += 1;
    }

    fn expect(&self, target: &str, wanted: &[&str]) {
        let seen = self.0.lock().unwrap();
        eprintln!("{target}: {CASES} cases, answers {seen:?}");
        for want in wanted {
            assert!(seen.contains_key(*want), "{target}: no case was answered {want}: {seen:?}");
        }
    }
}

/// An error answer is the API's JSON shape, with a code.
fn is_json_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["error"].is_string() && v["code"].is_string())
}

fn percent_encoded(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn fuzzed_names_get_documented_answers_and_refused_writes_store_nothing() {
    let node = Node::new();
    let names = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "\\PC{1,30}".prop_map(String::into_bytes),
        Just(b"..".to_vec()),
        proptest::collection::vec(any::<u8>(), 250..260),
    ];
    let methods = prop_oneof![Just(Method::PUT), Just(Method::GET), Just(Method::HEAD), Just(Method::DELETE)];
    let seen = Seen::default();
    runner()
        .run(&(names, methods), |(name, method)| {
            let uri = format!("/files/{}", percent_encoded(&name));
            let before = node.names();
            let body = if method == Method::PUT { Body::from("fuzz") } else { Body::empty() };
            let (status, _, answer) =
                node.call(Request::builder().method(method.clone()).uri(&uri).body(body).unwrap());
            seen.saw(status.as_u16());
            let documented = [200, 201, 400, 404, 409];
            prop_assert!(documented.contains(&status.as_u16()), "{method} {uri}: {status}");
            if status.is_client_error() && method != Method::HEAD {
                prop_assert!(is_json_error(&answer), "{method} {uri}: {}", String::from_utf8_lossy(&answer));
            }
            let after = node.names();
            if status == StatusCode::CREATED {
                let stored = String::from_utf8(name).unwrap();
                prop_assert!(after.contains(&stored) && after.len() == before.len() + 1);
            } else if method == Method::PUT {
                prop_assert_eq!(&after, &before, "a refused upload stores nothing");
            }
            Ok(())
        })
        .unwrap();
    seen.expect("names", &["201", "400", "404"]);
}

#[test]
fn fuzzed_ranges_and_conditions_answer_the_right_bytes_or_a_documented_refusal() {
    let node = Node::new();
    let data = pattern(3, 300_000);
    let (status, _, _) = node.call(Request::put("/files/ranged").body(Body::from(data.clone())).unwrap());
    assert_eq!(status, StatusCode::CREATED);
    let etag = format!("\"{}\"", blake3::hash(&data).to_hex());
    let header_text = prop_oneof!["\\PC{0,30}", "bytes=[0-9,=-]{0,20}", "bytes=[0-9]{1,7}-[0-9]{0,7}"];
    let tags = prop_oneof![Just(None), Just(Some(etag.clone())), "\\PC{0,20}".prop_map(Some)];
    let seen = Seen::default();
    runner()
        .run(&(header_text, tags.clone(), tags.clone(), tags), |(range, if_range, if_none_match, if_match)| {
            let mut request = Request::get("/files/ranged");
            for (name, value) in [
                (header::RANGE, Some(range.clone())),
                (header::IF_RANGE, if_range),
                (header::IF_NONE_MATCH, if_none_match),
                (header::IF_MATCH, if_match),
            ] {
                if let Some(value) = value.filter(|v| header::HeaderValue::from_str(v).is_ok()) {
                    request = request.header(name, value);
                }
            }
            let (status, headers, body) = node.call(request.body(Body::empty()).unwrap());
            seen.saw(status.as_u16());
            match status.as_u16() {
                200 => prop_assert!(body == data),
                206 => {
                    let span = headers[header::CONTENT_RANGE].to_str().unwrap().to_owned();
                    let (span, total) = span.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
                    let (start, end) = span.split_once('-').unwrap();
                    let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
                    prop_assert_eq!(total, data.len().to_string());
                    prop_assert!(start <= end && end < data.len(), "{range}: {span}");
                    prop_assert!(body[..] == data[start..=end], "{range}: the bytes of {span}");
                }
                304 => prop_assert!(body.is_empty()),
                412 | 416 => prop_assert!(is_json_error(&body)),
                other => prop_assert!(false, "{range}: {other}"),
            }
            Ok(())
        })
        .unwrap();
    seen.expect("ranges", &["200", "206", "304", "412", "416"]);
}

/// A multipart body of fuzzed parts: headers and content of any kind,
/// sometimes cut short or with another boundary.
fn multipart() -> impl Strategy<Value = (String, Vec<u8>)> {
    let part = (
        prop_oneof![3 => Just("file".to_owned()), 1 => Just("node_address".to_owned()), 1 => "\\PC{0,8}"],
        proptest::option::of(
            prop_oneof![3 => Just("a.txt".to_owned()), 1 => Just("../up".to_owned()), 1 => "\\PC{0,12}"],
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
        prop_oneof![3 => Just(String::new()), 1 => "content-type: [a-z/]{1,12}\r\n", 1 => "\\PC{0,20}\r\n"],
    );
    let boundary = prop_oneof![Just("XyZ".to_owned()), "[a-zA-Z0-9]{1,20}"];
    let cut_it = proptest::bool::weighted(0.2);
    (boundary, proptest::collection::vec(part, 0..4), proptest::bool::weighted(0.8), 0usize..400, cut_it).prop_map(
        |(boundary, parts, close, cut, cut_it)| {
            let mut body = Vec::new();
            for (field, filename, content, extra) in parts {
                body.extend_from_slice(
                    format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{field}\"").as_bytes(),
                );
                if let Some(filename) = filename {
                    body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
                }
                body.extend_from_slice(format!("\r\n{extra}\r\n").as_bytes());
                body.extend_from_slice(&content);
                body.extend_from_slice(b"\r\n");
            }
            if close {
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
            if cut_it {
                body.truncate(cut.min(body.len()));
            }
            (boundary, body)
        },
    )
}

#[test]
fn fuzzed_multipart_uploads_are_taken_whole_or_refused_with_nothing_stored() {
    let node = Node::new();
    let declared = prop_oneof![4 => Just(None), 1 => "[a-zA-Z0-9]{1,20}".prop_map(Some)];
    let seen = Seen::default();
    runner()
        .run(&(multipart(), declared), |((boundary, body), declared)| {
            let before = node.names();
            let boundary = declared.unwrap_or(boundary);
            let request = Request::post("/upload/")
                .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
                .body(Body::from(body))
                .unwrap();
            let (status, _, answer) = node.call(request);
            seen.saw(status.as_u16());
            let after = node.names();
            match status.as_u16() {
                200 => {
                    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                    prop_assert!(after.contains(&v["filename"].as_str().unwrap().to_owned()));
                }
                400 | 409 | 413 | 415 | 422 => {
                    prop_assert!(is_json_error(&answer), "{status}: {}", String::from_utf8_lossy(&answer));
                    prop_assert_eq!(&after, &before, "a refused upload stores nothing");
                }
                other => prop_assert!(false, "{other}: {}", String::from_utf8_lossy(&answer)),
            }
            Ok(())
        })
        .unwrap();
    seen.expect("multipart", &["200", "400"]);
}

/// The contracts of `proto/`, generated by this crate's build script.
mod wire {
    pub mod chord {
        tonic::include_proto!("ringshare.chord.v1");
    }
    pub mod files {
        tonic::include_proto!("ringshare.files.v1");
    }
}

/// Messages of `method`'s type that decode, with fields of any value:
/// names of any kind, addresses, ids, offsets, lengths and copy counts.
fn well_formed(method: &str) -> BoxedStrategy<Vec<u8>> {
    use prost::Message;
    use wire::{chord, files};
    let name = prop_oneof!["\\PC{0,16}", Just("..".to_owned()), Just("ranged".to_owned()), ".{250,260}"];
    let addr = prop_oneof!["\\PC{0,24}", Just("127.0.0.1:1".to_owned())];
    match method.rsplit('/').next().unwrap_or_default() {
        "Stat" => name.prop_map(|name| files::StatRequest { name }.encode_to_vec()).boxed(),
        "Fetch" => (name, any::<u64>(), any::<u64>(), any::<bool>())
            .prop_map(|(name, offset, length, without_outboard)| {
                files::FetchRequest { name, offset, length, without_outboard }.encode_to_vec()
            })
            .boxed(),
        "Delete" => (name, any::<u64>(), any::<u32>())
            .prop_map(|(name, deleted_ns, replicas)| {
                files::DeleteRequest { name, deleted_ns, replicas }.encode_to_vec()
            })
            .boxed(),
        "Store" => (name, any::<bool>(), 0u32..40, any::<u64>())
            .prop_map(|(name, overwrite, replicas, version_ns)| {
                let header = files::StoreHeader { name, overwrite, replicas, version_ns, ..Default::default() };
                files::StoreRequest { part: Some(files::store_request::Part::Header(header)) }.encode_to_vec()
            })
            .boxed(),
        "Digests" => (proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5), 0u32..300)
            .prop_map(|(ranges, parts)| {
                let ranges = ranges.into_iter().map(|(from, to)| files::KeyRange { from, to }).collect();
                files::DigestsRequest { ranges, parts }.encode_to_vec()
            })
            .boxed(),
        "Entries" => proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5)
            .prop_map(|ranges| {
                let ranges = ranges.into_iter().map(|(from, to)| files::KeyRange { from, to }).collect();
                files::EntriesRequest { ranges }.encode_to_vec()
            })
            .boxed(),
        "FindSuccessor" => any::<u64>().prop_map(|key| chord::FindSuccessorRequest { key }.encode_to_vec()).boxed(),
        "Notify" => (any::<u64>(), addr).prop_map(|(id, addr)| chord::Node { id, addr }.encode_to_vec()).boxed(),
        "Leave" => (any::<u64>(), addr)
            .prop_map(|(id, addr)| {
                chord::LeaveRequest { leaver: Some(chord::Node { id, addr }), neighbours: None }.encode_to_vec()
            })
            .boxed(),
        "Merge" => (any::<u64>(), addr.clone(), any::<u64>(), addr, any::<u32>())
            .prop_map(|(pred_id, pred_addr, succ_id, succ_addr, hops)| {
                let pred = Some(chord::Node { id: pred_id, addr: pred_addr });
                let succ = Some(chord::Node { id: succ_id, addr: succ_addr });
                chord::MergeRequest { pred, succ, hops }.encode_to_vec()
            })
            .boxed(),
        _ => Just(Vec::new()).boxed(),
    }
}

#[test]
fn fuzzed_rpc_messages_get_a_grpc_answer_and_the_node_serves_on() {
    let node = Node::new();
    const METHODS: [&str; 16] = [
        "/ringshare.chord.v1.Chord/FindSuccessor",
        "/ringshare.chord.v1.Chord/GetPredecessor",
        "/ringshare.chord.v1.Chord/GetSuccessorList",
        "/ringshare.chord.v1.Chord/GetNeighbours",
        "/ringshare.chord.v1.Chord/Notify",
        "/ringshare.chord.v1.Chord/Ping",
        "/ringshare.chord.v1.Chord/Leave",
        "/ringshare.chord.v1.Chord/Merge",
        "/ringshare.chord.v1.Chord/Time",
        "/ringshare.files.v1.Files/Store",
        "/ringshare.files.v1.Files/Fetch",
        "/ringshare.files.v1.Files/List",
        "/ringshare.files.v1.Files/Stat",
        "/ringshare.files.v1.Files/Delete",
        "/ringshare.files.v1.Files/Digests",
        "/ringshare.files.v1.Files/Entries",
    ];
    // Each method gets messages of its own type three times in four, and
    // any bytes otherwise.
    let cases = proptest::sample::select(&METHODS[..]).prop_flat_map(|method| {
        let message = prop_oneof![1 => proptest::collection::vec(any::<u8>(), 0..120), 3 => well_formed(method)];
        (Just(method), proptest::collection::vec((message, proptest::bool::weighted(0.1)), 1..3))
    });
    let seen = Seen::default();
    runner()
        .run(&cases, |(method, frames)| {
            // gRPC framing: a flag byte, a 4-byte length, the message; the
            // length is sometimes a lie.
            let mut body = Vec::new();
            for (message, lie) in &frames {
                let length = if *lie { message.len() as u32 + 7 } else { message.len() as u32 };
                body.push(0);
                body.extend_from_slice(&length.to_be_bytes());
                body.extend_from_slice(message);
            }
            let request = Request::post(method)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("te", "trailers")
                .body(Body::from(body))
                .unwrap();
            let answer = node.rt.block_on(async {
                let response = node.app.clone().oneshot(request).await.unwrap();
                let head = response.headers().clone();
                let trailers = response.into_body().collect().await.ok().and_then(|c| c.trailers().cloned());
                let field = |name: &str| {
                    let value = head.get(name).or_else(|| trailers.as_ref().and_then(|t| t.get(name)));
                    value.map(|v| v.to_str().unwrap_or("?").to_owned())
                };
                field("grpc-status").map(|status| (status, field("grpc-message").unwrap_or_default()))
            });
            let Some((status, message)) = answer else {
                return Err(TestCaseError::fail(format!("{method}: no grpc-status")));
            };
            // An internal error is only a message that does not decode, a
            // frame cut short, or framing tonic refuses (a length that lies
            // can make the next frame's bytes a compressed flag): tonic's
            // own answers. Anything that decodes is answered or refused for
            // what it is.
            let tonic_own = ["decode", "Decode", "Missing%20request%20message", "Unexpected%20EOF", "protocol%20error"];
            let undecodable = tonic_own.iter().any(|m| message.contains(m));
            prop_assert!(status != "13" || undecodable, "{method}: internal error {message:?}");
            seen.saw(format!("grpc-{status}"));
            Ok(())
        })
        .unwrap();
    // Answered (0), refused as bad input (3), not found (5), undecodable (13).
    seen.expect("rpc", &["grpc-0", "grpc-3", "grpc-5", "grpc-13"]);
    let (status, _, _) = node.call(Request::get("/ring").body(Body::empty()).unwrap());
    assert_eq!(status, StatusCode::OK, "the node serves on");
}
