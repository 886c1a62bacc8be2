//! A request body read in batches: the pieces the network delivered, kept
//! as they are (no copy) until they add up to a chunk worth a write or a
//! message, with the body's size limit checked as they come.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::error::FileError;

/// Consecutive pieces of a body, at least a chunk long (the last one of a
/// body may be shorter).
#[derive(Default)]
pub struct Batch {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Batch {
    /// The pieces, in order.
    pub fn into_pieces(self) -> Vec<Bytes> {
        self.pieces
    }

    /// The pieces as one buffer (copied unless there is just one), for a
    /// message that needs its bytes in one place.
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [one] => one.clone(),
            pieces => {
                let mut all = BytesMut::with_capacity(self.len);
                pieces.iter().for_each(|p| all.extend_from_slice(p));
                all.freeze()
            }
        }
    }
}

/// Reads `body` in batches of about `chunk_bytes`, refusing it past `limit`
/// bytes.
pub struct Gather<S> {
    body: S,
    chunk_bytes: usize,
    limit: u64,
    total: u64,
    /// The body ended (it must not be polled again).
    ended: bool,
}

impl<S, E> Gather<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// Reads `body`; see [`Gather`].
    pub fn new(body: S, chunk_bytes: usize, limit: u64) -> Self {
        Self { body, chunk_bytes, limit, total: 0, ended: false }
    }

    /// The next batch, none at the end of the body.
    pub async fn next(&mut self) -> Option<Result<Batch, FileError>> {
        let mut batch = Batch::default();
        while batch.len < self.chunk_bytes && !self.ended {
            let data = match self.body.next().await {
                None => {
                    self.ended = true;
                    break;
                }
                Some(Err(e)) => return Some(Err(FileError::Body(e.to_string()))),
                Some(Ok(data)) => data,
            };
            self.total += data.len() as u64;
            if self.total > self.limit {
                return Some(Err(FileError::TooLarge(self.limit)));
            }
            if !data.is_empty() {
                batch.len += data.len();
                batch.pieces.push(data);
            }
        }
        (batch.len > 0).then_some(Ok(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that panics if polled after its end, as some streams do.
    fn body(pieces: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let pieces: Vec<&'static [u8]> = pieces.to_vec();
        Box::pin(futures_util::stream::unfold(pieces.into_iter(), |mut rest| async move {
            rest.next().map(|p| (Ok(Bytes::from_static(p)), rest))
        }))
    }

    async fn batches(pieces: &[&'static [u8]], chunk: usize, limit: u64) -> Result<Vec<Vec<u8>>, FileError> {
        let mut gather = Gather::new(body(pieces), chunk, limit);
        let mut out = Vec::new();
        while let Some(batch) = gather.next().await {
            out.push(batch?.to_bytes().to_vec());
        }
        Ok(out)
    }

    #[tokio::test]
    async fn batches_keep_every_byte_in_order_and_reach_the_chunk_size() {
        let got = batches(&[b"ab", b"", b"cde", b"f", b"ghij"], 4, 100).await.unwrap();
        assert_eq!(got, [b"abcde".to_vec(), b"fghij".to_vec()]);
        assert_eq!(batches(&[b"abc"], 4, 100).await.unwrap(), [b"abc".to_vec()]);
        assert!(batches(&[b"", b""], 4, 100).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused() {
        assert!(matches!(batches(&[b"abc", b"de"], 2, 4).await, Err(FileError::TooLarge(4))));
        assert_eq!(batches(&[b"abc", b"d"], 2, 4).await.unwrap().concat(), b"abcd");
    }
}
