//! The REST API of one node with the default plugins: upload, list,
//! download, ranges, conflicts, limits, bad names, the legacy aliases.

use reqwest::StatusCode;
use reqwest::header;
use ringshare_tests::{NodeSetup, TestNode, blake3_hex, client, eventually, pattern, raw_request, sum_of};
use serde_json::Value;

async fn error_code(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    (status, body["code"].as_str().unwrap_or_default().into(), body["error"].as_str().unwrap_or_default().into())
}

#[tokio::test]
async fn upload_list_download_round_trip() {
    let node = TestNode::start().await;
    let http = client();
    let data = pattern(1, 3 * 1024 * 1024 + 17);

    let put = http.put(node.at("/files/report%20v1.bin")).body(data.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(put.headers()[header::LOCATION], "/files/report%20v1.bin");
    let entry: Value = put.json().await.unwrap();
    assert_eq!(entry["name"], "report v1.bin");
    assert_eq!(entry["size"], data.len() as u64);
    assert_eq!(entry["blake3"], blake3_hex(&data));

    let list: Value = http.get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "report v1.bin");
    assert_eq!(list[0]["blake3"], blake3_hex(&data));

    let get = http.get(node.at("/files/report%20v1.bin")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()[header::ETAG], format!("\"{}\"", blake3_hex(&data)));
    assert_eq!(get.headers()[header::CONTENT_LENGTH], data.len().to_string());
    assert_eq!(get.bytes().await.unwrap(), data);

    // Nothing but the file itself is visible in the store.
    assert!(node.temp_files().is_empty());
    let stored = std::fs::read(node.data().join("files/report v1.bin")).unwrap();
    assert_eq!(stored, data);
}

#[tokio::test]
async fn empty_file_round_trip() {
    let node = TestNode::start().await;
    let http = client();
    let put = http.put(node.at("/files/empty")).body(Vec::new()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let get = http.get(node.at("/files/empty")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()[header::ETAG], format!("\"{}\"", blake3_hex(b"")));
    assert!(get.bytes().await.unwrap().is_empty());
    let ranged = http.get(node.at("/files/empty")).header(header::RANGE, "bytes=0-").send().await.unwrap();
    assert_eq!(ranged.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn existing_files_conflict_unless_overwrite() {
    let node = TestNode::start().await;
    let http = client();
    let first = http.put(node.at("/files/a")).body("first").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);

    let again = http.put(node.at("/files/a")).body("second").send().await.unwrap();
    let (status, code, error) = error_code(again).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code, "already-exists");
    assert!(error.contains("upload.wasm"), "{error}");
    assert_eq!(http.get(node.at("/files/a")).send().await.unwrap().text().await.unwrap(), "first");

    let replaced = http.put(node.at("/files/a?overwrite=true")).body("second").send().await.unwrap();
    assert_eq!(replaced.status(), StatusCode::CREATED);
    let get = http.get(node.at("/files/a")).send().await.unwrap();
    assert_eq!(get.headers()[header::ETAG], format!("\"{}\"", blake3_hex(b"second")));
    assert_eq!(get.text().await.unwrap(), "second");

    let bad = http.put(node.at("/files/a?overwrite=perhaps")).body("x").send().await.unwrap();
    let (status, code, _) = error_code(bad).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "bad-query"));
    assert!(node.temp_files().is_empty());
}

#[tokio::test]
async fn ranges_head_and_conditional_requests() {
    let node = TestNode::start().await;
    let http = client();
    let data = pattern(2, 200_000);
    http.put(node.at("/files/r")).body(data.clone()).send().await.unwrap().error_for_status().unwrap();
    let url = node.at("/files/r");

    for (range, expected, content_range) in [
        ("bytes=0-9", &data[0..10], "bytes 0-9/200000"),
        ("bytes=100000-", &data[100_000..], "bytes 100000-199999/200000"),
        ("bytes=-5", &data[199_995..], "bytes 199995-199999/200000"),
        ("bytes=65530-65545", &data[65_530..65_546], "bytes 65530-65545/200000"),
    ] {
        let response = http.get(&url).header(header::RANGE, range).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(response.headers()[header::CONTENT_RANGE], content_range);
        assert_eq!(response.headers()[header::CONTENT_LENGTH], expected.len().to_string());
        assert_eq!(response.bytes().await.unwrap(), expected, "{range}");
    }

    // A stale If-Range gets the whole file.
    let stale =
        http.get(&url).header(header::RANGE, "bytes=0-9").header(header::IF_RANGE, "\"old\"").send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap().len(), data.len());

    // What a HEAD, a 304 and a 416 answer is known before any byte is read:
    // none of them opens the file through the download plugin.
    let opened =
        || async { sum_of(&metrics(&node).await, "ringshare_plugin_call_seconds_count", &["kind=\"download\""]) };
    let before = opened().await;
    let outside = http.get(&url).header(header::RANGE, "bytes=200000-").send().await.unwrap();
    assert_eq!(outside.headers()[header::CONTENT_RANGE], "bytes */200000");
    let (status, code, _) = error_code(outside).await;
    assert_eq!((status, code.as_str()), (StatusCode::RANGE_NOT_SATISFIABLE, "range-not-satisfiable"));

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "200000");
    assert_eq!(head.headers()[header::ETAG], format!("\"{}\"", blake3_hex(&data)));
    assert!(head.bytes().await.unwrap().is_empty());

    let etag = format!("\"{}\"", blake3_hex(&data));
    let cached = http.get(&url).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    for other in ["\"0000\"".to_owned(), "W/\"x\"".to_owned(), format!("W/{etag}")] {
        let stale = http.get(&url).header(header::IF_MATCH, &other).send().await.unwrap();
        assert_eq!(stale.headers()[header::ETAG], etag.as_str(), "{other}");
        let (status, code, _) = error_code(stale).await;
        assert_eq!((status, code.as_str()), (StatusCode::PRECONDITION_FAILED, "precondition-failed"), "{other}");
    }
    let after = opened().await;
    assert_eq!(after, before, "HEAD, 304, 412 and 416 called the download plugin");
    for current in [etag.clone(), "*".to_owned(), format!("\"0000\", {etag}")] {
        let head = http.head(&url).header(header::IF_MATCH, &current).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{current}");
    }
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert!(opened().await > after, "a GET reads through the download plugin");
}

/// A small file's reads are answered from memory once it was written or
/// read here, and only ever with the version the store holds now: an
/// overwrite, a change made by hand in the store and a deletion are each
/// seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_read_from_memory_and_only_as_the_store_has_them() {
    // No repair pass: its scrub reads copies through the download plugin.
    let quiet = NodeSetup { repair_every: std::time::Duration::from_secs(3600), ..NodeSetup::default() };
    let node = quiet.start().await;
    let http = client();
    let url = node.at("/files/small.txt");
    let counts = || async {
        let text = metrics(&node).await;
        let calls = sum_of(&text, "ringshare_plugin_call_seconds_count", &["kind=\"download\""]);
        (calls, sum_of(&text, "ringshare_read_cache_hits_total", &[]))
    };
    let first = pattern(31, 3000);
    http.put(&url).body(first.clone()).send().await.unwrap().error_for_status().unwrap();
    let before = counts().await;
    assert_eq!(http.get(&url).send().await.unwrap().bytes().await.unwrap(), first);
    let ranged = http.get(&url).header(header::RANGE, "bytes=100-199").send().await.unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().await.unwrap(), &first[100..200]);
    let after = counts().await;
    assert_eq!(after.0, before.0, "a small file just written was read through the download plugin");
    assert_eq!(after.1 - before.1, 2.0, "two reads answered from memory");

    // Overwritten: the new version, never the one kept.
    let second = pattern(32, 2000);
    let put = http.put(node.at("/files/small.txt?overwrite=true")).body(second.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(http.get(&url).send().await.unwrap().bytes().await.unwrap(), second);

    // Replaced by hand in the store: what the store has now.
    let by_hand = pattern(33, 1000);
    let path = node.data().join("files/small.txt");
    let temp = node.data().join("small.txt.partial");
    std::fs::write(&temp, &by_hand).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    eventually("the change made by hand is served", || async {
        let got = http.get(&url).send().await.unwrap().bytes().await.unwrap();
        if got == by_hand {
            Ok(())
        } else {
            Err(format!("{} bytes, not the {} written by hand", got.len(), by_hand.len()))
        }
    })
    .await;

    // Deleted: gone, though its bytes may still be kept.
    http.delete(&url).send().await.unwrap().error_for_status().unwrap();
    assert_eq!(http.get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

/// A small upload is made durable in the node's journal before the plugin
/// commits it, and its commit reaches the disk with a checkpoint about a
/// second later. What a crash left in the journal is written again when
/// the node starts, before it serves, unless the node has a newer version
/// or a deletion of the name since: a lost or damaged commit gives way to
/// what was acknowledged, and nothing deleted or replaced comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_crash_left_in_the_journal_are_written_again_unless_superseded() {
    use ringshare::integrity::Digest;
    use ringshare::store::journal::{Journal, Journaled};
    use ringshare::store::sync::GroupSync;
    let node = TestNode::start().await;
    let http = client();
    let put = |name: &'static str, body: Vec<u8>| {
        let (http, url) = (http.clone(), node.at(&format!("/files/{name}")));
        async move {
            let put = http.put(url).body(body).send().await.unwrap().error_for_status().unwrap();
            put.json::<Value>().await.unwrap()["modified_ns"].as_u64().unwrap()
        }
    };
    let kept = put("kept.txt", b"the newer version".to_vec()).await;
    let gone = put("gone.txt", b"deleted since".to_vec()).await;
    http.delete(node.at("/files/gone.txt")).send().await.unwrap().error_for_status().unwrap();
    let torn_content = pattern(41, 5000);
    let torn = put("torn.txt", torn_content.clone()).await;
    let folder = node.crash();

    // What a crash can leave of commits that had not reached the disk:
    // torn.txt's bytes lost (zeros), lost.txt not there at all.
    let store = folder.path().join("data/store");
    std::fs::write(store.join("files/torn.txt"), vec![0u8; torn_content.len()]).unwrap();
    let journaled = |name: &str, version_ns: u64, content: &[u8]| Journaled {
        name: name.into(),
        overwrite: true,
        version_ns,
        blake3: Digest(*blake3::hash(content).as_bytes()),
        content: content.to_vec().into(),
    };
    let lost_content = pattern(42, 3000);
    let journal_of = |folder: &std::path::Path| {
        let sync = std::sync::Arc::new(GroupSync::open(&[folder]).unwrap());
        Journal::open(&folder.join("data/node/journal"), sync).expect("the crashed node's journal")
    };
    {
        let (journal, _) = journal_of(folder.path());
        for write in [
            journaled("lost.txt", torn + 1, &lost_content),
            journaled("kept.txt", kept - 1, b"an older version"),
            journaled("gone.txt", gone, b"deleted since"),
            journaled("torn.txt", torn, &torn_content),
        ] {
            drop(journal.write(&write).unwrap());
        }
        journal.write(&journaled("voided.txt", torn + 2, b"refused by the plugin")).unwrap().void();
    }

    let node = NodeSetup::default().start_in(folder).await;
    let get = |name: &str| {
        let (http, url) = (http.clone(), node.at(&format!("/files/{name}")));
        async move {
            let got = http.get(url).send().await.unwrap();
            (got.status(), got.bytes().await.unwrap().to_vec())
        }
    };
    assert_eq!(get("lost.txt").await, (StatusCode::OK, lost_content), "a lost commit is written again");
    assert_eq!(get("torn.txt").await, (StatusCode::OK, torn_content), "a damaged commit is written again");
    assert_eq!(get("kept.txt").await, (StatusCode::OK, b"the newer version".to_vec()), "an older write came back");
    assert_eq!(get("gone.txt").await.0, StatusCode::NOT_FOUND, "a deleted file came back");
    assert_eq!(get("voided.txt").await.0, StatusCode::NOT_FOUND, "a voided write was replayed");
    let list: Value = http.get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    let lost = list.as_array().unwrap().iter().find(|e| e["name"] == "lost.txt").expect("lost.txt listed");
    assert_eq!(lost["modified_ns"], torn + 1, "replayed at its own version");

    // Written again and synced, the journal is cleared: a second start
    // after a crash finds nothing in it.
    let folder = node.crash();
    let (_, left) = journal_of(folder.path());
    assert!(left.iter().all(|w| w.name != "lost.txt"), "the replayed writes are still in the journal");
}

#[tokio::test]
async fn missing_files_are_404_json() {
    let node = TestNode::start().await;
    let (status, code, error) = error_code(client().get(node.at("/files/nothing")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "not-found"));
    assert!(error.contains("nothing"), "{error}");
    let head = client().head(node.at("/files/nothing")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hostile_names_are_refused_and_create_nothing() {
    let node = TestNode::start().await;
    let long = "a".repeat(256);
    let names = [
        "..",
        "%2E%2E",
        "%2e",
        "a%2Fb",
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2Fescape",
        "a%5Cb",
        "..%5C..%5Cwin",
        "nul%00byte",
        "line%0Abreak",
        "tab%09",
        "del%7F",
        long.as_str(),
        "%FF%FE",
    ];
    for name in names {
        for method in ["PUT", "GET"] {
            let (status, body) = raw_request(&node, method, &format!("/files/{name}"), b"evil").await;
            assert_eq!(status, 400, "{method} {name}: {}", String::from_utf8_lossy(&body));
            let body: Value = serde_json::from_slice(&body).expect("JSON error");
            assert_eq!(body["code"], "invalid-name", "{method} {name}");
        }
    }
    let list: Value = client().get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, serde_json::json!([]));
    assert!(std::fs::read_dir(node.data().join("files")).unwrap().next().is_none());
    assert!(node.temp_files().is_empty());
    assert!(!node.root().join("escape").exists());
}

#[tokio::test]
async fn uploads_over_the_limit_are_413_and_leave_nothing() {
    let node = NodeSetup { max_upload_bytes: 100_000, ..NodeSetup::default() }.start().await;
    let http = client();

    // Declared too large: refused before any byte is read.
    let declared = http.put(node.at("/files/big")).body(pattern(3, 100_001)).send().await.unwrap();
    let (status, code, _) = error_code(declared).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too-large"));

    // Undeclared (chunked) and too large: refused once the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|i| Ok(pattern(i, 20_000))).collect();
    let streamed = http
        .put(node.at("/files/big"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    // The rest of the body is not read: the client is told not to reuse the connection.
    assert_eq!(streamed.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let (status, code, _) = error_code(streamed).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too-large"));

    let exact = http.put(node.at("/files/fits")).body(pattern(4, 100_000)).send().await.unwrap();
    assert_eq!(exact.status(), StatusCode::CREATED);

    let list: Value = http.get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fits"]);
    assert!(node.temp_files().is_empty(), "{:?}", node.temp_files());
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing_visible() {
    use tokio::io::AsyncWriteExt;
    let node = TestNode::start().await;
    let addr = node.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("PUT /files/partial HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000000\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&pattern(5, 300_000)).await.unwrap();
    socket.flush().await.unwrap();

    // Wait (bounded) until the node has the upload in progress, then cut it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while node.temp_files().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the upload never started");
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(socket);

    // The temp file goes once the node notices the connection is gone.
    while !node.temp_files().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "temp file left behind: {:?}", node.temp_files());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let list: Value = client().get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, serde_json::json!([]));
    let get = client().get(node.at("/files/partial")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn legacy_routes_still_work() {
    let node = TestNode::start().await;
    let http = client();
    let data = pattern(6, 70_000);
    let form = reqwest::multipart::Form::new()
        .text("note", "ignored")
        .part("file", reqwest::multipart::Part::bytes(data.clone()).file_name("old.txt"));
    let upload = http.post(node.at("/upload/")).multipart(form).send().await.unwrap();
    assert_eq!(upload.status(), StatusCode::OK);
    let reply: Value = upload.json().await.unwrap();
    assert_eq!(reply["filename"], "old.txt");
    assert!(reply["message"].as_str().unwrap().contains("uploaded"));

    let index: Value = http.get(node.at("/index")).send().await.unwrap().json().await.unwrap();
    assert_eq!(index, serde_json::json!({"files": [{"filename": "old.txt", "path": "/download/old.txt"}]}));

    let download = http.get(node.at("/download/old.txt")).send().await.unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.bytes().await.unwrap(), data);

    // The original system replaced files of the same name.
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"v2".to_vec()).file_name("old.txt"));
    http.post(node.at("/upload/")).multipart(form).send().await.unwrap().error_for_status().unwrap();
    assert_eq!(http.get(node.at("/download/old.txt")).send().await.unwrap().text().await.unwrap(), "v2");

    // Bad forms get JSON errors.
    let no_file = reqwest::multipart::Form::new().text("file", "not a file part");
    let (status, code, _) = error_code(http.post(node.at("/upload/")).multipart(no_file).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "bad-multipart"));
    let evil =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(b"x".to_vec()).file_name(".."));
    let (status, code, _) = error_code(http.post(node.at("/upload/")).multipart(evil).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "invalid-name"));
    let not_multipart = http.post(node.at("/upload/")).body("plain").send().await.unwrap();
    let (status, code, _) = error_code(not_multipart).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "bad-multipart"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let node = TestNode::start().await;
    let (status, code, _) = error_code(client().get(node.at("/nope")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "no-route"));
    let (status, code, _) = error_code(client().delete(node.at("/files")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"));
}

#[tokio::test]
async fn concurrent_uploads_and_downloads() {
    let node = TestNode::start().await;
    let http = client();
    let uploads = (0..8u64).map(|i| {
        let (http, url) = (http.clone(), node.at(&format!("/files/f{i}")));
        async move { http.put(url).body(pattern(i + 10, 500_000)).send().await.unwrap().status() }
    });
    for status in futures_util::future::join_all(uploads).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    let downloads = (0..8u64).map(|i| {
        let (http, url) = (http.clone(), node.at(&format!("/files/f{i}")));
        async move { http.get(url).send().await.unwrap().bytes().await.unwrap() }
    });
    for (i, body) in futures_util::future::join_all(downloads).await.into_iter().enumerate() {
        assert_eq!(body, pattern(i as u64 + 10, 500_000));
    }
}

#[tokio::test]
async fn the_listing_follows_every_change_to_the_store() {
    let node = TestNode::start().await;
    let http = client();
    let names = |listing: Vec<serde_json::Value>| -> Vec<(String, Option<String>)> {
        listing.iter().map(|e| (e["name"].as_str().unwrap().to_owned(), e["blake3"].as_str().map(Into::into))).collect()
    };
    let list = || async { names(http.get(node.at("/files")).send().await.unwrap().json().await.unwrap()) };
    assert!(list().await.is_empty());

    // Writes and deletes through the node show at once (the same listing is
    // asked twice to go through the cache).
    http.put(node.at("/files/a")).body("one").send().await.unwrap().error_for_status().unwrap();
    for _ in 0..2 {
        assert_eq!(list().await, [("a".to_owned(), Some(blake3_hex(b"one")))]);
    }
    http.put(node.at("/files/a?overwrite=true")).body("two").send().await.unwrap().error_for_status().unwrap();
    assert_eq!(list().await, [("a".to_owned(), Some(blake3_hex(b"two")))]);
    http.delete(node.at("/files/a")).send().await.unwrap().error_for_status().unwrap();
    assert!(list().await.is_empty());
    // Its tombstone is kept where no plugin reaches.
    assert!(node.state().join("deleted/a").is_file() && !node.data().join("deleted").exists());

    // Changes made by hand in the store folder show too, once the watch
    // has seen them.
    std::fs::write(node.data().join("files/by-hand"), b"hand").unwrap();
    ringshare_tests::eventually("a file copied in by hand was never listed", || async {
        match list().await.as_slice() {
            [(name, None)] if name == "by-hand" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Read once, it is hashed and recorded.
    assert_eq!(http.get(node.at("/files/by-hand")).send().await.unwrap().bytes().await.unwrap(), "hand");
    assert_eq!(list().await, [("by-hand".to_owned(), Some(blake3_hex(b"hand")))]);
    std::fs::remove_file(node.data().join("files/by-hand")).unwrap();
    ringshare_tests::eventually("a file removed by hand stayed listed", || async {
        let now = list().await;
        if now.is_empty() { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await;
}

/// `GET /metrics`: every line is a sample or a comment of the text format.
async fn metrics(node: &TestNode) -> String {
    let answer = client().get(node.at("/metrics")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = answer.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        assert!(value.parse::<f64>().is_ok(), "not a number in {line}");
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name in {line}");
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line}");
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_requests_plugin_calls_lookups_and_copies() {
    let nodes = ringshare_tests::start_ring(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let before = [metrics(a).await, metrics(b).await];
    let data = pattern(3, 100_000);
    ringshare_tests::put(a, "counted", &data).await;
    let got = client().get(a.at("/files/counted")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
    client().get(a.at("/lookup/counted")).send().await.unwrap().error_for_status().unwrap();
    let after = [metrics(a).await, metrics(b).await];

    let moved = |name: &str, labels: &[&str]| sum_of(&after[0], name, labels) - sum_of(&before[0], name, labels);
    let put = ["method=\"PUT\"", "route=\"/files/{name}\"", "status=\"201\""];
    assert_eq!(moved("ringshare_http_request_seconds_count", &put), 1.0);
    assert_eq!(moved("ringshare_bytes_total", &["direction=\"uploaded\""]), 100_000.0);
    assert_eq!(moved("ringshare_bytes_total", &["direction=\"downloaded\""]), 100_000.0);
    assert!(moved("ringshare_lookup_hops_count", &[]) >= 1.0);
    let upload = ["plugin=\"upload.wasm\"", "outcome=\"ok\""];
    assert!(
        sum_of(&[&after[0], &after[1]].map(|t| t.as_str()).concat(), "ringshare_plugin_call_seconds_count", &upload)
            >= 2.0
    );
    // A copy crossed over gRPC (and the upload too, if the other node is
    // the responsible one), framing included; and both nodes talk.
    let replicated = |i: usize| sum_of(&after[i], "ringshare_bytes_total", &["direction=\"replicated\""]);
    let sent = replicated(0) + replicated(1);
    assert!((100_000.0..=201_024.0).contains(&sent), "one or two transfers of 100,000 bytes, not {sent}");
    for text in &after {
        assert!(sum_of(text, "ringshare_rpc_seconds_count", &[]) >= 1.0, "{text}");
        assert_eq!(sum_of(text, "ringshare_ring_nodes", &[]), 2.0, "{text}");
    }
}

/// Requests that miss the listing together share one attempt, a failed one
/// too: four listings through a plugin that never answers cost one deadline,
/// and the metrics count one timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_one_failed_listing_and_the_timeout_is_counted() {
    let setup = NodeSetup {
        repair_every: std::time::Duration::from_secs(3600),
        repair_on_departure: false,
        ..NodeSetup::with_plugins(&["testdata/spin", "default/upload", "default/download"])
    };
    let node = setup.start().await;
    let asks = (0..4).map(|_| async { client().get(node.at("/files")).send().await.unwrap().status() });
    let statuses = futures_util::future::join_all(asks).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::INTERNAL_SERVER_ERROR), "{statuses:?}");
    let text = metrics(&node).await;
    let timeouts = ["plugin=\"spin.wasm\"", "outcome=\"timeout\""];
    assert_eq!(sum_of(&text, "ringshare_plugin_call_seconds_count", &timeouts), 1.0, "{text}");
    let errors = ["route=\"/files\"", "status=\"500\""];
    assert_eq!(sum_of(&text, "ringshare_http_request_seconds_count", &errors), 4.0, "{text}");
}

/// `GET /openapi.json` is an OpenAPI 3 document, and its operations are
/// exactly what the router serves: each documented one is answered by a
/// route (not the "no such route" fallback), every other method on a
/// documented path is 405, and paths outside it are not routes.
#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let node = TestNode::start().await;
    let http = client();
    let doc: Value = http.get(node.at("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["info"]["title"].is_string() && doc["components"]["schemas"]["Error"].is_object(), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let fallback =
        |status: StatusCode, body: &Value| status == StatusCode::NOT_FOUND && body["error"] == "no such route";
    let mut operations = 0;
    for (path, ops) in paths {
        let concrete =
            path.replace("{route}", "no-such-plugin").replace("{path}", "deeper/path").replace(['{', '}'], "");
        let documented: Vec<String> = ops.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let request = http.request(method.parse().unwrap(), node.at(&concrete));
            let answer = request.send().await.unwrap();
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            if documented.iter().any(|m| m == method) {
                operations += 1;
                assert!(!fallback(status, &body), "{method} {path} is documented but not routed");
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but not routed");
                for code in ops[method.to_lowercase()]["responses"].as_object().unwrap().keys() {
                    assert!(code.parse::<u16>().is_ok(), "{method} {path}: response {code}");
                }
            } else if !path.starts_with("/x/") {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is served but not documented");
            }
        }
    }
    assert!(operations >= 22, "{operations} operations documented");
    for path in ["/nope", "/files/a/b", "/ring/x", "/openapi.yaml"] {
        let answer = http.get(node.at(path)).send().await.unwrap();
        let status = answer.status();
        assert!(fallback(status, &answer.json().await.unwrap()), "{path} is routed but not documented");
    }
    // Every documented error answer is the error object.
    let errors = paths.values().flat_map(|ops| ops.as_object().unwrap().values()).flat_map(|op| {
        op["responses"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(code, _)| code.starts_with('4') || code.starts_with('5'))
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>()
    });
    for response in errors {
        let schema = &response["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/Error", "{response}");
    }
}

/// A browser page from elsewhere (or an HTTP plugin's sandboxed page, whose
/// origin is `null`) cannot write through a visitor's browser; the node's
/// own page and clients that are not browsers can.
#[tokio::test]
async fn writes_from_another_origin_are_refused() {
    let node = TestNode::start().await;
    let http = client();
    for origin in ["null", "http://evil.example", "http://127.0.0.1:1"] {
        let put = http.put(node.at("/files/csrf")).header("origin", origin).body("x").send().await.unwrap();
        assert_eq!(put.status(), StatusCode::FORBIDDEN, "{origin}");
        let body: Value = put.json().await.unwrap();
        assert_eq!(body["code"], "cross-origin");
        let delete = http.delete(node.at("/files/csrf")).header("origin", origin).send().await.unwrap();
        assert_eq!(delete.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    assert_eq!(http.get(node.at("/files/csrf")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let own = format!("http://{}", node.addr);
    let put = http.put(node.at("/files/csrf")).header("origin", own).body("x").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let reads = http.get(node.at("/files/csrf")).header("origin", "null").send().await.unwrap();
    assert_eq!(reads.status(), StatusCode::OK, "reads are not writes");
}

/// Plugin contract 0.6.0: the host keeps each file's record, so an upload
/// leaves one file in the store (no `meta/` record beside it), and a node
/// started again serves its files without writing them again. A recorded
/// file found beside the outboard of another version (a crash between the
/// two renames of an overwrite) is hashed again, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_keeps_the_records_and_a_restart_writes_no_file_again() {
    use std::os::unix::fs::MetadataExt;
    let node = TestNode::start().await;
    let http = client();
    // One block (past the journal's 64 KiB: a restart replays nothing), and
    // two of three blocks, with outboards of the same length.
    let (small, big, other) = (pattern(1, 100_000), pattern(4, 700_000), pattern(6, 700_000));
    for (name, body) in [("small", &small), ("big", &big), ("other", &other)] {
        let put = http.put(node.at(&format!("/files/{name}"))).body(body.clone()).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::CREATED, "{name}");
    }
    let beside: Vec<_> = std::fs::read_dir(node.data().join("meta")).unwrap().collect();
    assert!(beside.is_empty(), "records beside the files: {beside:?}");
    assert!(std::fs::metadata(node.state().join("records")).unwrap().len() > 0, "the host's records");
    let inode = |node: &TestNode, name: &str| std::fs::metadata(node.data().join("files").join(name)).unwrap().ino();
    let before = (inode(&node, "small"), inode(&node, "big"));
    std::fs::copy(node.data().join("outboard/other"), node.data().join("outboard/big")).unwrap();

    let node = NodeSetup::default().start_in(node.stop().await).await;
    for (name, body) in [("small", &small), ("big", &big), ("other", &other)] {
        let got = http.get(node.at(&format!("/files/{name}"))).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK, "{name}");
        assert_eq!(blake3_hex(&got.bytes().await.unwrap()), blake3_hex(body), "{name}: byte for byte");
    }
    assert_eq!(inode(&node, "small"), before.0, "served from the host's record, not written again");
    assert_ne!(inode(&node, "big"), before.1, "hashed and written again, with its own outboard");
    let got = http.get(node.at("/files/big")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(blake3_hex(&got), blake3_hex(&big), "and served from then on");
}
