//! A connection's query buffer, sized as Redis sizes its own (networking.c's reads and
//! server.c's `clientsCronResizeQueryBuffer`): 16 KiB to read into, kept while the
//! client talks, trimmed to its recent peak when a big request left it mostly empty,
//! and freed once the client has been idle for over two seconds. CLIENT LIST's `qbuf`
//! and `qbuf-free` are its figures.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Bytes the buffer keeps free for a read (Redis's `PROTO_IOBUF_LEN`).
pub const READ_RESERVE: usize = 16 * 1024;
/// A buffer above this size is trimmed to its recent peak when that is under half of
/// it (Redis's `PROTO_RESIZE_THRESHOLD`).
const RESIZE_THRESHOLD: usize = 32 * 1024;
/// Free space worth giving back (Redis's 4 KiB).
const MIN_WASTE: usize = 4 * 1024;
/// Idle for longer than this, the buffer is freed (Redis: over 2 s).
const IDLE_FREE: Duration = Duration::from_secs(2);
/// How often a buffer above [`RESIZE_THRESHOLD`] is looked at (Redis's `clientsCron`
/// at `hz` 10 visits every client of a small server this often).
const BIG_CHECK: Duration = Duration::from_millis(100);

pub struct QueryBuf {
    pub buf: BytesMut,
    /// The most bytes held since the last check.
    peak: usize,
    last_read: Instant,
    last_check: Instant,
}

impl QueryBuf {
    pub fn new(now: Instant) -> Self {
        QueryBuf {
            buf: BytesMut::with_capacity(READ_RESERVE),
            peak: 0,
            last_read: now,
            last_check: now,
        }
    }

    /// Makes room for a read: [`READ_RESERVE`] free bytes (reusing the space of the
    /// requests already taken out when nothing else holds it).
    pub fn reserve(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_RESERVE {
            self.buf.reserve(READ_RESERVE);
        }
    }

    /// One read from `stream` into the buffer, without waiting: `WouldBlock` if nothing
    /// is there. Through tokio's `AsyncRead` rather than `try_read_buf`: a read that does
    /// not fill the room clears the socket's readiness (the socket is drained and epoll
    /// is edge-triggered, so data arriving later raises it again), which spares the
    /// `recvfrom` that would only find `EAGAIN` after every request of a client waiting
    /// for its reply (Redis reads once per readable event too). A read that fills the
    /// room leaves the readiness set, so the next turn reads again.
    pub fn read_from(&mut self, stream: &mut TcpStream) -> std::io::Result<usize> {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        use tokio::io::AsyncReadExt;
        let read = std::pin::pin!(stream.read_buf(&mut self.buf));
        // Polled once: the connection loop waits in `readable()`, not here.
        match read.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// After requests were taken out: a buffer in use gets its room back at once, so
    /// CLIENT LIST shows what the next read has (a freed one stays freed).
    pub fn settle(&mut self) {
        if self.buf.capacity() > 0 {
            self.reserve();
        }
    }

    /// After a read.
    pub fn read(&mut self, now: Instant) {
        self.peak = self.peak.max(self.buf.len());
        self.last_read = now;
    }

    /// When [`QueryBuf::check`] has something to look at: `None` for a freed buffer.
    pub fn next_check(&self) -> Option<Instant> {
        match self.buf.capacity() {
            0 => None,
            c if c > RESIZE_THRESHOLD => Some(self.last_check + BIG_CHECK),
            // Only the idle rule can apply: a millisecond past it, so it has applied; at
            // least IDLE_FREE after the last check (a buffer too full to free waits).
            _ => Some(
                (self.last_read + IDLE_FREE + Duration::from_millis(1))
                    .max(self.last_check + IDLE_FREE),
            ),
        }
    }

    /// Redis's resize rules, then a new peak period.
    pub fn check(&mut self, now: Instant) {
        let (len, capacity) = (self.buf.len(), self.buf.capacity());
        if capacity - len > MIN_WASTE {
            if now.duration_since(self.last_read) > IDLE_FREE {
                self.resize(len);
            } else if capacity > RESIZE_THRESHOLD && capacity / 2 > self.peak {
                self.resize(len.max(self.peak));
            }
        }
        self.peak = self.buf.len();
        self.last_check = now;
    }

    fn resize(&mut self, capacity: usize) {
        if capacity == 0 {
            self.buf = BytesMut::new();
        } else {
            let mut buf = BytesMut::with_capacity(capacity);
            buf.extend_from_slice(&self.buf);
            self.buf = buf;
        }
    }

    /// CLIENT LIST's `qbuf` and `qbuf-free`.
    pub fn figures(&self) -> (usize, usize) {
        (self.buf.len(), self.buf.capacity() - self.buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn idle_buffer_is_freed_and_big_one_trimmed() {
        let t0 = Instant::now();
        let mut q = QueryBuf::new(t0);
        q.reserve();
        q.buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        q.read(t0);
        q.buf.advance(q.buf.len());
        q.settle();
        let (used, free) = q.figures();
        assert_eq!(used, 0);
        assert!((READ_RESERVE..RESIZE_THRESHOLD).contains(&free), "{free}");
        // Not idle yet: kept.
        q.check(t0 + Duration::from_secs(1));
        assert!(q.buf.capacity() >= READ_RESERVE);
        let at = q.next_check().unwrap();
        assert!(at > t0 + IDLE_FREE);
        q.check(at);
        assert_eq!(q.figures(), (0, 0));
        assert_eq!(q.next_check(), None);

        // A 400 KB request leaves a big buffer; a later period of small requests trims it.
        let mut q = QueryBuf::new(t0);
        for _ in 0..25 {
            q.reserve();
            let room = q.buf.capacity() - q.buf.len();
            q.buf
                .extend_from_slice(&vec![b'A'; room.min(400_000 - q.buf.len())]);
            q.read(t0);
        }
        assert_eq!(q.buf.len(), 400_000);
        q.buf.advance(q.buf.len());
        q.settle();
        let big = q.buf.capacity();
        assert!(big > RESIZE_THRESHOLD, "{big}");
        q.check(t0 + BIG_CHECK); // the period that saw the big request keeps it
        assert_eq!(q.buf.capacity(), big);
        q.buf.extend_from_slice(&[b'A'; 100]);
        q.read(t0 + BIG_CHECK);
        q.buf.advance(100);
        q.check(t0 + BIG_CHECK * 2);
        assert!(q.buf.capacity() < big && q.buf.capacity() <= 100);
        q.settle();
        assert!(q.buf.capacity() >= READ_RESERVE && q.buf.capacity() < big);
    }
}
