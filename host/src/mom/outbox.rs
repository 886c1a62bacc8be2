//! The outbox: every message the node publishes is first written here, in
//! an embedded ACID store (redb, each write committed durably before it
//! returns), and removed only once the broker confirmed it. So a message is
//! never lost to a broker that is down or restarting, nor to a crash of the
//! node, and the flusher sends them in the order they were written.
//! Calls block on the disk: make them off the async runtime.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// Sequence number → the message (JSON of [`Message`]).
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// One message on its way to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique id (the AMQP message id): consumers recognise a message
    /// published twice by it.
    pub id: String,
    /// The exchange it goes to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// What kind of message it is (the AMQP `type` property).
    pub kind: String,
    /// The payload, JSON.
    pub body: serde_json::Value,
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
#[error("outbox: {0}")]
pub struct OutboxError(String);

impl OutboxError {
    pub(super) fn new(why: String) -> Self {
        Self(why)
    }
}

fn failed(e: impl std::fmt::Display) -> OutboxError {
    OutboxError(e.to_string())
}

/// The node's outbox.
pub struct Outbox {
    db: Database,
    /// Messages waiting, kept with every change.
    waiting: AtomicU64,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`.
    /// Another node (or this node's previous run, still shutting down in
    /// the same process) holding it is waited for a few seconds.
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match Database::create(path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(OutboxError(format!("{} is in use by another node", path.display())));
                }
                Err(e) => return Err(failed(e)),
            }
        };
        let txn = db.begin_write().map_err(failed)?;
        let waiting = txn.open_table(TABLE).map_err(failed)?.len().map_err(failed)?;
        txn.commit().map_err(failed)?;
        Ok(Self { db, waiting: AtomicU64::new(waiting) })
    }

    /// Messages waiting to be confirmed by the broker.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Adds `messages` after every message already waiting, durably.
    pub fn push(&self, messages: &[Message]) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let mut table = txn.open_table(TABLE).map_err(failed)?;
            let next = table.last().map_err(failed)?.map_or(0, |(seq, _)| seq.value() + 1);
            for (seq, message) in (next..).zip(messages) {
                let bytes = serde_json::to_vec(message).map_err(failed)?;
                table.insert(seq, bytes.as_slice()).map_err(failed)?;
            }
        }
        txn.commit().map_err(failed)?;
        self.waiting.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The `limit` oldest messages, with their sequence numbers. One that
    /// cannot be read back (it cannot happen short of a corrupted file) is
    /// returned as an error so that the caller can drop it.
    #[allow(clippy::type_complexity)]
    pub fn oldest(&self, limit: usize) -> Result<Vec<(u64, Result<Message, String>)>, OutboxError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(TABLE).map_err(failed)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(failed)?.take(limit) {
            let (seq, bytes) = item.map_err(failed)?;
            out.push((seq.value(), serde_json::from_slice(bytes.value()).map_err(|e| e.to_string())));
        }
        Ok(out)
    }

    /// Removes the messages numbered `seqs` (confirmed by the broker).
    pub fn remove(&self, seqs: &[u64]) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(TABLE).map_err(failed)?;
            for seq in seqs {
                removed += u64::from(table.remove(seq).map_err(failed)?.is_some());
            }
        }
        txn.commit().map_err(failed)?;
        self.waiting.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: u32) -> Message {
        Message {
            id: format!("m{i}"),
            exchange: "x".into(),
            routing_key: "k".into(),
            kind: "test".into(),
            body: serde_json::json!({ "i": i }),
        }
    }

    #[test]
    fn messages_come_back_in_order_until_removed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let outbox = Outbox::open(&path).unwrap();
        outbox.push(&[message(0), message(1)]).unwrap();
        outbox.push(&[message(2)]).unwrap();
        assert_eq!(outbox.waiting(), 3);
        let first: Vec<_> = outbox.oldest(2).unwrap();
        assert_eq!(first.iter().map(|(_, m)| m.clone().unwrap()).collect::<Vec<_>>(), [message(0), message(1)]);
        outbox.remove(&[first[0].0, first[1].0, 99]).unwrap();
        assert_eq!(outbox.waiting(), 1);
        drop(outbox);

        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.waiting(), 1);
        outbox.push(&[message(3)]).unwrap();
        let rest: Vec<_> = outbox.oldest(10).unwrap().into_iter().map(|(_, m)| m.unwrap()).collect();
        assert_eq!(rest, [message(2), message(3)]);
    }
}
