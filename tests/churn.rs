//! Nodes crashing, stopping and coming back while clients upload and read:
//! an acknowledged file is served with its exact bytes or `503`, never
//! `404`, never wrong bytes. These tests are heavy (tens of nodes' worth of
//! work on two cores), so they run one at a time, in their own binary.

use reqwest::StatusCode;
use ringshare_tests::{
    NodeSetup, TestNode, blake3_hex, client, eventually, pattern, put, start_ring, wait_converged, wait_placed,
};

/// Held for the whole of each test: they do not run at once.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Files acknowledged with `201`, and their bytes.
type Acknowledged = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;
/// The URLs of the nodes that are up.
type Live = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// What the load saw: reads made, reads served (exact bytes), uploads
/// acknowledged, and every wrong answer (anything but the exact bytes or
/// `503` for an acknowledged file).
struct Seen {
    reads: u32,
    served: u32,
    uploads: u32,
    wrong: Vec<String>,
}

/// Uploads (one request in four) and reads of acknowledged files through
/// random live nodes, until `stop`; at most `max_uploads` uploads.
fn spawn_load(
    acknowledged: Acknowledged,
    live: Live,
    stop: tokio_util::sync::CancellationToken,
    max_uploads: u32,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let http = client();
        let mut seen = Seen { reads: 0, served: 0, uploads: 0, wrong: Vec::new() };
        for round in 0u64..1_000_000 {
            if stop.is_cancelled() {
                break;
            }
            let url = {
                let live = live.lock().unwrap();
                live[rand::random_range(0..live.len())].clone()
            };
            if round % 4 == 0 && seen.uploads < max_uploads {
                let (name, data) = (format!("load-{round}.bin"), pattern(round, 5_000 + round as usize % 7_000));
                let put = http.put(format!("{url}/files/{name}")).body(data.clone()).send().await;
                if put.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                    seen.uploads += 1;
                    acknowledged.lock().unwrap().push((name, data));
                }
                continue;
            }
            let (name, data) = {
                let acknowledged = acknowledged.lock().unwrap();
                acknowledged[rand::random_range(0..acknowledged.len())].clone()
            };
            let Ok(response) = http.get(format!("{url}/files/{name}")).send().await else { continue };
            seen.reads += 1;
            match response.status() {
                StatusCode::OK => match response.bytes().await {
                    Ok(body) if body == data => seen.served += 1,
                    Ok(_) => seen.wrong.push(format!("{name} via {url}: wrong bytes")),
                    Err(_) => {} // the serving node died mid-body: the client sees a broken stream
                },
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => {
                    let body = response.text().await.unwrap_or_default();
                    seen.wrong.push(format!("{name} via {url}: {other} {body}"));
                }
            }
        }
        seen
    })
}

/// Uploads `count` files through the ring and returns them, acknowledged.
async fn seed(nodes: &[TestNode], count: u64) -> Acknowledged {
    let acknowledged: Acknowledged = Default::default();
    for i in 0..count {
        let (name, data) = (format!("steady-{i}.bin"), pattern(900 + i, 20_000 + i as usize * 999));
        put(&nodes[i as usize % nodes.len()], &name, &data).await;
        acknowledged.lock().unwrap().push((name, data));
    }
    acknowledged
}

/// Every acknowledged file reads back intact through random nodes.
async fn assert_all_intact(nodes: &[TestNode], acknowledged: &Acknowledged) {
    let acknowledged = acknowledged.lock().unwrap().clone();
    for (name, data) in &acknowledged {
        let via = &nodes[rand::random_range(0..nodes.len())];
        let response = client().get(via.at(&format!("/files/{name}"))).send().await.unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        assert!(
            status == StatusCode::OK && body == *data,
            "{name} afterwards, via {}: {status}, {} bytes of {} ({})",
            via.addr,
            body.len(),
            data.len(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_and_restarted_at_once_under_load_never_give_a_wrong_answer() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut nodes = start_ring(6).await;
    let acknowledged = seed(&nodes, 12).await;
    let live: Live = std::sync::Arc::new(std::sync::Mutex::new(nodes.iter().map(|n| n.url.clone()).collect()));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = spawn_load(acknowledged.clone(), live.clone(), stop.clone(), u32::MAX);
    for round in 0..20 {
        let victim = nodes.remove(1 + round % 5);
        let (addr, url) = (victim.addr.clone(), victim.url.clone());
        live.lock().unwrap().retain(|u| *u != url);
        let dir = victim.crash();
        let setup = NodeSetup { join: Some(nodes[0].addr.clone()), listen: Some(addr), ..NodeSetup::default() };
        let back = setup.start_in(dir).await;
        eventually("a restarted node never rejoined", || async {
            match ringshare_tests::ring_view(&back).await {
                Some(view) if view["joined"] == true => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        live.lock().unwrap().push(url);
        nodes.push(back);
    }
    stop.cancel();
    let seen = load.await.unwrap();
    assert!(seen.wrong.is_empty(), "{} wrong answers of {}: {:?}", seen.wrong.len(), seen.reads, seen.wrong);
    assert!(seen.reads >= 20 && seen.uploads >= 5, "the load ran: {} reads, {} uploads", seen.reads, seen.uploads);
    println!(
        "{} of {} reads served during 20 restarts, {} uploads acknowledged",
        seen.served, seen.reads, seen.uploads
    );
    wait_converged(&nodes).await;
    assert_all_intact(&nodes, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_continuous_churn_an_acknowledged_file_is_never_reported_missing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // RINGSHARE_CHURN=full runs the long form: 10 nodes, 2 minutes, 500
    // uploads (about 3 minutes here); the default is a 40-second form.
    let full = std::env::var("RINGSHARE_CHURN").is_ok_and(|v| v == "full");
    let (node_count, steps, max_uploads) = if full { (10, 60, 500) } else { (8, 20, 150) };
    let mut nodes = start_ring(node_count).await;
    let acknowledged = seed(&nodes, 16).await;
    let live: Live = std::sync::Arc::new(std::sync::Mutex::new(nodes.iter().map(|n| n.url.clone()).collect()));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = spawn_load(acknowledged.clone(), live.clone(), stop.clone(), max_uploads);
    // Every 2 s, one node is killed, or stopped gracefully, or a
    // down one started again; never more than k-1 = 2 down at once.
    let mut down: Vec<(String, String, tempfile::TempDir)> = Vec::new();
    for step in 0..steps {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let restart = down.len() == 2 || (!down.is_empty() && rand::random_bool(0.4));
        if restart {
            let (addr, url, dir) = down.remove(rand::random_range(0..down.len()));
            let setup = NodeSetup { join: Some(nodes[0].addr.clone()), listen: Some(addr), ..NodeSetup::default() };
            nodes.push(setup.start_in(dir).await);
            live.lock().unwrap().push(url);
            continue;
        }
        // nodes[0] stays up: the others join through it.
        let victim = nodes.remove(rand::random_range(1..nodes.len()));
        let (addr, url) = (victim.addr.clone(), victim.url.clone());
        live.lock().unwrap().retain(|u| *u != url);
        let dir = if step % 2 == 0 { victim.crash() } else { victim.stop().await };
        down.push((addr, url, dir));
    }
    stop.cancel();
    let seen = load.await.unwrap();
    for (addr, _, dir) in down {
        let setup = NodeSetup { join: Some(nodes[0].addr.clone()), listen: Some(addr), ..NodeSetup::default() };
        nodes.push(setup.start_in(dir).await);
    }
    assert!(seen.wrong.is_empty(), "{} wrong answers of {}: {:?}", seen.wrong.len(), seen.reads, seen.wrong);
    println!(
        "availability under churn: {} of {} reads served ({:.1} %), {} uploads acknowledged",
        seen.served,
        seen.reads,
        100.0 * seen.served as f64 / seen.reads.max(1) as f64,
        seen.uploads
    );
    wait_converged(&nodes).await;
    let placed: Vec<(String, String)> =
        acknowledged.lock().unwrap().iter().map(|(n, d)| (n.clone(), blake3_hex(d))).collect();
    wait_placed(&nodes, &placed).await;
    assert_all_intact(&nodes, &acknowledged).await;
}
