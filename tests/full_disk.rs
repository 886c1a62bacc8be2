//! A full disk is an answer, not a crash. Each node's data folder sits on a
//! small tmpfs the test mounts (CI runs as root): an upload past the room
//! a node keeps free is `507 insufficient-storage` and leaves nothing, reads
//! and deletions go on, a holder that is full is skipped for the next live
//! successor (and counted), and a disk filled to the last byte leaves the
//! tombstones and the outbox whole for the next start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use ringshare_tests::{
    NodeSetup, TestNode, Vhost, client, metric, pattern, placement, start_ring_with, wait_converged,
};
use serde_json::Value;

/// A tmpfs of `mib` MiB mounted on a fresh folder; unmounted on drop, even
/// when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("a mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a tmpfs needs root (CI runs as root)");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A node's folder on this disk.
    fn folder(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(self.path()).expect("a folder on the tmpfs")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a node still running in a failed test lets go later.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A node whose uploads must leave `reserve_mib` MiB free.
fn keeping(reserve_mib: u64) -> NodeSetup {
    let mut setup = NodeSetup { replicas: 1, ..NodeSetup::default() };
    setup.limits.reserve_free_bytes = reserve_mib << 20;
    setup
}

async fn put(node: &TestNode, name: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let answer = client().put(node.at(&format!("/files/{name}"))).body(body).send().await.unwrap();
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn get(node: &TestNode, name: &str) -> (StatusCode, Vec<u8>) {
    let answer = client().get(node.at(&format!("/files/{name}"))).send().await.unwrap();
    (answer.status(), answer.bytes().await.unwrap().to_vec())
}

/// The stored files' names on `node`'s disk, and what its temp folder holds.
fn on_disk(node: &TestNode) -> (Vec<String>, Vec<String>) {
    let mut files: Vec<String> = std::fs::read_dir(node.data().join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    (files, node.temp_files())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_reserve_uploads_are_507_and_leave_nothing_while_reads_and_deletes_go_on() {
    let disk = Tmpfs::mount(40);
    let node = keeping(8).start_in(disk.folder()).await;
    let small = pattern(1, 100_000);
    assert_eq!(put(&node, "small", small.clone()).await.0, StatusCode::CREATED);

    // 6 MiB at a time until the node says it has no room (40 MiB, 8 kept free).
    let (mut stored, mut refused) = (Vec::new(), None);
    for i in 0..10 {
        let name = format!("big-{i}");
        match put(&node, &name, pattern(i + 2, 6 << 20)).await {
            (StatusCode::CREATED, _) => stored.push(name),
            (status, body) => {
                refused = Some((name, status, body));
                break;
            }
        }
    }
    let (refused_name, status, body) = refused.expect("a 40 MiB disk took 60 MiB");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["code"], "insufficient-storage", "{body}");
    assert!(body["error"].as_str().unwrap().contains("kept free"), "says why: {body}");
    assert!((3..=5).contains(&stored.len()), "{} of 6 MiB fit on 32 MiB of room", stored.len());

    // Nothing of the refused upload is kept; every other file is whole.
    let (files, temp) = on_disk(&node);
    assert!(!files.contains(&refused_name) && temp.is_empty(), "left behind: {files:?} {temp:?}");
    assert_eq!(get(&node, &refused_name).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&node, "small").await, (StatusCode::OK, small.clone()));
    for (i, name) in stored.iter().enumerate() {
        assert_eq!(get(&node, name).await.1, pattern(i as u64 + 2, 6 << 20), "{name} reads back whole");
    }

    // A deletion needs no room for content: it goes through, and makes room.
    let gone = client().delete(node.at(&format!("/files/{}", stored[0]))).send().await.unwrap();
    assert!(gone.status().is_success(), "{}", gone.text().await.unwrap());
    assert_eq!(put(&node, &refused_name, pattern(99, 6 << 20)).await.0, StatusCode::CREATED, "room again");
    assert_eq!(get(&node, &stored[0]).await.0, StatusCode::NOT_FOUND);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_holder_is_skipped_for_the_next_live_successor_and_counted() {
    let disk = Tmpfs::mount(16);
    // No repair pass during the test: it would try the full node again.
    let quiet = || NodeSetup { repair_every: Duration::from_secs(600), ..NodeSetup::default() };
    let full = quiet();
    let mut nodes = start_ring_with(3, quiet).await;
    let join = Some(nodes[0].addr.clone());
    let mut small = NodeSetup { join, ..full };
    small.limits.reserve_free_bytes = 4 << 20;
    nodes.push(small.start_in(disk.folder()).await);
    wait_converged(&nodes).await;
    let full = nodes[3].addr.clone();

    // A name the full node should hold, but not as the responsible node.
    let mut name = None;
    for i in 0..200 {
        let candidate = format!("wide-{i}");
        let holders = placement(&nodes[0], &candidate).await;
        if holders[0] != full && holders[1..].contains(&full) {
            name = Some((candidate, holders));
            break;
        }
    }
    let (name, holders) = name.expect("one of 200 names has the full node second or third");
    let data = pattern(7, 20 << 20);
    let via = nodes.iter().find(|n| n.addr == holders[0]).unwrap();
    let (status, stored) = put(via, &name, data.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let held: Vec<&str> = stored["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(held.len(), 3, "three copies all the same: {stored}");
    assert!(!held.contains(&full.as_str()), "the full node is skipped: {stored}");
    assert_eq!(metric(via, "ringshare_full_holders_skipped_total").await, 1.0, "and counted");
    let (files, temp) = on_disk(&nodes[3]);
    assert!(!files.contains(&name) && temp.is_empty(), "nothing partial on the full node: {files:?} {temp:?}");
    for node in &nodes {
        assert!(get(node, &name).await.1 == data, "{} serves it whole", node.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_to_the_last_byte_leaves_the_tombstones_and_the_outbox_whole() {
    let vhost = Vhost::new();
    let disk = Tmpfs::mount(24);
    let mut setup = keeping(0);
    setup.amqp = Some(vhost.url());
    let node = setup.start_in(disk.folder()).await;
    let kept = pattern(3, 300_000);
    assert_eq!(put(&node, "kept", kept.clone()).await.0, StatusCode::CREATED);
    assert_eq!(put(&node, "deleted-first", pattern(4, 1000)).await.0, StatusCode::CREATED);
    let gone = client().delete(node.at("/files/deleted-first")).send().await.unwrap();
    assert!(gone.status().is_success());

    // Someone else fills the disk to the last byte.
    let filler = disk.path().join("filler");
    fill(&filler);
    let (status, body) = put(&node, "one-too-many", pattern(5, 1 << 20)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["code"], "insufficient-storage", "{body}");
    // A deletion cannot be recorded either: it says so, and loses nothing.
    let refused = client().delete(node.at("/files/kept")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::INSUFFICIENT_STORAGE, "{}", refused.text().await.unwrap());
    assert_eq!(get(&node, "kept").await, (StatusCode::OK, kept.clone()), "reads go on");
    let (files, temp) = on_disk(&node);
    assert_eq!((files, temp), (vec!["kept".to_owned()], vec![]), "nothing partial");
    assert!(std::fs::read_dir(node.state().join("tmp")).unwrap().next().is_none(), "no half-written tombstone");

    // Room again, and a restart: the outbox opens, the tombstone holds.
    let folder = node.stop().await;
    std::fs::remove_file(&filler).unwrap();
    let mut setup = keeping(0);
    setup.amqp = Some(vhost.url());
    let node = setup.start_in(folder).await;
    assert_eq!(get(&node, "kept").await, (StatusCode::OK, kept));
    assert_eq!(get(&node, "deleted-first").await.0, StatusCode::NOT_FOUND);
    assert_eq!(put(&node, "after", pattern(6, 1000)).await.0, StatusCode::CREATED);
    let gone = client().delete(node.at("/files/kept")).send().await.unwrap();
    assert!(gone.status().is_success(), "deletes work again");
    node.stop().await;
}

/// Writes `path` until the disk has no byte left (bounded by the tmpfs).
fn fill(path: &PathBuf) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => assert!(std::time::Instant::now() < deadline, "the disk never filled"),
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // The last partial block too.
    for _ in 0..64 {
        if file.write(&[0u8; 1024]).is_err() {
            break;
        }
    }
    let _ = file.flush();
}

/// Read leases (`files::lease`): every holder serves its own copy without
/// asking the others, and a holder that misses an overwrite (its disk is
/// full) while it holds a lease never serves the old bytes once the
/// overwrite is acknowledged: the answer waits until the lease ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_misses_an_overwrite_under_a_read_lease_never_serves_the_old_bytes_after_it() {
    // Long enough that an overwrite answered without waiting would come
    // well inside the lease.
    const LEASE: Duration = Duration::from_secs(10);
    let disk = Tmpfs::mount(16);
    // No repair pass: it would try the full node again.
    let leased =
        || NodeSetup { read_lease: Some(LEASE), repair_every: Duration::from_secs(600), ..NodeSetup::default() };
    let mut nodes = start_ring_with(2, leased).await;
    let mut small = NodeSetup { join: Some(nodes[0].addr.clone()), ..leased() };
    // Room for a small file, not for a 2 MiB one.
    small.limits.reserve_free_bytes = (16 << 20) - (1 << 20);
    nodes.push(small.start_in(disk.folder()).await);
    wait_converged(&nodes).await;
    let full = nodes[2].addr.clone();
    let mut name = None;
    for i in 0..200 {
        let candidate = format!("leased-{i}");
        if placement(&nodes[0], &candidate).await[0] != full {
            name = Some(candidate);
            break;
        }
    }
    let name = name.expect("one of 200 names has another responsible node");
    let responsible = placement(&nodes[0], &name).await[0].clone();
    let via = nodes.iter().find(|n| n.addr == responsible).unwrap();
    let old = pattern(1, 4 << 10);
    let (status, stored) = put(via, &name, old.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");

    // Every node comes to serve its own copy under a lease.
    for node in &nodes {
        ringshare_tests::eventually_within(Duration::from_secs(60), "a read served under a lease", || async {
            let before = metric(node, "ringshare_reads_under_lease_total").await;
            let (status, body) = get(node, &name).await;
            let after = metric(node, "ringshare_reads_under_lease_total").await;
            match (status, after > before) {
                (StatusCode::OK, true) if body == old => Ok(()),
                (status, leased) => Err(format!("{}: {status}, under a lease: {leased}", node.addr)),
            }
        })
        .await;
    }

    let new = pattern(5, 2 << 20);
    let (status, stored) = put(via, &format!("{name}?overwrite=true"), new.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let held: Vec<&str> = stored["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert!(!held.contains(&full.as_str()), "the full node missed the overwrite: {stored}");
    assert!(metric(via, "ringshare_lease_waits_total").await >= 1.0, "the answer waited for its lease");
    let (status, body) = get(&nodes[2], &name).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == new, "the node that missed the overwrite served {} bytes, not the new version", body.len());
}
