//! A whole network at work (real nodes, real plugins, loopback): an 8-node
//! ring with k = 3 takes 50 files from 0 bytes to over 200 MiB through
//! random nodes and serves each, byte-identical, through other random nodes.

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use ringshare_tests::{TestNode, blake3_hex, client, eventually, pattern};
use serde_json::Value;

const FILES: usize = 50;
const LARGEST: usize = (200 << 20) + 3;

/// File sizes: empty, the largest, and the rest spread from a byte to 4 MiB.
fn sizes(rng: &mut StdRng) -> Vec<usize> {
    let mut sizes = vec![0, LARGEST];
    sizes.extend((2..FILES).map(|i| match i % 3 {
        0 => rng.random_range(1..1024),
        1 => rng.random_range(1024..256 << 10),
        _ => rng.random_range(256 << 10..4 << 20),
    }));
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_files_up_to_200_mib_through_random_nodes_of_an_eight_node_ring() {
    let nodes = ringshare_tests::start_ring(8).await;
    let pick = |rng: &mut StdRng, not: Option<usize>| loop {
        let i = rng.random_range(0..nodes.len());
        if Some(i) != not {
            return i;
        }
    };

    let http = client();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut stored: Vec<(String, usize, String, usize)> = Vec::new();
    for (i, size) in sizes(&mut rng).into_iter().enumerate() {
        let name = format!("net-{i:02}-{size}.bin");
        let data = pattern(i as u64 + 1, size);
        let sha = blake3_hex(&data);
        let via = pick(&mut rng, None);
        let put = http.put(nodes[via].at(&format!("/files/{name}"))).body(data).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::CREATED, "{name} via {}", nodes[via].addr);
        let reply: Value = put.json().await.unwrap();
        assert_eq!(reply["blake3"], sha, "{name}");
        assert_eq!(reply["size"], size, "{name}");
        stored.push((name, size, sha, via));
    }

    for (name, size, sha, via) in &stored {
        let from: &TestNode = &nodes[pick(&mut rng, Some(*via))];
        let response = http.get(from.at(&format!("/files/{name}"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name} from {}", from.addr);
        assert_eq!(response.content_length(), Some(*size as u64), "{name} from {}", from.addr);
        let mut body = response.bytes_stream();
        let (mut hasher, mut got) = (blake3::Hasher::new(), 0usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("{name} from {}: {e}", from.addr));
            got += chunk.len();
            hasher.update(&chunk);
        }
        assert_eq!(got, *size, "{name} from {}", from.addr);
        assert_eq!(&hasher.finalize().to_hex().to_string(), sha, "{name} from {}", from.addr);
    }

    // The network listing has all 50, each on its 3 holders once the copies
    // still in flight after the write quorum's answer have landed.
    let lister = &nodes[pick(&mut rng, None)];
    eventually("not every file has 3 holders", || async {
        let listing: Vec<Value> =
            http.get(lister.at("/files?scope=network")).send().await.unwrap().json().await.unwrap();
        assert_eq!(listing.len(), FILES);
        let short: Vec<&Value> = listing.iter().filter(|e| e["holders"].as_array().unwrap().len() != 3).collect();
        if short.is_empty() { Ok(()) } else { Err(format!("{short:?}")) }
    })
    .await;
}
