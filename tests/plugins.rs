//! Plugin loading, missing plugins, and hostile plugins: each is stopped and
//! reported while the node keeps serving everything else.

use reqwest::StatusCode;
use ringshare_tests::{NodeSetup, TestNode, client, pattern};
use serde_json::Value;

async fn error_of(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    (status, body["code"].as_str().unwrap_or_default().into(), body["error"].as_str().unwrap_or_default().into())
}

async fn statuses(node: &TestNode) -> Vec<Value> {
    client().get(node.at("/plugins")).send().await.unwrap().json::<Vec<Value>>().await.unwrap()
}

/// The node still lists, uploads and downloads with its working plugins.
async fn assert_still_serves(node: &TestNode, name: &str) {
    let http = client();
    let put = http.put(node.at(&format!("/files/{name}"))).body(pattern(9, 10_000)).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let get = http.get(node.at(&format!("/files/{name}"))).send().await.unwrap();
    assert_eq!(get.bytes().await.unwrap(), pattern(9, 10_000));
}

#[tokio::test]
async fn files_that_are_not_plugins_are_refused_and_the_node_runs_on() {
    let mut setup = NodeSetup::with_plugins(&[
        "default/index",
        "default/upload",
        "default/download",
        "testdata/not-a-plugin",
        "testdata/spin",
    ]);
    setup.extra_files = vec![
        ("garbage.wasm".into(), b"this is not wasm at all".to_vec()),
        // A valid core module (magic + version), not a component.
        ("core-module.wasm".into(), b"\0asm\x01\0\0\0".to_vec()),
        ("notes.txt".into(), b"not even a .wasm file".to_vec()),
    ];
    let node = setup.start().await;
    let statuses = statuses(&node).await;
    let by_file = |file: &str| {
        statuses
            .iter()
            .find(|s| s["file"] == file)
            .cloned()
            .unwrap_or_else(|| panic!("{file} missing from {statuses:?}"))
    };

    for kind in ["index", "upload", "download"] {
        let status = by_file(&format!("{kind}.wasm"));
        assert_eq!(status["loaded"], true, "{status}");
        assert_eq!(status["kind"], kind);
    }
    let garbage = by_file("garbage.wasm");
    assert_eq!(garbage["loaded"], false);
    assert!(garbage["reason"].as_str().unwrap().contains("not a WebAssembly component"), "{garbage}");
    let core = by_file("core-module.wasm");
    assert_eq!(core["loaded"], false);
    assert!(core["reason"].as_str().unwrap().contains("not a WebAssembly component"), "{core}");
    let other_world = by_file("not-a-plugin.wasm");
    assert_eq!(other_world["loaded"], false);
    assert!(other_world["reason"].as_str().unwrap().contains("exports none of the plugin interfaces"), "{other_world}");
    // spin.wasm sorts after index.wasm: a second index plugin.
    let second = by_file("spin.wasm");
    assert_eq!(second["loaded"], false);
    assert_eq!(second["kind"], "index");
    assert!(second["reason"].as_str().unwrap().contains("already loaded from index.wasm"), "{second}");
    assert!(statuses.iter().all(|s| s["file"] != "notes.txt"));

    assert_still_serves(&node, "after-refusals").await;
    let list: Value = client().get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["name"], "after-refusals");
}

#[tokio::test]
async fn missing_plugins_make_their_routes_503_until_restored() {
    let node = NodeSetup::with_plugins(&["default/index"]).start().await;
    let http = client();
    let (status, code, error) = error_of(http.put(node.at("/files/x")).body("x").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "plugin-unavailable"));
    assert!(error.contains("no upload plugin"), "{error}");
    let (status, _, error) = error_of(http.get(node.at("/files/x")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.contains("no download plugin"), "{error}");
    let (status, _, _) = error_of(http.get(node.at("/download/x")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"));
    let (status, _, _) = error_of(http.post(node.at("/upload/")).multipart(form).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The index still answers.
    assert_eq!(http.get(node.at("/files")).send().await.unwrap().status(), StatusCode::OK);

    // Put the plugins back and restart on the same store: served again.
    let dir = node.stop().await;
    let node = NodeSetup::default().start_in(dir).await;
    assert_still_serves(&node, "restored").await;

    // And without an index plugin, listing is 503 while files still download.
    let dir = node.stop().await;
    let node = NodeSetup::with_plugins(&["default/upload", "default/download"]).start_in(dir).await;
    let (status, code, _) = error_of(http.get(node.at("/files")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "plugin-unavailable"));
    let (status, _, _) = error_of(http.get(node.at("/index")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(http.get(node.at("/files/restored")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_deadline() {
    let node = NodeSetup::with_plugins(&["testdata/spin", "default/upload", "default/download"]).start().await;
    for _ in 0..2 {
        let (status, code, error) = error_of(client().get(node.at("/files")).send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-timeout"));
        assert!(error.contains("spin.wasm"), "{error}");
    }
    assert_still_serves(&node, "after-spin").await;
}

#[tokio::test]
async fn a_plugin_asleep_in_the_host_is_stopped_by_the_deadline_too() {
    let node = NodeSetup::with_plugins(&["testdata/sleep", "default/upload", "default/download"]).start().await;
    // It asks for an hour's sleep, again and again: each is cut to what is
    // left of its 2 s call, then the epoch check stops it.
    let http = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(60)).build().unwrap();
    let started = std::time::Instant::now();
    let (status, code, error) = error_of(http.get(node.at("/files")).send().await.expect("an answer")).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-timeout"), "{error}");
    assert!(error.contains("sleep.wasm"), "{error}");
    let took = started.elapsed();
    eprintln!("the sleeping plugin was stopped after {took:?} (deadline 2 s)");
    // Near its 2 s deadline (with room for a slow machine), not at some
    // other bound: the node's default deadline is 30 s.
    assert!(took < std::time::Duration::from_secs(5), "stopped at its deadline, not later: {took:?}");
    // Its thread is free again: nothing is left running in it.
    ringshare_tests::eventually("the stopped call never ended", || async {
        let status: Vec<Value> = client().get(node.at("/plugins")).send().await.unwrap().json().await.unwrap();
        let sleeper = status.iter().find(|s| s["file"] == "sleep.wasm").cloned().unwrap_or_default();
        if sleeper["calls_in_flight"] == 0 { Ok(()) } else { Err(sleeper.to_string()) }
    })
    .await;
    assert_still_serves(&node, "after-sleep").await;
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_by_the_cap() {
    let node = NodeSetup::with_plugins(&["testdata/hog", "default/upload", "default/download"]).start().await;
    let (status, code, error) = error_of(client().get(node.at("/files")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-out-of-memory"));
    assert!(error.contains("hog.wasm"), "{error}");
    assert!(error.contains(&(32u64 << 20).to_string()), "{error}");
    assert_still_serves(&node, "after-hog").await;
}

#[tokio::test]
async fn a_trapping_plugin_is_reported_with_its_panic() {
    let node = NodeSetup::with_plugins(&["default/index", "default/upload", "testdata/crash"]).start().await;
    let http = client();
    // Past what is kept in memory, so that its reads go to the plugin.
    let doomed = pattern(5, 100_000);
    http.put(node.at("/files/doomed")).body(doomed).send().await.unwrap().error_for_status().unwrap();
    let (status, code, error) = error_of(http.get(node.at("/files/doomed")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-failed"));
    assert!(error.contains("crash.wasm"), "{error}");
    assert!(error.contains("crash plugin asked to open"), "the panic message is reported: {error}");
    // Everything else keeps working, and so does the next call to the same plugin.
    let list: Value = http.get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["name"], "doomed");
    let (status, _, _) = error_of(http.get(node.at("/files/doomed")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn plugins_cannot_reach_outside_their_store() {
    let node = NodeSetup::with_plugins(&["default/index", "default/upload", "default/download"]).start().await;
    let http = client();
    // A secret next to the store (beside the host's own state), and a
    // symlink from inside the store to it.
    http.put(node.at("/files/inside.txt")).body("inside").send().await.unwrap().error_for_status().unwrap();
    let secret = node.data().parent().unwrap().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    std::os::unix::fs::symlink(&secret, node.data().join("files/link-out")).unwrap();
    // The escaping index plugin comes in now: its first listing, taken as
    // it takes over, sees the file, the secret and the link (started with
    // it, its listing at start could race the upload).
    let escape = std::fs::read(ringshare_tests::plugin("testdata/escape")).unwrap();
    ringshare_tests::drop_plugin(&node, "index.wasm", &escape);
    let version = ringshare_tests::blake3_hex(&escape);
    ringshare_tests::eventually("the escaping index plugin never served", || async {
        let index = statuses(&node).await.into_iter().find(|s| s["file"] == "index.wasm").unwrap_or_default();
        if index["loaded"] == true && index["version"] == version.as_str() { Ok(()) } else { Err(index.to_string()) }
    })
    .await;

    let list: Value = http.get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    let outcomes: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), 12, "{outcomes:?}");
    for outcome in &outcomes {
        let (attempt, verdict) = outcome.split_once('=').unwrap();
        let expected = if attempt == "control-read" { "allowed" } else { "denied" };
        assert_eq!(verdict, expected, "{attempt}: {outcomes:?}");
    }
    assert!(!node.data().join("files/planted.txt").exists());
    assert!(!node.data().join("planted").exists());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "top secret");
}

#[tokio::test]
async fn a_plugin_of_the_old_contract_is_refused_with_the_reason() {
    let node = NodeSetup::with_plugins(&["testdata/old-contract", "default/upload", "default/download"]).start().await;
    let statuses = statuses(&node).await;
    let old = statuses.iter().find(|s| s["file"] == "old-contract.wasm").expect("listed");
    assert_eq!(old["loaded"], false, "{old}");
    let reason = old["reason"].as_str().unwrap();
    assert!(
        reason.contains("another version of the plugin contract")
            && reason.contains(&format!("@{} only", ringshare::plugins::CONTRACT_VERSION)),
        "{reason}"
    );
    let (status, code, _) = error_of(client().get(node.at("/files")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "plugin-unavailable"));
    assert_still_serves(&node, "still.bin").await;
}

#[tokio::test]
async fn lying_plugins_cannot_reach_paths_headers_or_lengths() {
    let node =
        NodeSetup::with_plugins(&["testdata/liar-index", "default/upload", "testdata/liar-download"]).start().await;
    let http = client();

    // Entries with names that escape the store, NUL, line breaks, or hashes
    // that are not digests are left out of every listing.
    let listing: Vec<Value> = http.get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = listing.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["honest"]);
    let index: Value = http.get(node.at("/index")).send().await.unwrap().json().await.unwrap();
    assert_eq!(index["files"].as_array().unwrap().len(), 1, "{index}");

    // A reader claiming 5 bytes whose stream is the whole file: the node
    // reads no more than the 5 (it records them as the file, since the
    // plugin's word is what the store holds) and serves nothing unchecked:
    // not the version asked for, then only the 5 bytes it recorded.
    let data = pattern(4, 300_000);
    for name in ["long", "newline", "other-name"] {
        let put = http.put(node.at(&format!("/files/{name}"))).body(data.clone()).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::CREATED, "{name}");
    }
    let long = http.get(node.at("/files/long")).send().await.unwrap();
    let (status, code, _) = error_of(long).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "holders-unavailable"));
    assert_eq!(std::fs::read(node.data().join("files/long")).unwrap(), &data[..5]);
    let long = http.get(node.at("/files/long")).send().await.unwrap();
    assert_eq!(long.status(), StatusCode::OK);
    assert_eq!(long.bytes().await.unwrap(), &data[..5], "the bytes recorded, checked against their record");

    // A hash with a line break, or an entry for another file: refused as a
    // broken plugin, with no header built from what it said.
    for name in ["newline", "other-name"] {
        let response = http.get(node.at(&format!("/files/{name}"))).send().await.unwrap();
        assert!(response.headers().get("etag").is_none(), "{name}");
        let (status, code, message) = error_of(response).await;
        assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-failed"), "{name}");
        assert!(message.contains("contract"), "{message}");
    }
    let plugins = statuses(&node).await;
    assert_eq!(plugins.iter().filter(|s| s["loaded"] == true).count(), 3, "{plugins:?}");

    // A page longer than asked (once `overflow` is in the store): the
    // listing is refused with the reason, not taken in part. More files
    // changed by hand than are read again one by one (256) make the node
    // list the store again, once its watch has seen them.
    let files = node.data().join("files");
    for i in 0..300 {
        std::fs::write(files.join(format!("by-hand-{i}")), b"x").unwrap();
    }
    std::fs::write(files.join("overflow"), b"x").unwrap();
    // Bounded for a busy machine: the watch reads 301 changes first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let refused = loop {
        let answer = http.get(node.at("/files")).send().await.unwrap();
        if !answer.status().is_success() || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (status, code, message) = error_of(refused).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-failed"), "{message}");
    assert!(message.contains("contract") && message.contains("1025 entries where at most 1024"), "{message}");
}

/// Puts `data` (one block at most) into the store of a node to start in
/// `dir` as `name`, with the record the default upload plugin would have
/// made; its BLAKE3.
fn seed(dir: &std::path::Path, name: &str, data: &[u8]) -> String {
    let store = dir.join("data/store");
    for folder in ["files", "meta"] {
        std::fs::create_dir_all(store.join(folder)).unwrap();
    }
    let path = store.join("files").join(name);
    std::fs::write(&path, data).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH);
    let hash = ringshare_tests::blake3_hex(data);
    let record = format!("{} {} {hash}\n", data.len(), mtime.unwrap().as_nanos());
    std::fs::write(store.join("meta").join(name), record).unwrap();
    hash
}

#[tokio::test]
async fn names_are_served_while_the_first_listing_of_the_store_runs() {
    // The slow index lists for as long as `hold` is in the store: the
    // node's first listing runs through all of what follows.
    let dir = tempfile::tempdir().unwrap();
    let kept = pattern(11, 200_000); // one block: no outboard to seed
    seed(dir.path(), "kept", &kept);
    seed(dir.path(), "hold", b"hold");
    // As the binary runs: the built-in plugins serve until the folder's
    // take over, at start, without a listing of their own first.
    let setup = NodeSetup { embedded_plugins: true, ..NodeSetup::with_plugins(&["testdata/slow-index"]) };
    let node = setup.start_in(dir).await;
    let http = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(20)).build().unwrap();
    let get = http.get(node.at("/files/kept")).send().await.expect("served during the first listing");
    assert_eq!(get.status(), StatusCode::OK);
    assert!(get.bytes().await.unwrap() == kept, "kept read back");
    let head = http.head(node.at("/files/kept")).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "200000");
    assert_eq!(http.get(node.at("/files/missing")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let new = pattern(12, 300_000);
    let put = http.put(node.at("/files/new")).body(new.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    assert!(http.get(node.at("/files/new")).send().await.unwrap().bytes().await.unwrap() == new);
    // Other nodes ask what this one holds (Stat, for their reads and
    // writes): answered from the store by name, not after the listing.
    use ringshare::rpc::files_pb::{StatRequest, files_client::FilesClient};
    let mut rpc = FilesClient::new(ringshare_tests::Cluster::shared().member_channel(&node).await);
    let stat = |name: &str| StatRequest { name: name.into() };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), rpc.stat(stat("kept"))).await;
    let entry = answer.expect("Stat answered during the first listing").unwrap().into_inner().entry;
    assert_eq!(entry.map(|e| (e.size, e.blake3.len())), Some((200_000, 32)));
    let missing = rpc.stat(stat("missing")).await.unwrap().into_inner();
    assert!(missing.entry.is_none() && missing.deleted_ns.is_none(), "{missing:?}");
    // A file removed by hand while the listing runs (here: after the
    // listing saw it) is not in the index it fills.
    std::fs::write(node.data().join("files/by-hand"), b"by hand").unwrap();
    assert!(node.data().join("files/hold").exists(), "the first listing was running all along");
    assert_eq!(ringshare_tests::metric(&node, "ringshare_store_files").await, -1.0, "not listed yet");
    // Once the listing ends, the listing of the node has them all, and no
    // more.
    std::fs::remove_file(node.data().join("files/hold")).unwrap();
    let listing: Vec<Value> = client().get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    let mut names: Vec<&str> = listing.iter().map(|e| e["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["by-hand", "kept", "new"]);
    assert_eq!(ringshare_tests::metric(&node, "ringshare_store_files").await, 3.0);
}

#[tokio::test]
async fn a_store_of_many_pages_is_listed_whole_with_its_recorded_hashes() {
    // 2,500 files and their records, as the default upload plugin leaves
    // them: the listing takes three pages of 1,024.
    let dir = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..2_500u64 {
        let (name, data) = (format!("seeded-{i:04}"), pattern(i, 10 + i as usize % 50));
        let hash = seed(dir.path(), &name, &data);
        expected.insert(name, (data.len() as u64, hash));
    }
    let node = NodeSetup::with_plugins(&["default/index", "default/upload", "default/download"]).start_in(dir).await;
    let listing: Vec<Value> = client().get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    let listed: std::collections::BTreeMap<String, (u64, String)> = listing
        .iter()
        .map(|e| {
            let hash = e["blake3"].as_str().unwrap_or_else(|| panic!("no hash recorded: {e}"));
            (e["name"].as_str().unwrap().to_owned(), (e["size"].as_u64().unwrap(), hash.to_owned()))
        })
        .collect();
    assert_eq!(listed.len(), expected.len());
    assert!(listed == expected, "the listing differs from the store");
}

#[tokio::test]
async fn an_upload_plugin_handing_over_the_wrong_content_file_is_refused() {
    let node = NodeSetup::with_plugins(&["default/index", "testdata/liar-upload", "default/download"]).start().await;
    let http = client();
    // A directory, or a file opened for reading only: nothing is written,
    // the answer names the broken contract, and the node goes on serving.
    for name in ["dir", "read-only-file"] {
        let put = http.put(node.at(&format!("/files/{name}"))).body(pattern(5, 1000)).send().await.unwrap();
        let (status, code, message) = error_of(put).await;
        assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-failed"), "{name}");
        assert!(message.contains("contract") && message.contains("content file"), "{message}");
    }
    assert_eq!(std::fs::read(node.data().join("read-only")).unwrap(), b"");
    let listing: Vec<Value> = http.get(node.at("/files")).send().await.unwrap().json().await.unwrap();
    assert!(listing.iter().all(|e| e["name"] == "read-only"), "{listing:?}");
    let plugins = statuses(&node).await;
    assert_eq!(plugins.iter().filter(|s| s["loaded"] == true).count(), 3, "{plugins:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_gets_the_same_answer_whichever_node_is_asked() {
    // Two nodes keeping one copy each file; the second's download plugin traps.
    let first = NodeSetup { replicas: 1, ..NodeSetup::default() }.start().await;
    let second = NodeSetup {
        replicas: 1,
        join: Some(first.addr.clone()),
        ..NodeSetup::with_plugins(&["default/index", "default/upload", "testdata/crash"])
    }
    .start()
    .await;
    let nodes = [first, second];
    ringshare_tests::wait_converged(&nodes).await;
    let [first, second] = &nodes;
    let http = client();
    // A name the second node is responsible for: its key after the first
    // node's id, up to the second's (the second's arc may be tiny, so the
    // names are tried here, not through the ring).
    use ringshare::chord::Id;
    let (from, to) = (Id::hash(&first.addr), Id::hash(&second.addr));
    let name = (0..50_000_000u64)
        .map(|i| format!("held-{i}.bin"))
        .find(|candidate| Id::hash(candidate).in_half_open(from, to))
        .expect("a name in the second node's arc");
    let lookup: Value = http.get(first.at(&format!("/lookup/{name}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(lookup["node"]["addr"], second.addr.as_str(), "the ring places {name} on the second node");
    // Past what is kept in memory, so that its reads go to the plugin.
    let put = http.put(first.at(&format!("/files/{name}"))).body(pattern(6, 100_000)).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    let here = error_of(http.get(second.at(&format!("/files/{name}"))).send().await.unwrap()).await;
    let through = error_of(http.get(first.at(&format!("/files/{name}"))).send().await.unwrap()).await;
    assert_eq!((here.0, here.1.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-failed"));
    assert_eq!((through.0, through.1.as_str()), (here.0, here.1.as_str()), "{through:?}");
}

/// `ringshare plugin check` passes the default plugins and fails every
/// hostile one, naming what went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_check_passes_the_defaults_and_names_what_is_wrong_with_the_others() {
    let defaults = ringshare_tests::plugin("default/index").parent().unwrap().to_path_buf();
    for kind in ["index", "upload", "download"] {
        let report = ringshare::check::check_plugin(&defaults.join(format!("{kind}.wasm")), &defaults).await;
        assert!(report.passed(), "{report}");
        let text = report.to_string();
        assert!(
            text.contains(&format!("world: ringshare:plugin/{kind}-plugin@{}", ringshare::plugins::CONTRACT_VERSION)),
            "{text}"
        );
        assert!(text.contains("reads it back whole, every block verified"), "{text}");
    }
    for template in ["index", "upload", "download", "http"] {
        let report =
            ringshare::check::check_plugin(&ringshare_tests::plugin(&format!("template/{template}")), &defaults).await;
        assert!(report.passed(), "the {template} template:\n{report}");
    }
    let gallery = ringshare::check::check_plugin(&ringshare_tests::plugin("extra/gallery"), &defaults).await;
    assert!(gallery.passed() && gallery.to_string().contains("200 OK, text/html"), "{gallery}");
    let hostile = [
        ("spin", "ran longer than its 5s deadline"),
        ("sleep", "ran longer than its 5s deadline"),
        ("hog", "exceeded its memory cap"),
        ("escape", "an empty store was listed with"),
        ("crash", "crash plugin asked to open"),
        ("liar-index", "an empty store was listed with 2 entries"),
        ("liar-download", "does not hand back the outboard"),
        ("liar-upload", "broke the plugin contract"),
        ("old-contract", "another version of the plugin contract"),
        ("not-a-plugin", "exports none of the plugin interfaces"),
        ("http-hostile", "answers GET /x/http-hostile/ without failing: plugin http-hostile.wasm was stopped"),
    ];
    for (name, why) in hostile {
        let report =
            ringshare::check::check_plugin(&ringshare_tests::plugin(&format!("testdata/{name}")), &defaults).await;
        let text = report.to_string();
        assert!(!report.passed(), "{name} passed:\n{text}");
        assert!(text.contains(why), "{name}: expected {why:?} in\n{text}");
        assert!(text.ends_with("FAIL"), "{text}");
    }
    let missing = ringshare::check::check_plugin(std::path::Path::new("/nonexistent/x.wasm"), &defaults).await;
    assert!(!missing.passed() && missing.to_string().contains("No such file"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_every_plugin_slot_in_use_answers_busy_and_serves_again_once_one_frees() {
    let limits = ringshare::PluginLimits { instances_at_once: 2, ..Default::default() };
    let node = NodeSetup { limits, ..NodeSetup::default() }.start().await;
    let http = client();
    let big = pattern(41, 16 << 20);
    for name in ["held-1", "held-2"] {
        http.put(node.at(&format!("/files/{name}")))
            .body(big.clone())
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    http.put(node.at("/files/small")).body("small").send().await.unwrap().error_for_status().unwrap();
    // Past what is kept in memory: its reads need a plugin instance.
    let medium = pattern(42, 100_000);
    http.put(node.at("/files/medium")).body(medium.clone()).send().await.unwrap().error_for_status().unwrap();
    // Two downloads whose bodies nobody reads keep their plugin sessions open.
    let mut held = Vec::new();
    for name in ["held-1", "held-2"] {
        let response = http.get(node.at(&format!("/files/{name}"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        held.push(response);
    }
    let (status, code, error) = error_of(http.get(node.at("/files/medium")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "plugin-unavailable"), "{error}");
    assert!(error.contains("all 2 plugin instance slots"), "{error}");
    // What needs no plugin still answers: a HEAD, and a small file read
    // from memory.
    assert_eq!(http.head(node.at("/files/medium")).send().await.unwrap().status(), StatusCode::OK);
    let small = http.get(node.at("/files/small")).send().await.unwrap();
    assert_eq!(small.status(), StatusCode::OK);
    assert_eq!(small.text().await.unwrap(), "small");
    // A download read to its end frees its slot.
    let first = held.remove(0).bytes().await.unwrap();
    assert!(first == big, "the held download is whole");
    ringshare_tests::eventually("a freed slot serves again", || async {
        let response = http.get(node.at("/files/medium")).send().await.unwrap();
        match response.status() {
            StatusCode::OK => {
                assert!(response.bytes().await.unwrap() == medium);
                Ok(())
            }
            other => Err(format!("{other}")),
        }
    })
    .await;
    drop(held);
}
