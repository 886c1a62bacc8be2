//! Members only: nodes given certificates of one cluster CA (`--tls-dir`)
//! form a ring and move files over mutual TLS, and a stranger cannot call
//! them. The stranger uses a gRPC client generated from `proto/` by this
//! crate's build script (none of the node's own RPC code): over plain
//! HTTP/2, over TLS without a certificate, and with a certificate of
//! another CA. A member whose certificate names another host cannot speak
//! for a node of this one.

use std::time::Duration;

use sha2::Digest;

use ringshare_tests::{Cluster, NodeSetup, client, eventually, metric, pattern, start_ring_with, wait_converged};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

mod stranger {
    pub mod chord {
        tonic::include_proto!("ringshare.chord.v1");
    }
    pub mod files {
        tonic::include_proto!("ringshare.files.v1");
    }
}
use stranger::chord::chord_client::ChordClient;
use stranger::files::files_client::FilesClient;

/// A channel to `addr`: plain HTTP/2 without `tls`, else TLS trusting the
/// CA in `tls.0` and presenting `tls.1`'s certificate if given.
async fn channel(addr: &str, tls: Option<(&std::path::Path, Option<&std::path::Path>)>) -> Result<Channel, String> {
    let endpoint = match tls {
        None => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        Some((ca_dir, identity)) => {
            let ca = std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap();
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(dir) = identity {
                let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
                config = config.identity(Identity::from_pem(read("node.crt"), read("node.key")));
            }
            Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(config).unwrap()
        }
    };
    endpoint.connect_timeout(Duration::from_secs(5)).connect().await.map_err(|e| format!("{e:?}"))
}

/// Every call a stranger could make to hurt or read the ring, on `channel`;
/// answers each call's gRPC code.
async fn every_call(channel: Channel, victim: &str, file: &str) -> Vec<(&'static str, tonic::Code)> {
    let mut chord = ChordClient::new(channel.clone());
    let mut files = FilesClient::new(channel);
    let node = |addr: &str| stranger::chord::Node { id: 1, addr: addr.to_owned() };
    let header = stranger::files::StoreRequest {
        part: Some(stranger::files::store_request::Part::Header(stranger::files::StoreHeader {
            name: "planted".into(),
            overwrite: true,
            ..Default::default()
        })),
    };
    let chunk =
        stranger::files::StoreRequest { part: Some(stranger::files::store_request::Part::Chunk(b"x".to_vec())) };
    vec![
        (
            "Files/Delete",
            code(files.delete(stranger::files::DeleteRequest { name: file.into(), ..Default::default() }).await),
        ),
        ("Files/Store", code(files.store(futures_util::stream::iter([header, chunk])).await)),
        (
            "Files/Fetch",
            code(files.fetch(stranger::files::FetchRequest { name: file.into(), ..Default::default() }).await),
        ),
        ("Files/List", code(files.list(stranger::files::ListRequest {}).await)),
        ("Files/Stat", code(files.stat(stranger::files::StatRequest { name: file.into() }).await)),
        ("Chord/GetNeighbours", code(chord.get_neighbours(stranger::chord::Empty {}).await)),
        ("Chord/Notify", code(chord.notify(node("127.0.0.9:9")).await)),
        (
            "Chord/Leave",
            code(chord.leave(stranger::chord::LeaveRequest { leaver: Some(node(victim)), neighbours: None }).await),
        ),
        ("Chord/FindSuccessor", code(chord.find_successor(stranger::chord::FindSuccessorRequest { key: 7 }).await)),
        ("Chord/Time", code(chord.time(stranger::chord::Empty {}).await)),
        (
            "Chord/Merge",
            code(
                chord
                    .merge(stranger::chord::MergeRequest {
                        pred: Some(node("127.0.0.9:9")),
                        succ: Some(node("127.0.0.8:8")),
                        hops: 0,
                    })
                    .await,
            ),
        ),
    ]
}

/// The gRPC code a call ended with.
fn code<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    answer.map_or_else(|status| status.code(), |_| tonic::Code::Ok)
}

async fn refused(node: &ringshare_tests::TestNode, reason: &str) -> f64 {
    let text = client().get(node.at("/metrics")).send().await.unwrap().text().await.unwrap();
    let wanted = format!("ringshare_refused_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&wanted)).map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_files_over_mutual_tls_and_strangers_are_refused_every_call() {
    let cluster = Cluster::new();
    let certs = cluster.node("127.0.0.1");
    let nodes = start_ring_with(3, || NodeSetup { tls_dir: Some(certs.clone()), ..NodeSetup::default() }).await;
    wait_converged(&nodes).await;

    // Members store and read across the ring (every copy travelled over TLS).
    let data = pattern(5, 700_000);
    let http = client();
    let put = http.put(nodes[0].at("/files/report.bin")).body(data.clone()).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let stored: serde_json::Value = put.json().await.unwrap();
    assert_eq!(stored["holders"].as_array().unwrap().len(), 3, "three copies over TLS: {stored}");
    let got = http.get(nodes[2].at("/files/report.bin")).send().await.unwrap().bytes().await.unwrap();
    assert!(got == data, "read back byte for byte");

    let victim = nodes[1].addr.clone();
    // Plain HTTP/2: every call refused as unauthenticated.
    let plain = every_call(channel(&victim, None).await.unwrap(), &victim, "report.bin").await;
    for (call, code) in &plain {
        assert_eq!(*code, tonic::Code::Unauthenticated, "plain {call}: {plain:?}");
    }
    // TLS that trusts the cluster's CA but presents no certificate: the same.
    let anonymous = channel(&victim, Some((&cluster.ca(), None))).await.unwrap();
    let anonymous = every_call(anonymous, &victim, "report.bin").await;
    for (call, code) in &anonymous {
        assert_eq!(*code, tonic::Code::Unauthenticated, "anonymous TLS {call}: {anonymous:?}");
    }
    // A certificate of another CA: the handshake itself fails.
    let elsewhere = Cluster::new();
    let foreign = channel(&victim, Some((&cluster.ca(), Some(&elsewhere.node("127.0.0.1"))))).await;
    let refused_outright = match foreign {
        Err(_) => true,
        Ok(channel) => every_call(channel, &victim, "report.bin").await.iter().all(|(_, c)| *c != tonic::Code::Ok),
    };
    assert!(refused_outright, "a certificate of another CA got through");
    // A member of this cluster whose certificate names another host cannot
    // speak for a node of this one.
    let other_host = cluster.node("127.0.0.2");
    let member = channel(&victim, Some((&cluster.ca(), Some(&other_host)))).await.unwrap();
    let mut chord = ChordClient::new(member);
    // A well-formed claim (the id is the hash of the address), so that only
    // the certificate is wrong.
    let claimed = &nodes[0].addr;
    let id = u64::from_be_bytes(sha2::Sha256::digest(claimed.as_bytes())[..8].try_into().unwrap());
    let claim = stranger::chord::LeaveRequest {
        leaver: Some(stranger::chord::Node { id, addr: claimed.clone() }),
        neighbours: None,
    };
    let denied = chord.leave(claim).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    // Its own neighbours it may read: it is a member.
    assert!(chord.get_neighbours(stranger::chord::Empty {}).await.is_ok());

    // Nothing was lost: the file is whole everywhere, the ring still whole.
    wait_converged(&nodes).await;
    for node in &nodes {
        let got = http.get(node.at("/files/report.bin")).send().await.unwrap().bytes().await.unwrap();
        assert!(got == data, "{} still serves the file", node.addr);
        let planted = http.get(node.at("/files/planted")).send().await.unwrap().status();
        assert_eq!(planted, reqwest::StatusCode::NOT_FOUND, "nothing was planted");
    }
    // Counted: 2 × 9 calls without a certificate, a failed handshake, a false claim.
    assert!(refused(&nodes[1], "no_certificate").await >= 18.0);
    eventually("the failed handshake was not counted", || async {
        if refused(&nodes[1], "handshake").await >= 1.0 { Ok(()) } else { Err("0".into()) }
    })
    .await;
    assert!(refused(&nodes[1], "claim").await >= 1.0);
}

#[tokio::test]
async fn a_node_without_certificates_stays_open_and_rest_stays_plain_http_with_them() {
    // Plain HTTP REST and the RPCs of a node without --tls-dir, as before.
    let open = NodeSetup { tls_dir: None, ..NodeSetup::default() }.start().await;
    let plain = every_call(channel(&open.addr, None).await.unwrap(), &open.addr, "nothing").await;
    let (_, code) = plain.iter().find(|(call, _)| *call == "Chord/GetNeighbours").unwrap();
    assert_eq!(*code, tonic::Code::Ok, "{plain:?}");

    // With certificates, REST still answers over plain HTTP, and TLS is
    // open to clients without a certificate.
    let cluster = Cluster::new();
    let member = NodeSetup { tls_dir: Some(cluster.node("127.0.0.1")), ..NodeSetup::default() }.start().await;
    let put = client().put(member.at("/files/plain")).body("over plain http").send().await.unwrap();
    assert!(put.status().is_success());
    let got = client().get(member.at("/files/plain")).send().await.unwrap().text().await.unwrap();
    assert_eq!(got, "over plain http");
    // A TLS client without a certificate (a browser) completes the handshake.
    let tls = channel(&member.addr, Some((&cluster.ca(), None))).await;
    assert!(tls.is_ok(), "a TLS client without a certificate completes the handshake: {tls:?}");
}

/// Copies `from`'s certificate files over `to`'s, each by rename (as an
/// operator's `install` or `mv` would), the key last.
fn install(from: &std::path::Path, to: &std::path::Path) {
    for file in ["ca.crt", "node.crt", "node.key"] {
        let temp = to.join(format!(".{file}.new"));
        std::fs::copy(from.join(file), &temp).unwrap();
        std::fs::rename(&temp, to.join(file)).unwrap();
    }
}

/// Whether a member of `cluster` (certificate for 127.0.0.1) is let in by `node`.
async fn lets_in(cluster: &Cluster, node: &ringshare_tests::TestNode) -> bool {
    let Ok(channel) = channel(&node.addr, Some((&cluster.ca(), Some(&cluster.node("127.0.0.1"))))).await else {
        return false;
    };
    ChordClient::new(channel).get_neighbours(stranger::chord::Empty {}).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_replaced_in_place_take_over_without_a_restart() {
    let (old, new) = (Cluster::new(), Cluster::new());
    // Each node its own folder, with a certificate that expires tomorrow.
    let folders: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for folder in &folders {
        ringshare::tls::make_node(&old.ca(), "127.0.0.1:1", folder.path(), 1).unwrap();
    }
    let first = NodeSetup { tls_dir: Some(folders[0].path().into()), ..NodeSetup::default() }.start().await;
    let join = Some(first.addr.clone());
    let second = NodeSetup { join, tls_dir: Some(folders[1].path().into()), ..NodeSetup::default() }.start().await;
    let nodes = [first, second];
    wait_converged(&nodes).await;
    assert!(lets_in(&old, &nodes[0]).await && !lets_in(&new, &nodes[0]).await);

    // A replacement that does not load is refused; the old certificates serve on.
    std::fs::write(folders[0].path().join(".node.crt.new"), "not a certificate").unwrap();
    std::fs::rename(folders[0].path().join(".node.crt.new"), folders[0].path().join("node.crt")).unwrap();
    eventually("the broken certificate was not refused", || async {
        let refused = metric(&nodes[0], "ringshare_tls_reloads_total{outcome=\"refused\"}").await;
        if refused >= 1.0 { Ok(()) } else { Err(format!("{refused}")) }
    })
    .await;
    assert!(lets_in(&old, &nodes[0]).await, "the old certificates still serve");

    // The whole cluster moves to certificates of a new CA, in place.
    for folder in &folders {
        let fresh = tempfile::tempdir().unwrap();
        ringshare::tls::make_node(&new.ca(), "127.0.0.1:1", fresh.path(), 30).unwrap();
        install(fresh.path(), folder.path());
    }
    for node in &nodes {
        eventually("the new certificates never took over", || async {
            match (lets_in(&new, node).await, lets_in(&old, node).await) {
                (true, false) => Ok(()),
                other => Err(format!("new, old let in: {other:?}")),
            }
        })
        .await;
        assert!(metric(node, "ringshare_tls_reloads_total{outcome=\"taken\"}").await >= 1.0);
    }
    // And the nodes still talk to each other with them.
    wait_converged(&nodes).await;
    let put = client().put(nodes[0].at("/files/after-rotation")).body("rotated").send().await.unwrap();
    let stored: serde_json::Value = put.json().await.unwrap();
    assert_eq!(stored["holders"].as_array().map(Vec::len), Some(2), "{stored}");
}

/// Reads what the node sends on `tcp` until it closes (10 s at most).
async fn until_closed(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the node kept the connection open");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_are_cut_off_and_a_stalled_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let node =
        NodeSetup { body_timeout: Duration::from_secs(1), max_connections: 8, ..NodeSetup::default() }.start().await;
    // An upload that stops sending is abandoned: nothing of it is stored.
    let mut stalled = tokio::net::TcpStream::connect(&node.addr).await.unwrap();
    let head = format!("PUT /files/stalled HTTP/1.1\r\nhost: {}\r\ncontent-length: 1000\r\n\r\n", node.addr);
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&[7u8; 100]).await.unwrap();
    let started = std::time::Instant::now();
    let answer = until_closed(&mut stalled).await;
    assert!(started.elapsed() < Duration::from_secs(8), "cut off after {:?}", started.elapsed());
    assert!(!answer.starts_with("HTTP/1.1 2"), "a stalled upload was taken: {answer}");
    let status = client().get(node.at("/files/stalled")).send().await.unwrap().status();
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "nothing of it is kept");

    // Past the cap of open connections, one more is told so at once.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut tcp = tokio::net::TcpStream::connect(&node.addr).await.unwrap();
        tcp.write_all(b"G").await.unwrap(); // a request begun, never finished
        held.push(tcp);
    }
    let mut extra = tokio::net::TcpStream::connect(&node.addr).await.unwrap();
    extra.write_all(b"GET /ring HTTP/1.1\r\n\r\n").await.unwrap();
    let told = until_closed(&mut extra).await;
    assert!(told.starts_with("HTTP/1.1 503") && told.contains("\"overloaded\""), "{told}");
    // The held ones are closed by the header timeout; then the node serves again.
    drop(held);
    eventually("the node never served again after the flood", || async {
        match client().get(node.at("/ring")).send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// A client that opens HTTP/2 streams and resets each at once (the "rapid
/// reset" flood, CVE-2023-44487) has its connection closed long before it
/// sent them all, and the node serves everyone else, during the flood and
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reset_http2_streams_closes_that_connection_and_the_node_serves_on() {
    const FLOOD: usize = 10_000;
    let node = NodeSetup::default().start().await;
    let data = pattern(41, 50_000);
    ringshare_tests::put(&node, "kept.bin", &data).await;
    let tcp = tokio::net::TcpStream::connect(&node.addr).await.unwrap();
    let (mut flood, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 with prior knowledge");
    let driven = tokio::spawn(connection);
    let during = tokio::spawn({
        let url = node.at("/files/kept.bin");
        async move { client().get(url).send().await.unwrap().bytes().await.unwrap() }
    });
    let mut sent = 0;
    let flooding = async {
        loop {
            if sent == FLOOD {
                break None;
            }
            flood = match flood.ready().await {
                Ok(ready) => ready,
                Err(e) => break Some(e),
            };
            let request = http::Request::get(format!("http://{}/files/kept.bin", node.addr)).body(()).unwrap();
            match flood.send_request(request, true) {
                Ok((_answer, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(e) => break Some(e),
            }
        }
    };
    let cut = tokio::time::timeout(Duration::from_secs(60), flooding).await.expect("the flood ends within 60 s");
    let cut = cut.unwrap_or_else(|| panic!("{FLOOD} streams opened and reset on one connection, none refused"));
    // The node's GOAWAY (ENHANCE_YOUR_CALM), or, when the client's next
    // frame goes out before it reads that (a busy machine), the connection
    // the node closed after it.
    let closed_by_node = cut.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || cut.is_io();
    assert!(closed_by_node, "after {sent} streams: {cut:?}");
    let ended = tokio::time::timeout(Duration::from_secs(10), driven).await.expect("the connection ends");
    assert!(ended.unwrap().is_err(), "the node closed the flooding connection");
    // Everyone else is served.
    assert_eq!(during.await.unwrap(), data, "a download during the flood");
    let got = client().get(node.at("/files/kept.bin")).send().await.unwrap();
    assert_eq!(got.status(), reqwest::StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_the_limits_are_refused_and_big_listings_travel_in_pieces() {
    use futures_util::StreamExt;
    const FILES: usize = 2_100;
    let nodes = start_ring_with(2, || NodeSetup { replicas: 1, ..NodeSetup::default() }).await;
    wait_converged(&nodes).await;
    let member = Cluster::shared().member_channel(&nodes[0]).await;
    let (mut chord, mut files) = (ChordClient::new(member.clone()), FilesClient::new(member));

    // A member (right certificate) sending messages past the limits.
    let huge = stranger::chord::Node { id: 1, addr: "a".repeat(100 << 10) };
    let refused = chord.notify(huge).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "a 100 KiB ring message: {refused:?}");
    let refused = files.stat(stranger::files::StatRequest { name: "n".repeat(5 << 20) }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "a 5 MiB stat: {refused:?}");
    let header = stranger::files::StoreRequest {
        part: Some(stranger::files::store_request::Part::Header(stranger::files::StoreHeader {
            name: "too-big-a-chunk".into(),
            ..Default::default()
        })),
    };
    let chunk =
        stranger::files::StoreRequest { part: Some(stranger::files::store_request::Part::Chunk(vec![1; 5 << 20])) };
    let refused = files.store(futures_util::stream::iter([header, chunk])).await.unwrap_err();
    // Inside a stream the store fails as a body that could not be read.
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "a 5 MiB chunk: {refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");
    let status = client().get(nodes[0].at("/files/too-big-a-chunk")).send().await.unwrap().status();
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "nothing of it is kept");

    // Enough files that one node's listing takes several messages.
    let http = client();
    let uploads = futures_util::stream::iter(0..FILES).map(|i| {
        let (http, url) = (http.clone(), nodes[i % 2].at(&format!("/files/f-{i:05}")));
        async move { http.put(url).body(format!("file {i}")).send().await.and_then(|r| r.error_for_status()) }
    });
    let failed = uploads.buffer_unordered(16).filter(|r| std::future::ready(r.is_err())).count().await;
    assert_eq!(failed, 0, "every upload was taken");
    let (mut messages, mut listed) = (0, 0);
    for node in &nodes {
        let mut files = FilesClient::new(Cluster::shared().member_channel(node).await);
        let mut replies = files.list(stranger::files::ListRequest {}).await.unwrap().into_inner();
        while let Some(reply) = replies.message().await.unwrap() {
            assert!(reply.entries.len() <= 1024, "a listing message holds 1,024 entries at most");
            messages += 1;
            listed += reply.entries.len();
        }
    }
    assert_eq!(listed, FILES, "between them the nodes list every file once (k = 1)");
    assert!(messages >= 3, "{FILES} entries came in {messages} messages");
    // The network listing puts the pieces back together.
    let all: Vec<serde_json::Value> =
        http.get(nodes[1].at("/files?scope=network")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all.len(), FILES, "the network listing has every file");
    // The ring is still whole after the refusals.
    wait_converged(&nodes).await;
}
