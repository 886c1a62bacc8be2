//! The message size limits: what a node sends in pieces stays under what
//! its peers take.

use bytes::Bytes;
use prost::Message;

use super::files_server::list_batches;
use super::{FILES_MESSAGE_MAX, LIST_BATCH, pieces};
use crate::integrity::Digest;
use crate::plugins::FileEntry;
use crate::store::MAX_NAME_BYTES;

#[test]
fn pieces_cover_the_bytes_in_order_and_none_is_too_big() {
    let bytes = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
    for max in [1, 7, 32, 4096, 10_000, 20_000] {
        let cut: Vec<Bytes> = pieces(bytes.clone(), max).collect();
        assert!(cut.iter().all(|p| !p.is_empty() && p.len() <= max), "pieces of {max}");
        assert_eq!(cut.concat(), bytes.as_ref(), "pieces of {max} rejoin");
        assert_eq!(cut.len(), bytes.len().div_ceil(max));
    }
    assert_eq!(pieces(Bytes::new(), 8).count(), 0, "nothing to send is no message");
}

fn entry(i: usize) -> FileEntry {
    let name = format!("{i:08}{}", "n".repeat(MAX_NAME_BYTES - 8));
    FileEntry { name, size: u64::MAX, blake3: Some(Digest([0xff; 32])), modified_ns: u64::MAX }
}

#[test]
fn a_listing_of_many_files_travels_in_messages_under_the_limit_and_loses_none() {
    let files = 2 * LIST_BATCH + 5;
    let entries: Vec<FileEntry> = (0..files).map(entry).collect();
    let deleted: Vec<(String, u64)> = (0..LIST_BATCH + 1).map(|i| (entry(i).name, u64::MAX)).collect();
    let batches: Vec<_> = list_batches(&entries, deleted.clone()).collect();
    assert_eq!(batches.len(), 3);
    for batch in &batches {
        assert!(batch.entries.len() <= LIST_BATCH && batch.deleted.len() <= LIST_BATCH);
        // The longest names and largest numbers: still well under the limit.
        assert!(batch.encoded_len() < FILES_MESSAGE_MAX / 4, "{} bytes", batch.encoded_len());
    }
    let names: Vec<String> = batches.iter().flat_map(|b| b.entries.iter().map(|e| e.name.clone())).collect();
    assert_eq!(names, entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>(), "every entry, in order");
    let mut gone: Vec<(String, u64)> = batches.into_iter().flat_map(|b| b.deleted).collect();
    gone.sort();
    let mut want = deleted;
    want.sort();
    assert_eq!(gone, want, "every tombstone");
}

#[test]
fn an_empty_listing_is_one_empty_message_and_unhashed_files_are_left_out() {
    let batches: Vec<_> = list_batches(&[], Vec::new()).collect();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].entries.is_empty() && batches[0].deleted.is_empty());
    let unhashed = FileEntry { blake3: None, ..entry(1) };
    let batches: Vec<_> = list_batches(&[unhashed, entry(2)], Vec::new()).collect();
    assert_eq!(batches[0].entries.len(), 1, "a file not hashed yet is not offered to other nodes");
}

/// Decodes `bytes` as a `T`, as a node's service would, and answers it.
fn decoded<T: Message + Default>(bytes: &[u8]) -> Option<T> {
    T::decode(bytes).ok()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
    /// Fuzzed: arbitrary bytes as every message a node decodes, through the
    /// checks its services make. Nothing panics, and whatever passes the
    /// checks is what the node may trust: a node whose id is the hash of
    /// its 1 to 255 byte address, an entry whose name is a file name and
    /// whose hash is 32 bytes or none.
    #[test]
    fn fuzzed_messages_are_refused_or_checked(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        use super::convert::{entry_from_pb, neighbours_from_pb, node_from_pb, step_from_pb};
        use super::{files_pb as f, pb as c};
        let trusted = |node: &crate::chord::NodeRef| {
            node.id == crate::chord::Id::hash(&node.addr) && (1..=255).contains(&node.addr.len())
        };
        if let Some(node) = decoded::<c::Node>(&bytes) && let Ok(node) = node_from_pb(node) {
            proptest::prop_assert!(trusted(&node));
        }
        if let Some(n) = decoded::<c::Neighbours>(&bytes) {
            let n = neighbours_from_pb(n);
            proptest::prop_assert!(n.predecessor.iter().chain(&n.successors).all(trusted));
        }
        if let Some(step) = decoded::<c::FindSuccessorResponse>(&bytes) {
            let nodes = match step_from_pb(step) {
                crate::chord::Step::Done(nodes) => nodes,
                crate::chord::Step::Next { closer, successors } => closer.into_iter().chain(successors).collect(),
            };
            proptest::prop_assert!(nodes.iter().all(trusted));
        }
        if let Some(leave) = decoded::<c::LeaveRequest>(&bytes) && let Some(leaver) = leave.leaver {
            let _ = node_from_pb(leaver);
        }
        let _ = (decoded::<c::FindSuccessorRequest>(&bytes), decoded::<c::NodeList>(&bytes));
        for entry in decoded::<f::Entry>(&bytes).into_iter().chain(decoded::<f::StatReply>(&bytes).and_then(|r| r.entry)) {
            if let Ok(entry) = entry_from_pb(entry) {
                proptest::prop_assert!(crate::store::FileName::parse(&entry.name).is_ok());
            }
        }
        if let Some(list) = decoded::<f::ListReply>(&bytes) {
            for entry in list.entries {
                let _ = entry_from_pb(entry);
            }
        }
        if let Some(f::StoreRequest { part: Some(f::store_request::Part::Header(h)) }) = decoded(&bytes) {
            let _ = crate::store::FileName::parse(&h.name);
        }
        let _ = (decoded::<f::FetchRequest>(&bytes), decoded::<f::DeleteRequest>(&bytes), decoded::<f::FetchReply>(&bytes));
    }

    /// Fuzzed entries from a peer: names of any kind, hashes of any length.
    #[test]
    fn fuzzed_entries_are_refused_or_checked(
        name in "\\PC{0,20}|[./\\\\\\x00]{0,3}|.{250,260}",
        hash in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
    ) {
        let wire = crate::rpc::files_pb::Entry { name: name.clone(), size: 1, blake3: Bytes::from(hash.clone()), modified_ns: 1 };
        match super::convert::entry_from_pb(wire) {
            Ok(entry) => {
                proptest::prop_assert!(crate::store::FileName::parse(&name).is_ok());
                proptest::prop_assert!(hash.is_empty() || hash.len() == 32);
                proptest::prop_assert_eq!(entry.blake3.is_some(), hash.len() == 32);
            }
            Err(_) => proptest::prop_assert!(crate::store::FileName::parse(&name).is_err() || !(hash.is_empty() || hash.len() == 32)),
        }
    }
}
