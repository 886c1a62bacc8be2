//! Nodes on hosts of their own (network namespaces the test makes, see
//! `support/hosts.rs`), with a network that splits and heals.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ringshare_tests::hosts::{Hosts, ring_on, write_token};
use ringshare_tests::{NodeSetup, TestNode, client, eventually_within, pattern, placement, wait_converged_within};

/// The write token of the test's nodes: the test's requests do not come
/// from loopback, so without one they could only read.
const TOKEN: &str = "partition-test-token";
/// The longest any one request of the test may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Uploads `data` as `name` through `via`: whether it was acknowledged.
async fn upload(via: &TestNode, name: &str, data: &[u8]) -> bool {
    let put = client().put(via.at(&format!("/files/{name}"))).bearer_auth(TOKEN).body(data.to_vec());
    let answer = put.timeout(CALL_LIMIT).send().await;
    answer.is_ok_and(|a| a.status() == StatusCode::CREATED)
}

/// Deletes `name` through `via`: whether it was acknowledged.
async fn delete(via: &TestNode, name: &str) -> bool {
    let answer = client().delete(via.at(&format!("/files/{name}"))).bearer_auth(TOKEN).timeout(CALL_LIMIT).send().await;
    answer.is_ok_and(|a| a.status().is_success())
}

/// The status of `method` on `name` through `via`.
async fn status_of(via: &TestNode, method: reqwest::Method, name: &str) -> StatusCode {
    let call = client().request(method, via.at(&format!("/files/{name}"))).bearer_auth(TOKEN).timeout(CALL_LIMIT);
    call.send().await.unwrap_or_else(|e| panic!("{name} via {}: {e}", via.addr)).status()
}

/// Where `via` places `name` now (`GET /lookup`), or why it cannot say.
async fn holders_of(via: &TestNode, name: &str) -> Result<Vec<String>, String> {
    let answer = client().get(via.at(&format!("/lookup/{name}"))).timeout(CALL_LIMIT).send().await;
    let answer: serde_json::Value = answer.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
    let holders = answer["holders"].as_array().ok_or_else(|| format!("lookup of {name}: {answer}"))?;
    Ok(holders.iter().filter_map(|h| h["addr"].as_str().map(str::to_owned)).collect())
}

/// Each node's own copies (`GET /files`, this node's store): name → size.
async fn local_copies(node: &TestNode) -> Result<BTreeMap<String, u64>, String> {
    let answer = client().get(node.at("/files")).timeout(CALL_LIMIT).send().await.map_err(|e| e.to_string())?;
    let entries: serde_json::Value = answer.json().await.map_err(|e| e.to_string())?;
    let entries = entries.as_array().ok_or_else(|| format!("{} listed {entries}", node.addr))?;
    Ok(entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or_default().to_owned(), e["size"].as_u64().unwrap_or(0)))
        .collect())
}

/// What `name` reads as through `node`: its bytes, or the status.
async fn read(node: &TestNode, name: &str) -> Result<Vec<u8>, String> {
    let answer = client().get(node.at(&format!("/files/{name}"))).timeout(Duration::from_secs(10)).send().await;
    let answer = answer.map_err(|e| e.to_string())?;
    match answer.status() {
        StatusCode::OK => Ok(answer.bytes().await.map_err(|e| e.to_string())?.to_vec()),
        status => Err(status.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_split_for_30_s_heals_into_one_with_every_acknowledged_write_kept() {
    split_and_heal(Duration::from_secs(30), Sides::Arcs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_split_for_2_min_heals_into_one_with_every_acknowledged_write_kept() {
    split_and_heal(Duration::from_secs(120), Sides::Interleaved).await
}

/// `make test` runs this one last, alone (scripts/test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_split_for_10_min_heals_into_one_with_every_acknowledged_write_kept() {
    split_and_heal(Duration::from_secs(600), Sides::Interleaved).await
}

/// Which nodes the split cuts off.
#[derive(PartialEq)]
enum Sides {
    /// Three nodes next to each other on the ring: some files have every
    /// holder on the far side, and the near side must say it cannot know.
    Arcs,
    /// Every other node by id: each side's ring interleaves with the
    /// other's, the hardest merge.
    Interleaved,
}

/// Six nodes on six hosts split 3|3 for `split` while both sides take
/// uploads, deletes and an overwrite of the same name; uploads through
/// every node and deletions at the moment of the cut, while the split is
/// being detected, are acknowledged all the same. Then the network heals. Within 60 s: one
/// ring of six, every acknowledged upload byte-identical from every node
/// and held by each of its k holders, every acknowledged delete gone
/// everywhere, and the overwrite's winner the same everywhere.
async fn split_and_heal(split: Duration, sides: Sides) {
    let (hosts, tokens) = (Hosts::new(6), tempfile::tempdir().unwrap());
    let nodes = ring_on(&hosts, &write_token(tokens.path(), TOKEN), |_| NodeSetup::default()).await;
    // The hosts to cut off, and the nodes reordered: near side first.
    let mut by_id: Vec<usize> = (0..nodes.len()).collect();
    by_id.sort_by_key(|&i| ringshare::chord::Id::hash(&nodes[i].addr));
    let far_hosts: Vec<usize> = match sides {
        Sides::Arcs => by_id[3..].to_vec(),
        Sides::Interleaved => by_id.iter().copied().skip(1).step_by(2).collect(),
    };
    let mut nodes: Vec<(bool, TestNode)> =
        nodes.into_iter().enumerate().map(|(i, n)| (far_hosts.contains(&i), n)).collect();
    nodes.sort_by_key(|(far, _)| *far);
    let nodes: Vec<TestNode> = nodes.into_iter().map(|(_, n)| n).collect();
    // What every node must serve in the end (name → bytes), and what must be gone.
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut deleted: Vec<String> = Vec::new();
    for j in 0..6u64 {
        let (name, data) = (format!("before-{j}"), pattern(j, 3_000 + j as usize * 500));
        assert!(upload(&nodes[j as usize], &name, &data).await, "{name} before the split");
        expected.insert(name, data);
    }

    // With arcs: a file whose every holder is on the side cut off.
    let far_addrs: Vec<String> = nodes[3..].iter().map(|n| n.addr.clone()).collect();
    let mut far_held = None;
    for n in (0..2_000).filter(|_| sides == Sides::Arcs) {
        let name = format!("far-held-{n}");
        if placement(&nodes[0], &name).await.iter().all(|holder| far_addrs.contains(holder)) {
            far_held = Some(name);
            break;
        }
    }
    if sides == Sides::Arcs {
        let name = far_held.as_ref().expect("a name held on the far side only");
        assert!(upload(&nodes[0], name, b"held beyond the split").await);
    }

    // Files the cut will delete at once: each with its responsible node on
    // the far side and a holder on the near one, which a deletion through
    // the near side reaches once the far node is found lost.
    let mut doomed = Vec::new();
    for n in 0..2_000 {
        let name = format!("doomed-{n}");
        let holders = placement(&nodes[0], &name).await;
        if far_addrs.contains(&holders[0]) && holders.iter().any(|h| !far_addrs.contains(h)) {
            assert!(upload(&nodes[n % 3], &name, b"deleted as the network splits").await, "{name}");
            doomed.push(name);
            if doomed.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(doomed.len(), 3, "names held on both sides with a responsible node on the far one");

    let (near, far) = nodes.split_at(3);
    let split_at = Instant::now();
    hosts.split(&far_hosts);
    // Writes stay available while the split is being detected: uploads
    // through every node, started as the link goes, are acknowledged (on
    // the next live nodes when their holders are across the cut).
    let at_the_cut = nodes.iter().enumerate().map(|(i, via)| async move {
        let (name, data) = (format!("at-the-cut-{i}"), pattern(200 + i as u64, 1_024 + i * 100));
        let acknowledged = upload(via, &name, &data).await;
        (name, data, acknowledged, via.addr.clone())
    });
    // And deletions through the near side whose responsible node is across
    // the cut: tried again on the next live node, which holds a copy.
    let deleting = doomed.iter().enumerate().map(|(i, name)| async move {
        (name, status_of(&near[i % 3], reqwest::Method::DELETE, name).await, near[i % 3].addr.clone())
    });
    let (uploads, deletions) = futures_util::future::join(
        futures_util::future::join_all(at_the_cut),
        futures_util::future::join_all(deleting),
    )
    .await;
    for (name, data, acknowledged, via) in uploads {
        assert!(acknowledged, "{name}, uploaded via {via} as the network split, was not acknowledged");
        expected.insert(name, data);
    }
    for (name, status, via) in deletions {
        assert_eq!(status, StatusCode::OK, "deleting {name} via {via} as the network split");
        deleted.push(name.clone());
    }
    wait_converged_within(Duration::from_secs(30), near).await;
    wait_converged_within(Duration::from_secs(30), far).await;

    // The near side cannot know whether the far side's file exists: 503,
    // never 404, for a read and for a delete (which is recorded all the
    // same, and applies once the sides meet again).
    for (via, far_held) in near.iter().flat_map(|via| far_held.as_ref().map(|name| (via, name))) {
        let status = status_of(via, reqwest::Method::GET, far_held).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "reading {far_held} via {}", via.addr);
    }
    if let Some(far_held) = far_held {
        let status = status_of(&near[0], reqwest::Method::DELETE, &far_held).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "deleting {far_held} beyond the split");
        deleted.push(far_held);
    }

    // Both sides take uploads, deletes of what they uploaded, and an
    // overwrite of one name (the far side's comes later and must win).
    for (side, nodes) in [("near", near), ("far", far)] {
        for j in 0..8u64 {
            let (name, data) = (format!("{side}-{j}"), pattern(100 + j, 2_000 + j as usize * 300));
            let via = &nodes[j as usize % 3];
            assert!(upload(via, &name, &data).await, "{name} during the split, via {}", via.addr);
            expected.insert(name, data);
        }
        for j in 0..2u64 {
            let name = format!("{side}-{j}");
            assert!(delete(&nodes[1], &name).await, "delete {name} during the split");
            expected.remove(&name);
            deleted.push(name);
        }
        let data = format!("written on the {side} side").into_bytes();
        assert!(upload(&nodes[2], "both", &data).await, "the {side} side's overwrite of both");
        expected.insert("both".into(), data);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(split.saturating_sub(split_at.elapsed())).await;

    let healed_at = Instant::now();
    hosts.heal();
    wait_converged_within(Duration::from_secs(60), &nodes).await;
    let one_ring = healed_at.elapsed();
    eventually_within(Duration::from_secs(60).saturating_sub(one_ring), "every write is kept everywhere", || async {
        for node in &nodes {
            for (name, data) in &expected {
                match read(node, name).await {
                    Ok(bytes) if &bytes == data => {}
                    Ok(_) => return Err(format!("{name} via {} has other bytes", node.addr)),
                    Err(status) => return Err(format!("{name} via {}: {status}", node.addr)),
                }
            }
            for name in &deleted {
                if read(node, name).await.is_ok() {
                    return Err(format!("deleted {name} is served via {}", node.addr));
                }
            }
        }
        Ok(())
    })
    .await;
    let everywhere = healed_at.elapsed();
    // And each file is on its k holders (as the healed ring places it), the
    // deleted ones on none: reads alone would pass with one copy.
    eventually_within(Duration::from_secs(60), "every file is on its k holders", || async {
        let mut copies = BTreeMap::new();
        for node in &nodes {
            copies.insert(node.addr.clone(), local_copies(node).await?);
        }
        for (name, data) in &expected {
            for holder in holders_of(&nodes[0], name).await? {
                if copies[&holder].get(name) != Some(&(data.len() as u64)) {
                    return Err(format!("{holder} holds no copy of {name} of {} bytes", data.len()));
                }
            }
        }
        match copies.iter().find_map(|(node, held)| deleted.iter().find(|d| held.contains_key(*d)).map(|d| (node, d))) {
            Some((node, name)) => Err(format!("{node} still holds deleted {name}")),
            None => Ok(()),
        }
    })
    .await;
    eprintln!(
        "split of {} s: one ring {:.1} s after the heal, every file served everywhere after {:.1} s, on its k holders after {:.1} s",
        split.as_secs(),
        one_ring.as_secs_f64(),
        everywhere.as_secs_f64(),
        healed_at.elapsed().as_secs_f64()
    );
}
