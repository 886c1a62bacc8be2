//! HTTP plugins (`wasi:http/proxy`) mounted at `/x/{route}/`: one dropped
//! into a running node serves its route; a hostile one is stopped (deadline,
//! memory cap, no paths outside its grant, no network, a stalled body cut)
//! while the node keeps serving; a manifest names the route and can take
//! the store away.

use std::path::Path;
use std::time::Instant;

use reqwest::StatusCode;
use ringshare_tests::{NodeSetup, TestNode, client, eventually, plugin, put};
use serde_json::Value;

fn drop_in(node: &TestNode, component: &Path, file: &str) {
    ringshare_tests::drop_plugin(node, file, &std::fs::read(component).unwrap());
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_plugin_dropped_into_a_running_node_serves_its_route() {
    let node = TestNode::start().await;
    let http = client();
    put(&node, "notes.txt", b"first line\nsay Hello, world\nlast <line>\n").await;
    put(&node, "dot.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>").await;
    let (status, code, _) = error_code(http.get(node.at("/x/gallery/")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "no-route"));

    let dropped = Instant::now();
    drop_in(&node, &plugin("extra/gallery"), "gallery.wasm");
    eventually("the gallery's route never answered", || async {
        let answer = client().get(node.at("/x/gallery/")).send().await.map_err(|e| e.to_string())?;
        if answer.status() == StatusCode::OK { Ok(()) } else { Err(answer.status().to_string()) }
    })
    .await;
    eprintln!("the gallery answered {:?} after it was dropped in", dropped.elapsed());

    let page = http.get(node.at("/x/gallery/")).send().await.unwrap();
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let policies: Vec<&str> =
        page.headers().get_all("content-security-policy").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(policies.iter().any(|p| p.starts_with("sandbox") && !p.contains("allow-same-origin")), "{policies:?}");
    let page = page.text().await.unwrap();
    assert!(page.contains("notes.txt") && page.contains("dot.svg"), "{page}");
    assert!(page.contains("last &lt;line&gt;"), "previews are escaped: {page}");
    let file = http.get(node.at("/x/gallery/file/notes.txt")).send().await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(&file.bytes().await.unwrap()[..], b"first line\nsay Hello, world\nlast <line>\n");
    let found: Value = http.get(node.at("/x/gallery/search?q=hello")).send().await.unwrap().json().await.unwrap();
    assert_eq!(found[0]["name"], "notes.txt", "{found}");
    assert_eq!(found[0]["line"], 2, "{found}");
    assert_eq!(http.get(node.at("/x/gallery/file/..%2Fmeta")).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(http.get(node.at("/x/gallery/file/missing")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(http.post(node.at("/x/gallery/")).send().await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);

    let status: Vec<Value> = http.get(node.at("/plugins")).send().await.unwrap().json().await.unwrap();
    let gallery = status.iter().find(|s| s["file"] == "gallery.wasm").unwrap();
    assert_eq!(gallery["kind"], "http", "{gallery}");
    assert_eq!(gallery["grant"]["route"], "gallery", "{gallery}");
    assert_eq!(gallery["grant"]["store"], "read", "{gallery}");

    // Removed: the route is gone.
    std::fs::remove_file(node.root().join("plugins/gallery.wasm")).unwrap();
    eventually("the gallery's route never went away", || async {
        let answer = client().get(node.at("/x/gallery/")).send().await.map_err(|e| e.to_string())?;
        if answer.status() == StatusCode::NOT_FOUND { Ok(()) } else { Err(answer.status().to_string()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_http_plugin_is_stopped_and_the_node_serves_on() {
    let mut setup = NodeSetup::default();
    setup.plugins.push("testdata/http-hostile".into());
    let node = setup.start().await;
    let http = client();
    let at = |path: &str| node.at(&format!("/x/http-hostile{path}"));
    assert_eq!(http.get(at("/ok")).send().await.unwrap().text().await.unwrap(), "ok");

    let started = Instant::now();
    let (status, code, error) = error_code(http.get(at("/loop")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-timeout"), "{error}");
    assert!(error.contains("http-hostile.wasm"), "{error}");
    eprintln!("the loop was stopped after {:?} (deadline 2 s)", started.elapsed());
    let (status, code, error) = error_code(http.get(at("/hog")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-out-of-memory"), "{error}");

    let (status, code, error) = error_code(http.get(at("/sleep")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-timeout"), "{error}");

    let escape: Value = http.get(at("/escape")).send().await.unwrap().json().await.unwrap();
    assert_eq!(escape, serde_json::json!({"etc_passwd": false, "dotdot": false, "meta": false, "write": false}));
    assert!(!node.data().join("files/planted-by-http-hostile.txt").exists());
    let net: Value = http.get(at("/net")).send().await.unwrap().json().await.unwrap();
    assert_eq!(net, serde_json::json!({"sent": false}), "outgoing requests are refused");

    // Answered, then stalled: the body is cut short, not ended as if whole.
    let stalled = http.get(at("/stall")).send().await.unwrap();
    assert_eq!(stalled.status(), StatusCode::OK);
    assert!(stalled.bytes().await.is_err(), "a stalled body must end in an error");

    // Everything else kept working, the same plugin included.
    put(&node, "after", b"still serving").await;
    assert_eq!(http.get(node.at("/files/after")).send().await.unwrap().bytes().await.unwrap(), "still serving");
    assert_eq!(http.get(at("/ok")).send().await.unwrap().text().await.unwrap(), "ok");
    eventually("a stopped request kept the plugin", || async {
        let status: Vec<Value> = client().get(node.at("/plugins")).send().await.unwrap().json().await.unwrap();
        let hostile = status.iter().find(|s| s["file"] == "http-hostile.wasm").cloned().unwrap_or_default();
        if hostile["calls_in_flight"] == 0 { Ok(()) } else { Err(hostile.to_string()) }
    })
    .await;
}

#[tokio::test]
async fn an_http_plugins_manifest_names_its_route_and_can_take_the_store_away() {
    let mut setup = NodeSetup::default();
    setup.plugins.push("extra/gallery".into());
    setup.extra_files = vec![("gallery.toml".into(), b"route = \"pics\"\nstore = \"none\"\n".to_vec())];
    let node = setup.start().await;
    let http = client();
    assert_eq!(http.get(node.at("/x/gallery/")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let page = http.get(node.at("/x/pics/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE, "without the store the gallery says so");

    // An HTTP plugin never gets to write, whatever it asks.
    std::fs::write(node.root().join("plugins/gallery.toml"), "route = \"pics\"\nstore = \"read-write\"\n").unwrap();
    eventually("the new grant was never applied", || async {
        let page = client().get(node.at("/x/pics/")).send().await.map_err(|e| e.to_string())?;
        if page.status() == StatusCode::OK { Ok(()) } else { Err(page.status().to_string()) }
    })
    .await;
    let status: Vec<Value> = http.get(node.at("/plugins")).send().await.unwrap().json().await.unwrap();
    let gallery = status.iter().find(|s| s["file"] == "gallery.wasm").unwrap();
    assert_eq!(gallery["grant"]["store"], "read", "{gallery}");
    assert_eq!(gallery["manifest"]["store"], "read-write", "{gallery}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_on_requests_at_once_a_request_waits_its_deadline_then_gets_503() {
    use ringshare::plugins::HTTP_REQUESTS_AT_ONCE as CONCURRENT_REQUESTS;
    let mut setup = NodeSetup::default();
    // The sleepers hold their turns for 6 s; the gallery waits 300 ms for one.
    setup.limits.call_timeout = std::time::Duration::from_secs(6);
    setup.plugins.extend(["testdata/http-hostile".into(), "extra/gallery".into()]);
    setup.extra_files = vec![("gallery.toml".into(), b"timeout-ms = 300\n".to_vec())];
    let node = setup.start().await;
    let http = client();
    assert_eq!(http.get(node.at("/x/gallery/")).send().await.unwrap().status(), StatusCode::OK);

    let sleepers: Vec<_> =
        (0..CONCURRENT_REQUESTS).map(|_| tokio::spawn(client().get(node.at("/x/http-hostile/sleep")).send())).collect();
    // A request counts as in flight just before it takes its turn, in the
    // same poll: once all are counted, every turn is taken.
    eventually("the sleepers never all started", || async {
        let status: Vec<Value> = client().get(node.at("/plugins")).send().await.unwrap().json().await.unwrap();
        let hostile = status.iter().find(|s| s["file"] == "http-hostile.wasm").cloned().unwrap_or_default();
        if hostile["calls_in_flight"] == CONCURRENT_REQUESTS { Ok(()) } else { Err(hostile.to_string()) }
    })
    .await;

    let started = Instant::now();
    let (status, code, error) = error_code(http.get(node.at("/x/gallery/")).send().await.unwrap()).await;
    let waited = started.elapsed();
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "plugin-unavailable"), "{error}");
    assert!(error.contains("gallery.wasm is busy"), "{error}");
    assert!(waited >= std::time::Duration::from_millis(300), "it waited its deadline first: {waited:?}");
    // Other routes do not wait for a turn.
    assert_eq!(http.get(node.at("/files")).send().await.unwrap().status(), StatusCode::OK);

    for sleeper in sleepers {
        let (status, code, error) = error_code(sleeper.await.unwrap().unwrap()).await;
        assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "plugin-timeout"), "{error}");
    }
    assert_eq!(http.get(node.at("/x/gallery/")).send().await.unwrap().status(), StatusCode::OK, "turns came back");
}
