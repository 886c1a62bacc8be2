//! The live picture of the ring (`GET /`) in a real headless browser:
//! Debian's Chromium driven through WebDriver (chromedriver, fantoccini),
//! against five real nodes with a real broker (live events). The page draws
//! the five nodes, takes an upload (which then shows on the circle and
//! downloads byte-identical from the page), deletes a file, and greys a
//! node that was killed; with ten thousand files it aggregates them and
//! still finds, lists and downloads any one. `make test` installs chromium
//! and chromium-driver.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use ringshare_tests::{NodeSetup, Vhost, eventually, pattern, start_ring_with, wait_converged};
use serde_json::{Value, json};
use sha2::Digest;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(Path::new(tool).exists(), "{tool} is missing: `make test` installs chromium and chromium-driver");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // Ready once it says so.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.by_ref().take(20).map_while(Result::ok).any(|l| l.contains("started successfully"));
        assert!(ready, "chromedriver did not start");
        std::thread::spawn(move || for _ in lines {});
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn browser(&self, profile: &Path) -> Client {
        let options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn count(browser: &Client, css: &str) -> usize {
    browser.find_all(Locator::Css(css)).await.map_or(0, |found| found.len())
}

/// Clicks the element `css` finds, as a user would. The page replaces a
/// table row when what it shows changes (a holder more), so an element
/// found a moment ago may be gone: find it again then (10 s at most).
async fn click(browser: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clicked = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

/// Polls until `css` matches `want` elements (30 s at most).
async fn until_count(browser: &Client, css: &str, want: usize) {
    until_count_within(browser, css, want, Duration::from_secs(30)).await
}

/// Polls until `css` matches `want` elements, for `bound` at most.
async fn until_count_within(browser: &Client, css: &str, want: usize, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let found = count(browser, css).await;
        if found == want {
            return;
        }
        assert!(Instant::now() < deadline, "{css}: {found} elements, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Held for the whole of each test: two browsers and their rings at once
/// would slow each other past the page's own timers.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_page_draws_the_ring_uploads_downloads_deletes_and_greys_a_dead_node() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let vhost = Vhost::new();
    let setup = || NodeSetup { amqp: Some(vhost.url()), ..NodeSetup::default() };
    let mut nodes = start_ring_with(5, setup).await;
    wait_converged(&nodes).await;

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;
    browser.goto(&nodes[0].at("/")).await.unwrap();
    until_count(&browser, "circle.node", 5).await;
    until_count(&browser, "circle.node[data-alive=\"true\"]", 5).await;
    for node in &nodes {
        let css = format!("circle.node[data-addr=\"{}\"]", node.addr);
        assert_eq!(count(&browser, &css).await, 1, "{} is drawn", node.addr);
    }

    // An upload through the page: it shows on the circle and in the table.
    let data = pattern(11, 300_000);
    let upload = profile.path().join("from-the-page.bin");
    std::fs::write(&upload, &data).unwrap();
    let input = browser.find(Locator::Css("#upload-file")).await.unwrap();
    input.send_keys(&upload.display().to_string()).await.unwrap();
    browser.find(Locator::Css("#upload-button")).await.unwrap().click().await.unwrap();
    until_count(&browser, "g.file[data-name=\"from-the-page.bin\"]", 1).await;
    until_count(&browser, "tr[data-name=\"from-the-page.bin\"]", 1).await;
    let stored = reqwest::get(nodes[2].at("/files/from-the-page.bin")).await.unwrap().bytes().await.unwrap();
    assert!(stored == data, "the page uploaded the file byte for byte");

    // Downloaded by the page itself, through its own link: the same bytes.
    let script = r#"
        const [css, done] = arguments;
        const link = document.querySelector(css);
        fetch(link.href).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b))
          .then(h => done(Array.from(new Uint8Array(h)).map(x => x.toString(16).padStart(2, '0')).join('')))
          .catch(e => done('failed: ' + e));
    "#;
    let link = json!("tr[data-name=\"from-the-page.bin\"] a.download");
    let digest = browser.execute_async(script, vec![link]).await.unwrap();
    assert_eq!(digest, Value::String(hex(&sha2::Sha256::digest(&data))), "the page downloads it byte-identical");

    // Deleted from the page: gone from the circle and from the network.
    click(&browser, "tr[data-name=\"from-the-page.bin\"] button.delete").await;
    until_count(&browser, "g.file[data-name=\"from-the-page.bin\"]", 0).await;
    eventually("the page's delete never reached the network", || async {
        let status = reqwest::get(nodes[1].at("/files/from-the-page.bin")).await.map_err(|e| e.to_string())?.status();
        if status == reqwest::StatusCode::NOT_FOUND { Ok(()) } else { Err(status.to_string()) }
    })
    .await;

    // A node killed turns grey within a few seconds.
    let dead = nodes.remove(3);
    let dead_css = format!("circle.node[data-addr=\"{}\"][data-alive=\"false\"]", dead.addr);
    let killed = Instant::now();
    dead.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&browser, &dead_css).await != 1 {
        let still = count(&browser, &format!("circle.node[data-addr=\"{}\"]", nodes[0].addr)).await;
        assert!(Instant::now() < deadline && still == 1, "the killed node never turned grey");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the killed node turned grey {:?} after the kill", killed.elapsed());
    until_count(&browser, "circle.node[data-alive=\"true\"]", 4).await;
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ten_thousand_files_the_page_aggregates_and_still_finds_and_downloads_any_one() {
    use futures_util::StreamExt;
    const FILES: usize = 10_000;
    let _serial = ONE_AT_A_TIME.lock().await;
    // One copy each, so that the uploads are quick; the page lists the
    // network (`scope=network`) all the same.
    let nodes = start_ring_with(4, || NodeSetup { replicas: 1, ..NodeSetup::default() }).await;
    wait_converged(&nodes).await;
    let started = Instant::now();
    let http = ringshare_tests::client();
    let uploads = futures_util::stream::iter(0..FILES).map(|i| {
        let (http, url) = (http.clone(), nodes[i % nodes.len()].at(&format!("/files/file-{i:05}")));
        async move { http.put(url).body(format!("file {i}")).send().await.and_then(|r| r.error_for_status()) }
    });
    let failed = uploads.buffer_unordered(16).filter(|r| std::future::ready(r.is_err())).count().await;
    assert_eq!(failed, 0, "every upload was taken");
    let uploading = started.elapsed();
    eprintln!("{FILES} files uploaded in {uploading:?}");
    // The page's waits scale with the work: a machine busy enough to slow
    // the uploads slows the listings the page is given as much.
    let bound = Duration::from_secs(30) + uploading;

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;
    let opened = Instant::now();
    browser.goto(&nodes[1].at("/")).await.unwrap();
    // Crowded: no mark per file, but bins that hold every file between them.
    until_count_within(&browser, "tr[data-name]", 500, bound).await;
    eprintln!("the page listed them {:?} after opening", opened.elapsed());
    assert_eq!(count(&browser, "g.file").await, 0, "no mark per file when crowded");
    // Right after so many uploads the nodes are busy repairing, and a
    // network listing may leave out a node that is slow to answer (the page
    // shows what it got); the page's next poll fills it in.
    let deadline = Instant::now() + bound * 2;
    loop {
        let binned = browser
            .execute(
                "return [...document.querySelectorAll('g.bin')].reduce((n, g) => n + Number(g.dataset.count), 0)",
                vec![],
            )
            .await
            .unwrap();
        if binned == json!(FILES) {
            break;
        }
        assert!(Instant::now() < deadline, "the bins never held every file: {binned} of {FILES}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("every file was in a bin {:?} after opening", opened.elapsed());
    let note = browser.find(Locator::Css("#tablenote")).await.unwrap().text().await.unwrap();
    assert!(note.contains("first 500 of 10000"), "the table says it shows a part: {note}");

    // The filter finds any one of them, and the page downloads it.
    let filter = browser.find(Locator::Css("#filter")).await.unwrap();
    filter.send_keys("file-07777").await.unwrap();
    until_count(&browser, "tr[data-name]", 1).await;
    until_count(&browser, "tr[data-name=\"file-07777\"]", 1).await;
    let script = r#"
        const [css, done] = arguments;
        fetch(document.querySelector(css).href).then(r => r.text()).then(done).catch(e => done('failed: ' + e));
    "#;
    let body = browser.execute_async(script, vec![json!("tr[data-name=\"file-07777\"] a.download")]).await.unwrap();
    assert_eq!(body, json!("file 7777"), "the page downloads the file it found");
    browser.close().await.unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
