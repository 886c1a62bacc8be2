//! Downloads from every holder at once, on hosts of their own (network
//! namespaces, see `support/hosts.rs`) whose uploads are limited with
//! `tc tbf`: what each holder sends is counted on its link.

use std::time::Duration;

use reqwest::StatusCode;
use ringshare_tests::hosts::{Hosts, ring_on, write_token};
use ringshare_tests::{NodeSetup, TestNode, blake3_hex, client, name_held_away_from, pattern, placement};

const TOKEN: &str = "multi-source-token";

/// Held by each test while it runs: both rest on the holders' links being
/// the limit, not the processors, so they do not download at once (the
/// downloads adapt to whichever is the limit, by design).
static LINKS_ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Four hosts in one ring, and a file of `size` bytes uploaded through
/// node 0 that node 0 does not hold: the hosts, nodes, the file's name and
/// bytes, and the hosts of its holders (responsible first).
async fn ring_with_file_held_away(size: usize) -> (Hosts, Vec<TestNode>, String, Vec<u8>, Vec<usize>) {
    let (hosts, tokens) = (Hosts::new(4), tempfile::tempdir().unwrap());
    let nodes = ring_on(&hosts, &write_token(tokens.path(), TOKEN), |_| NodeSetup::default()).await;
    let name = name_held_away_from(&nodes[0], &[nodes[0].addr.as_str()], "spread").await;
    let data = pattern(size as u64, size);
    let put = client()
        .put(nodes[0].at(&format!("/files/{name}")))
        .bearer_auth(TOKEN)
        .body(data.clone())
        .timeout(Duration::from_secs(120));
    assert_eq!(put.send().await.unwrap().status(), StatusCode::CREATED, "upload {name}");
    let holders: Vec<usize> = placement(&nodes[0], &name)
        .await
        .iter()
        .map(|addr| nodes.iter().position(|n| &n.addr == addr).expect("a holder among the nodes"))
        .collect();
    assert_eq!(holders.len(), 3, "k = 3 holders of {name}");
    (hosts, nodes, name, data, holders)
}

/// Reads `name` through `node` (at most 60 s), calling `at(bytes so far)`
/// after each chunk.
async fn read_watching(node: &TestNode, name: &str, mut at: impl FnMut(usize)) -> Vec<u8> {
    let get = client().get(node.at(&format!("/files/{name}"))).timeout(Duration::from_secs(60));
    let mut answer = get.send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "GET {name}");
    let mut got = Vec::new();
    while let Some(chunk) =
        answer.chunk().await.unwrap_or_else(|e| panic!("{name} broke after {} bytes: {e}", got.len()))
    {
        got.extend_from_slice(&chunk);
        at(got.len());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_from_a_non_holder_reads_every_holder_and_little_from_a_slow_one() {
    let _alone = LINKS_ALONE.lock().await;
    let size = 24 << 20;
    let (hosts, nodes, name, data, holders) = ring_with_file_held_away(size).await;
    // The responsible node, first asked, sends at 8 Mbit/s (1 MB/s), the
    // others at 50 Mbit/s: links are the limit, so every holder helps.
    let slow = holders[0];
    hosts.limit(slow, 8);
    for &h in &holders[1..] {
        hosts.limit(h, 50);
    }
    let before: Vec<u64> = holders.iter().map(|&h| hosts.sent(h)).collect();
    let got = read_watching(&nodes[0], &name, |_| {}).await;
    assert_eq!((got.len(), blake3_hex(&got)), (data.len(), blake3_hex(&data)), "{name} read back");
    let served: Vec<u64> = holders.iter().zip(before).map(|(&h, before)| hosts.sent(h) - before).collect();
    println!("bytes sent by each holder, the slow one first: {served:?} of {size}");
    let size = size as u64;
    // A third each would be 8 MiB from the slow one, and take 8 s. The
    // slow one's part grows with the read's time (it sends at 1 MB/s all
    // along), so on a busy machine it may reach a few MB, but the fast ones
    // carry the read: together more than three quarters, each at least a
    // piece (1 MiB) of its own. (How they share it is the pace's call: on a busy
    // machine, where the processors and not the links are the limit, a
    // holder that does not make the read faster is read less; a fresh
    // clone's suite once saw 23.9 and 2.4 MB.)
    assert!(served[0] < size / 4, "the slow holder sent {} of {size} bytes: {served:?}", served[0]);
    assert!(served[1] + served[2] > size / 4 * 3, "the fast holders sent {served:?} of {size} bytes");
    for (i, sent) in served.iter().enumerate().skip(1) {
        assert!(*sent >= 1 << 20, "holder {i} sent only {sent} of {size} bytes: {served:?}");
    }
    for &h in &holders {
        hosts.unlimit(h);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_killed_or_cut_off_mid_download_lose_no_byte() {
    let _alone = LINKS_ALONE.lock().await;
    let size = 32 << 20;
    let (hosts, mut nodes, name, data, holders) = ring_with_file_held_away(size).await;
    // 50 Mbit/s each: the download takes a couple of seconds, long enough
    // to lose holders while it runs.
    for &h in &holders {
        hosts.limit(h, 50);
    }
    let before: Vec<u64> = holders.iter().map(|&h| hosts.sent(h)).collect();
    // At 8 MiB one holder crashes; at 16 MiB another stops answering (its
    // link moves off the network: its stream goes silent, and only the
    // failure detector notices).
    let (killed, cut_off, last) = (holders[1], holders[2], holders[0]);
    let mut doomed = Some(nodes.remove(killed)); // the reader, node 0, stays first
    let mut cut = false;
    let got = read_watching(&nodes[0], &name, |so_far| {
        if so_far >= 8 << 20
            && let Some(node) = doomed.take()
        {
            node.kill();
        }
        if so_far >= 16 << 20 && !cut {
            hosts.split(&[cut_off]);
            cut = true;
        }
    })
    .await;
    assert!(doomed.is_none() && cut, "the read passed 16 MiB");
    assert_eq!((got.len(), blake3_hex(&got)), (data.len(), blake3_hex(&data)), "{name} read back");
    // The one holder left sent at least its share and what the others left.
    let sent_by_last = hosts.sent(last) - before[0];
    println!("bytes sent by the holder left: {sent_by_last} of {size}");
    assert!(sent_by_last > (size as u64) / 3, "the holder left sent only {sent_by_last} bytes");
    hosts.heal();
}
