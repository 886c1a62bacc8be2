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
