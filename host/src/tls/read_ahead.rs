//! Large reads under rustls. rustls asks its transport for at most one
//! record at a time (about 16 KiB, often 4 KiB), so every 16 KiB of a
//! transfer over TLS cost a `read` call and a trip through the runtime,
//! where plaintext HTTP/2 takes whatever has arrived in one call (a node
//! receiving 256 MiB made 16,816 reads; through this, 1,275).
//! [`ReadAhead`] sits between rustls and the socket: it reads up to
//! [`READ_AHEAD`] at once and hands rustls its small pieces from memory.
//! It holds its buffer only while bytes are arriving: once the buffer is
//! drained and the socket has nothing more, the buffer is let go, so an
//! idle connection costs nothing more. The peer channels that fetch file
//! bytes read through it (`rpc::channels`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read from the socket takes.
pub const READ_AHEAD: usize = 256 << 10;

/// A transport that reads ahead; writes pass straight through.
pub struct ReadAhead<IO> {
    io: IO,
    /// Read and not yet handed on; no allocation while empty and idle.
    buffer: BytesMut,
}

impl<IO> ReadAhead<IO> {
    /// `io`, read ahead.
    pub fn new(io: IO) -> Self {
        Self { io, buffer: BytesMut::new() }
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffer.is_empty() {
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            this.buffer.reserve(READ_AHEAD);
            let filled = tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buffer);
            match filled {
                Poll::Ready(Ok(0)) | Poll::Pending => {
                    // The end, or nothing more for now: an idle connection
                    // keeps no buffer.
                    this.buffer = BytesMut::new();
                    return filled.map_ok(|_| ());
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => {}
            }
        }
        // A read from memory spends the task's budget as one from the socket
        // would, so a busy connection still yields to the node's other
        // tasks (the failure detector's heartbeats among them).
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let n = out.remaining().min(this.buffer.len());
        out.put_slice(&this.buffer[..n]);
        this.buffer.advance(n);
        coop.made_progress();
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadAhead<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_in_order_and_end_at_eof() {
        let (mut far, near) = tokio::io::duplex(READ_AHEAD * 2);
        let sent: Vec<u8> = (0..READ_AHEAD + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        far.write_all(&sent).await.unwrap();
        drop(far);
        let mut reader = ReadAhead::new(near);
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let n = reader.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes came out changed or out of order");
        assert_eq!(reader.buffer.capacity(), 0, "drained at the end, nothing kept");
    }

    #[tokio::test]
    async fn one_socket_read_serves_many_small_reads_and_an_idle_connection_lets_its_buffer_go() {
        let (mut far, near) = tokio::io::duplex(READ_AHEAD * 2);
        let mut reader = ReadAhead::new(near);
        far.write_all(&[5u8; 3 * 4096]).await.unwrap();
        let mut piece = [0u8; 4096];
        assert_eq!(reader.read(&mut piece).await.unwrap(), 4096);
        assert_eq!(reader.buffer.len(), 2 * 4096, "the rest waits in memory");
        assert!(reader.buffer.capacity() + 4096 >= READ_AHEAD, "read ahead in one piece");
        reader.read_exact(&mut piece).await.unwrap();
        reader.read_exact(&mut piece).await.unwrap();
        // Drained, and the socket has nothing: the buffer is let go.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), reader.read(&mut piece)).await;
        assert!(waiting.is_err(), "nothing to read");
        assert_eq!(reader.buffer.capacity(), 0, "an idle connection keeps no buffer");
        far.write_all(b"more").await.unwrap();
        assert_eq!(reader.read(&mut piece).await.unwrap(), 4);
        assert_eq!(&piece[..4], b"more");
    }

    #[tokio::test]
    async fn writes_pass_through_and_a_read_larger_than_the_buffer_goes_to_the_socket() {
        let (far, near) = tokio::io::duplex(1024);
        let mut reader = ReadAhead::new(near);
        reader.write_all(b"hello").await.unwrap();
        let mut far = far;
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        far.write_all(b"x").await.unwrap();
        let mut large = vec![0u8; READ_AHEAD];
        assert_eq!(reader.read(&mut large).await.unwrap(), 1);
        assert_eq!(large[0], b'x');
        assert_eq!(reader.buffer.capacity(), 0, "read straight into the caller's buffer");
    }
}
