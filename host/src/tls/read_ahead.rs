//! Large reads under rustls. rustls asks its transport for at most one
//! record at a time (about 16 KiB, often 4 KiB), so every 16 KiB of a
//! transfer over TLS cost a `read` call and a trip through the runtime,
//! where plaintext HTTP/2 takes whatever has arrived in one call (a node
//! receiving 256 MiB made 16,816 reads; through this, 1,275).
//! [`ReadAhead`] sits between rustls and the socket: it reads up to
//! [`READ_AHEAD`] at once and hands rustls its small pieces from memory.
//! It starts transparent and takes up its buffer only once told the
//! handshake is done ([`ReadAhead::read_ahead`]), so a connection that never
//! finishes one (a slow or abusive client) costs nothing more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read from the socket takes.
pub const READ_AHEAD: usize = 256 << 10;

/// A transport that reads ahead; writes pass straight through.
pub struct ReadAhead<IO> {
    io: IO,
    buffer: Vec<u8>,
    /// What of `buffer` is read and not yet handed on.
    start: usize,
    end: usize,
    on: bool,
}

impl<IO> ReadAhead<IO> {
    /// `io`, read as it is until [`ReadAhead::read_ahead`].
    pub fn new(io: IO) -> Self {
        Self { io, buffer: Vec::new(), start: 0, end: 0, on: false }
    }

    /// From now on, reads go through the buffer (made on first use).
    pub fn read_ahead(&mut self) {
        self.on = true;
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            if !this.on || out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            if this.buffer.is_empty() {
                this.buffer = vec![0; READ_AHEAD];
            }
            let mut filling = ReadBuf::new(&mut this.buffer);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut filling))?;
            (this.start, this.end) = (0, filling.filled().len());
        }
        // A read from memory spends the task's budget as one from the socket
        // would, so a busy connection still yields to the node's other
        // tasks (the failure detector's heartbeats among them).
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buffer[this.start..this.start + n]);
        this.start += n;
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
        let mut got = vec![0; 100];
        reader.read_exact(&mut got).await.unwrap(); // transparent: taken from the pipe itself
        reader.read_ahead();
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
        assert_eq!(reader.buffer.len(), READ_AHEAD, "read ahead through its buffer");
    }

    #[tokio::test]
    async fn until_told_it_keeps_no_buffer_and_writes_pass_through() {
        let (far, near) = tokio::io::duplex(1024);
        let mut reader = ReadAhead::new(near);
        reader.write_all(b"hello").await.unwrap();
        let mut far = far;
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        far.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        reader.read_exact(&mut one).await.unwrap();
        assert!(reader.buffer.is_empty(), "a buffer before the handshake was done");
    }
}
