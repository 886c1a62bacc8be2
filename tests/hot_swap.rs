//! Plugins swapped under a running node: a replacement serves the calls that
//! start after it while running ones finish on the version they started
//! with; a broken replacement leaves the old version serving; a removed
//! plugin's routes answer 503 to new calls while running ones finish; a half-written file
//! is not loaded; a manifest gets the smaller of what it asks and what is
//! allowed; the default plugins built into the binary serve an empty folder
//! until a plugin of their kind is dropped into it, and again once it goes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use reqwest::StatusCode;
use ringshare_tests::{NodeSetup, TestNode, blake3_hex, client, eventually, pattern, plugin, put};
use serde_json::Value;
use tokio::sync::mpsc;

fn folder(node: &TestNode) -> PathBuf {
    node.root().join("plugins")
}

/// `GET /plugins`' row for `file`, if there is one.
async fn status(node: &TestNode, file: &str) -> Option<Value> {
    let rows: Vec<Value> = client().get(node.at("/plugins")).send().await.unwrap().json().await.unwrap();
    rows.into_iter().find(|r| r["file"] == file)
}

/// The same component with a custom section appended: another version (its
/// bytes and hash differ) that behaves the same.
fn another_version(component: &Path, label: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"ringshare-test-version";
    let payload = label.as_bytes();
    let content = [&[name.len() as u8][..], name, payload].concat();
    assert!(content.len() < 128, "one-byte LEB128 lengths only");
    bytes.extend_from_slice(&[0, content.len() as u8]);
    bytes.extend_from_slice(&content);
    bytes
}

fn replace(node: &TestNode, file: &str, bytes: &[u8]) {
    ringshare_tests::drop_plugin(node, file, bytes);
}

async fn wait_serving(node: &TestNode, file: &str, version: &str) {
    eventually(&format!("{file} never served version {version}"), || async {
        match status(node, file).await {
            Some(s) if s["loaded"] == true && s["version"] == version => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_running_while_its_plugin_is_replaced_finishes_on_the_old_version() {
    let node = TestNode::start().await;
    let old = status(&node, "upload.wasm").await.unwrap()["version"].as_str().unwrap().to_owned();
    let data = Bytes::from(pattern(41, 200 << 20));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let upload = tokio::spawn(client().put(node.at("/files/big")).body(body).send());
    let (first, second) = data.split_at(data.len() / 2);
    for chunk in first.chunks(1 << 20) {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    eventually("the upload never started on the plugin", || async {
        let s = status(&node, "upload.wasm").await.unwrap();
        if s["calls_in_flight"] == 1 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;

    let new_bytes = another_version(&plugin("default/upload"), "v2");
    let new = blake3_hex(&new_bytes);
    replace(&node, "upload.wasm", &new_bytes);
    wait_serving(&node, "upload.wasm", &new).await;
    let swapped = status(&node, "upload.wasm").await.unwrap();
    assert_eq!(swapped["calls_in_flight"], 0, "{swapped}");
    assert_eq!(swapped["retiring"][0]["version"], old.as_str(), "{swapped}");
    assert_eq!(swapped["retiring"][0]["calls_in_flight"], 1, "{swapped}");

    for chunk in second.chunks(1 << 20) {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    drop(tx);
    let answer = upload.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let entry: Value = answer.json().await.unwrap();
    assert_eq!(entry["blake3"], blake3_hex(&data));
    let stored = client().get(node.at("/files/big")).send().await.unwrap().bytes().await.unwrap();
    assert!(stored == data, "the stored file differs from what was sent");
    let after = status(&node, "upload.wasm").await.unwrap();
    assert!(after.get("retiring").is_none(), "the old version is gone once its upload ended: {after}");

    // The next upload runs on the new version.
    assert_eq!(after["calls"], 0, "{after}");
    put(&node, "next", b"on the new version").await;
    let next = status(&node, "upload.wasm").await.unwrap();
    assert_eq!(next["version"], new.as_str());
    assert!(next["calls"].as_u64().unwrap() >= 1, "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_leaves_the_old_version_and_a_removal_waits_for_running_downloads() {
    let node = TestNode::start().await;
    let data = pattern(5, 24 << 20);
    put(&node, "kept", &data).await;
    let old = status(&node, "download.wasm").await.unwrap()["version"].as_str().unwrap().to_owned();

    std::fs::write(folder(&node).join("download.wasm"), b"half a component, or none").unwrap();
    eventually("the broken replacement was never reported", || async {
        let s = status(&node, "download.wasm").await.unwrap();
        match s["refused"]["reason"].as_str() {
            Some(reason) if reason.contains("not a WebAssembly component") => Ok(()),
            _ => Err(s.to_string()),
        }
    })
    .await;
    let refused = status(&node, "download.wasm").await.unwrap();
    assert_eq!(refused["loaded"], true, "{refused}");
    assert_eq!(refused["version"], old.as_str(), "{refused}");
    let served = client().get(node.at("/files/kept")).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert!(served.bytes().await.unwrap() == data, "the old version serves the file whole");

    // A download holding its session open while the plugin goes away.
    let mut running = client().get(node.at("/files/kept")).send().await.unwrap();
    let mut received = running.chunk().await.unwrap().unwrap().to_vec();
    std::fs::remove_file(folder(&node).join("download.wasm")).unwrap();
    eventually("the removal was never applied", || async {
        match status(&node, "download.wasm").await {
            Some(s) if s["loaded"] == false && s["retiring"][0]["calls_in_flight"] == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let refused = client().get(node.at("/files/kept")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "plugin-unavailable", "{body}");

    while let Some(chunk) = running.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert!(received == data, "the running download finished whole on the removed version");
    eventually("the removed version was never let go", || async {
        match status(&node, "download.wasm").await {
            None => Ok(()),
            Some(s) => Err(s.to_string()),
        }
    })
    .await;

    // Dropped back in: served again.
    replace(&node, "download.wasm", &std::fs::read(plugin("default/download")).unwrap());
    wait_serving(&node, "download.wasm", &old).await;
    assert!(client().get(node.at("/files/kept")).send().await.unwrap().bytes().await.unwrap() == data);
}

#[tokio::test]
async fn a_file_still_being_written_is_not_loaded() {
    use std::io::Write;
    let node = TestNode::start().await;
    let old = status(&node, "index.wasm").await.unwrap()["version"].as_str().unwrap().to_owned();
    let new_bytes = another_version(&plugin("default/index"), "v2");
    let mut writer = std::fs::File::create(folder(&node).join("index.wasm")).unwrap();
    writer.write_all(&new_bytes[..new_bytes.len() / 2]).unwrap();
    writer.flush().unwrap();

    // A file written whole after the half: once it is seen, so were the half's events.
    std::fs::write(folder(&node).join("marker.wasm"), b"not a component").unwrap();
    eventually("the marker was never read", || async {
        match status(&node, "marker.wasm").await {
            Some(s) if s["loaded"] == false => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let meanwhile = status(&node, "index.wasm").await.unwrap();
    assert_eq!(meanwhile["version"], old.as_str(), "{meanwhile}");
    assert!(meanwhile.get("refused").is_none(), "a half-written file was read: {meanwhile}");
    assert_eq!(client().get(node.at("/files")).send().await.unwrap().status(), StatusCode::OK);

    writer.write_all(&new_bytes[new_bytes.len() / 2..]).unwrap();
    drop(writer);
    wait_serving(&node, "index.wasm", &blake3_hex(&new_bytes)).await;
    assert_eq!(client().get(node.at("/files")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_manifest_gets_the_smaller_of_what_it_asks_and_what_is_allowed() {
    let node = NodeSetup::default().start().await;
    let grant_of = |file: &'static str| {
        let node = &node;
        async move { status(node, file).await.unwrap()["grant"].clone() }
    };
    assert_eq!(grant_of("upload.wasm").await["store"], "read-write");

    std::fs::write(
        folder(&node).join("index.toml"),
        "store = \"read-write\"\nmemory-mib = 100000\ntimeout-ms = 999999\n",
    )
    .unwrap();
    eventually("the index manifest was never applied", || async {
        let s = status(&node, "index.wasm").await.unwrap();
        if s["manifest"]["store"] == "read-write" { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    let grant = grant_of("index.wasm").await;
    assert_eq!(grant["store"], "read", "an index plugin never writes: {grant}");
    assert_eq!(grant["memory_bytes"], 32 << 20, "the node's cap: {grant}");
    assert_eq!(grant["timeout_ms"], 2000, "the node's deadline: {grant}");

    // The grant is what the sandbox gets: an upload plugin held to reading cannot store.
    std::fs::write(folder(&node).join("upload.toml"), "store = \"read\"\nmemory-mib = 16\n").unwrap();
    eventually("the upload manifest was never applied", || async {
        let grant = grant_of("upload.wasm").await;
        if grant["store"] == "read" && grant["memory_bytes"] == 16 << 20 { Ok(()) } else { Err(grant.to_string()) }
    })
    .await;
    let refused = client().put(node.at("/files/held")).body("x").send().await.unwrap();
    assert!(refused.status().is_server_error(), "{}", refused.status());

    // A manifest that does not parse is refused; the version before it serves.
    std::fs::write(folder(&node).join("upload.toml"), "store = \"everything\"\n").unwrap();
    eventually("the bad manifest was never reported", || async {
        let s = status(&node, "upload.wasm").await.unwrap();
        match s["refused"]["reason"].as_str() {
            Some(reason) if reason.contains("manifest") && reason.contains("unknown variant") => Ok(()),
            _ => Err(s.to_string()),
        }
    })
    .await;
    assert_eq!(grant_of("upload.wasm").await["store"], "read");

    // Without a manifest: the kind's own access again.
    std::fs::remove_file(folder(&node).join("upload.toml")).unwrap();
    eventually("the manifest's removal was never applied", || async {
        let s = status(&node, "upload.wasm").await.unwrap();
        if s["grant"]["store"] == "read-write" && s.get("refused").is_none() { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    put(&node, "held", b"stored again").await;
}

#[tokio::test]
async fn a_new_index_version_answers_listings_from_its_first_swap() {
    let node = TestNode::start().await;
    put(&node, "kept", b"a file").await;
    let listed = |node: &TestNode| {
        let url = node.at("/files");
        async move {
            let entries: Vec<Value> = client().get(url).send().await.unwrap().json().await.unwrap();
            entries.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&node).await, ["kept"]);
    // Another index plugin under the same name: it lists what its sandbox
    // let it see, and it listed before it served (one call, no request yet).
    let escape = std::fs::read(plugin("testdata/escape")).unwrap();
    replace(&node, "index.wasm", &escape);
    wait_serving(&node, "index.wasm", &blake3_hex(&escape)).await;
    // It had listed the store when it began to serve: at least that call.
    // (The repair loop, every 300 ms here, may list through it too, if it
    // asks while the swap's listing is being taken.)
    let serving = status(&node, "index.wasm").await.unwrap();
    assert!(serving["calls"].as_u64().unwrap() >= 1, "the new version listed the store before serving: {serving}");
    eventually("the new index version never answered", || async {
        let names = listed(&node).await;
        if names.iter().any(|n| n == "absolute-etc-passwd=denied") { Ok(()) } else { Err(format!("{names:?}")) }
    })
    .await;
    // And back: the file is listed again.
    replace(&node, "index.wasm", &std::fs::read(plugin("default/index")).unwrap());
    eventually("the first index version never came back", || async {
        let names = listed(&node).await;
        if names == ["kept"] { Ok(()) } else { Err(format!("{names:?}")) }
    })
    .await;
}

/// Rows of `GET /plugins` whose `source` is `source`, by file.
async fn rows_from(node: &TestNode, source: &str) -> Vec<Value> {
    let rows: Vec<Value> = client().get(node.at("/plugins")).send().await.unwrap().json().await.unwrap();
    rows.into_iter().filter(|r| r["source"] == source).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_defaults_serve_an_empty_folder_and_a_folder_plugin_takes_over_and_back() {
    let setup = NodeSetup { plugins: Vec::new(), embedded_plugins: true, replicas: 1, ..NodeSetup::default() };
    let node = setup.start().await;
    put(&node, "first", b"one").await;
    let got = client().get(node.at("/files/first")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"one", "served by the embedded plugins");
    let embedded = rows_from(&node, "embedded").await;
    let kinds: Vec<&str> =
        embedded.iter().filter(|r| r["loaded"] == true).map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["index", "upload", "download"], "{embedded:?}");

    // An upload plugin dropped into the folder takes over the kind.
    replace(&node, "mine.wasm", &another_version(&plugin("default/upload"), "mine"));
    eventually("the folder's upload plugin never took over", || async {
        let mine = rows_from(&node, "folder").await.into_iter().find(|r| r["file"] == "mine.wasm");
        let theirs = rows_from(&node, "embedded").await.into_iter().find(|r| r["kind"] == "upload").unwrap();
        match mine {
            Some(m) if m["loaded"] == true && theirs["loaded"] == false => Ok(()),
            other => Err(format!("{other:?} / {theirs}")),
        }
    })
    .await;
    let embedded = rows_from(&node, "embedded").await;
    let upload = embedded.iter().find(|r| r["kind"] == "upload").unwrap();
    assert!(upload["reason"].as_str().unwrap().contains("mine.wasm"), "says who serves instead: {upload}");
    put(&node, "second", b"two").await;
    let mine = rows_from(&node, "folder").await.into_iter().find(|r| r["file"] == "mine.wasm").unwrap();
    assert!(mine["calls"].as_u64().unwrap() >= 1, "the folder's plugin took the upload: {mine}");

    // Removed, the kind goes back to the embedded plugin.
    std::fs::remove_file(folder(&node).join("mine.wasm")).unwrap();
    eventually("the embedded upload plugin never served again", || async {
        let theirs = rows_from(&node, "embedded").await.into_iter().find(|r| r["kind"] == "upload").unwrap();
        if theirs["loaded"] == true { Ok(()) } else { Err(theirs.to_string()) }
    })
    .await;
    put(&node, "third", b"three").await;
    for (name, body) in [("first", "one"), ("second", "two"), ("third", "three")] {
        let got = client().get(node.at(&format!("/files/{name}"))).send().await.unwrap().text().await.unwrap();
        assert_eq!(got, body);
    }
}
