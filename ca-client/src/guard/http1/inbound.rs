//! A read buffer that grows with the traffic, under TLS and in front of dockerd.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A buffer's first size, and its largest: it doubles when a read fills it.
const FIRST_BUF: usize = 8 * 1024;
const MAX_BUF: usize = 256 * 1024;

/// Bytes read from one side and not yet passed on: a read buffer that starts small and
/// doubles when a read fills it, so idle connections stay cheap and busy ones make few
/// system calls.
pub(crate) struct Inbound<R> {
    pub(crate) io: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> Inbound<R> {
    pub(crate) fn new(io: R) -> Inbound<R> {
        Inbound {
            io,
            buf: vec![0; FIRST_BUF],
            start: 0,
            end: 0,
        }
    }

    /// What was read and not consumed yet.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more after what is held; `Ok(0)` at the end of input. The buffer grows
    /// (up to [`MAX_BUF`]) when a read fills it.
    ///
    /// # Errors
    /// The read's, or `InvalidData` when it holds [`MAX_BUF`] unconsumed bytes already.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// [`Inbound::fill`], polled.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_BUF {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "buffer full",
                )));
            }
            self.buf.resize((self.buf.len() * 2).min(MAX_BUF), 0);
        }
        let free = self.buf.len() - self.end;
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        if n == free && self.buf.len() < MAX_BUF {
            self.buf.resize((self.buf.len() * 2).min(MAX_BUF), 0);
        }
        Poll::Ready(Ok(n))
    }
}

/// Read through the buffer, so a reader that asks for little at a time (rustls reads one
/// TLS record per call) costs one system call per buffer, not per record.
impl<R: AsyncRead + Unpin> AsyncRead for Inbound<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.data().is_empty() && ready!(self.poll_fill(cx))? == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = self.data().len().min(out.remaining());
        out.put_slice(&self.data()[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// Writes pass straight through.
impl<R: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Inbound<R> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_inbound_buffer_grows_when_reads_fill_it_and_keeps_what_is_unread() {
        let text: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut inbound = Inbound::new(&text[..]);
        let mut seen = Vec::new();
        loop {
            let n = inbound.fill().await.unwrap();
            if n == 0 {
                break;
            }
            // Consume half of what is held each time: the rest must survive the next read.
            let half = inbound.data().len().div_ceil(2);
            seen.extend_from_slice(&inbound.data()[..half]);
            inbound.consume(half);
        }
        seen.extend_from_slice(inbound.data());
        assert_eq!(seen, text);
        assert!(inbound.buf.len() > FIRST_BUF, "the buffer never grew");
        assert!(inbound.buf.len() <= MAX_BUF);
    }
}
