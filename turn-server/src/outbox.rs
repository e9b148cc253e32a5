//! Per-shard deferred datagram sends and relay counters.
//!
//! On a shard thread, relayed datagrams are not sent one `sendto` each: they are copied into this
//! thread's outbox and sent when the shard's runtime is about to park (nothing left to run), or
//! earlier when the outbox is full. Runs of datagrams leaving through the same socket (typically
//! everything the shard relays towards its UDP clients, which all leave through its listener
//! socket) go out in one `sendmmsg`. The relay counters are kept per thread as well and added to
//! the shared Prometheus counters at the same moments, so the hot path touches no cache line
//! shared with the other shards.
//!
//! On any other thread (no outbox installed), [`send`] sends right away.

use std::cell::RefCell;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

use crate::metrics::{Direction, Metrics};
use crate::server::{Udp, udp_send};

/// Datagrams queued before a forced flush (the most one `sendmmsg` sends here).
const MAX_ENTRIES: usize = 64;
/// Bytes queued before a forced flush.
const MAX_BYTES: usize = 256 * 1024;

struct Entry {
    sock: Arc<Udp>,
    to: SocketAddr,
    start: usize,
    len: usize,
    /// Payload bytes to count as relayed (0: not counted, e.g. a control message).
    payload: usize,
    dir: Direction,
}

struct Outbox {
    metrics: Metrics,
    buf: Vec<u8>,
    entries: Vec<Entry>,
    done: Vec<bool>,
    /// Scratch space of a flush, kept for its allocations.
    run: Vec<usize>,
    sent: Vec<bool>,
    addrs: Vec<SocketAddrAny>,
    iovs: Vec<[IoSlice<'static>; 1]>,
    controls: Vec<SendAncillaryBuffer<'static, 'static, 'static>>,
    msgs: Vec<MMsgHdr<'static>>,
    /// Relayed packets and bytes not yet added to the shared counters: to peer, to client.
    counts: [(u64, u64); 2],
}

thread_local! {
    static OUTBOX: RefCell<Option<Outbox>> = const { RefCell::new(None) };
}

/// Installs an outbox on the current (shard) thread.
pub(crate) fn install(metrics: Metrics) {
    OUTBOX.set(Some(Outbox {
        metrics,
        buf: Vec::with_capacity(MAX_BYTES + 65536),
        entries: Vec::with_capacity(MAX_ENTRIES),
        done: Vec::with_capacity(MAX_ENTRIES),
        run: Vec::with_capacity(MAX_ENTRIES),
        sent: Vec::with_capacity(MAX_ENTRIES),
        addrs: Vec::with_capacity(MAX_ENTRIES),
        iovs: Vec::with_capacity(MAX_ENTRIES),
        controls: Vec::with_capacity(MAX_ENTRIES),
        msgs: Vec::with_capacity(MAX_ENTRIES),
        counts: [(0, 0); 2],
    }));
}

/// Flushes and removes the current thread's outbox.
pub(crate) fn uninstall() {
    flush();
    OUTBOX.set(None);
}

/// Queues one datagram (or sends it now off a shard thread). `payload` is the relayed payload
/// size counted in the relay metrics once sent (0 for a message that is not relayed data).
pub(crate) fn send(
    metrics: &Metrics,
    sock: &Arc<Udp>,
    to: SocketAddr,
    data: &[u8],
    payload: usize,
    dir: Direction,
) {
    let queued = OUTBOX.with_borrow_mut(|o| {
        let Some(o) = o else { return false };
        let start = o.buf.len();
        o.buf.extend_from_slice(data);
        o.entries.push(Entry {
            sock: sock.clone(),
            to,
            start,
            len: data.len(),
            payload,
            dir,
        });
        if o.entries.len() >= MAX_ENTRIES || o.buf.len() >= MAX_BYTES {
            o.flush();
        }
        true
    });
    if !queued && udp_send(sock, data, to) && payload > 0 {
        metrics.relayed(dir, payload);
    }
}

/// Counts relayed payload sent some other way (stream clients) on this thread.
pub(crate) fn count(metrics: &Metrics, dir: Direction, payload: usize) {
    let counted = OUTBOX.with_borrow_mut(|o| {
        let Some(o) = o else { return false };
        o.add(dir, payload);
        true
    });
    if !counted {
        metrics.relayed(dir, payload);
    }
}

/// Sends everything queued on this thread and publishes its counters.
pub(crate) fn flush() {
    OUTBOX.with_borrow_mut(|o| {
        if let Some(o) = o {
            o.flush();
        }
    });
}

/// Reuses a vector's allocation for another element type of the same layout (the in-place
/// `collect` of an emptied vector keeps the allocation).
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

impl Outbox {
    fn add(&mut self, dir: Direction, payload: usize) {
        let c = &mut self.counts[usize::from(dir == Direction::ToClient)];
        c.0 += 1;
        c.1 += payload as u64;
    }

    fn flush(&mut self) {
        let n = self.entries.len();
        self.done.clear();
        self.done.resize(n, false);
        for first in 0..n {
            if self.done[first] {
                continue;
            }
            // Every queued datagram for the same socket, in order.
            let sock = self.entries[first].sock.clone();
            self.run.clear();
            for i in first..n {
                if !self.done[i] && Arc::ptr_eq(&self.entries[i].sock, &sock) {
                    self.done[i] = true;
                    self.run.push(i);
                }
            }
            self.sent.clear();
            if let [i] = self.run[..] {
                let e = &self.entries[i];
                let ok = udp_send(&e.sock, &self.buf[e.start..e.start + e.len], e.to);
                self.sent.push(ok);
            } else {
                self.send_run(&sock);
            }
            for (j, &i) in self.run.iter().enumerate() {
                let e = &self.entries[i];
                if self.sent[j] && e.payload > 0 {
                    let c = &mut self.counts[usize::from(e.dir == Direction::ToClient)];
                    c.0 += 1;
                    c.1 += e.payload as u64;
                }
            }
        }
        self.entries.clear();
        self.buf.clear();
        let counts = std::mem::take(&mut self.counts);
        self.metrics
            .add_relayed(Direction::ToPeer, counts[0].0, counts[0].1);
        self.metrics
            .add_relayed(Direction::ToClient, counts[1].0, counts[1].1);
    }

    /// Sends the datagrams of `self.run` (all for `sock`) with `sendmmsg`; sets `self.sent`.
    fn send_run(&mut self, sock: &Udp) {
        let Self {
            buf,
            entries,
            run,
            sent,
            addrs,
            iovs,
            controls,
            msgs,
            ..
        } = self;
        addrs.clear();
        addrs.extend(run.iter().map(|&i| SocketAddrAny::from(entries[i].to)));
        let mut iov: Vec<[IoSlice<'_>; 1]> = recycle(std::mem::take(iovs));
        iov.extend(run.iter().map(|&i| {
            let e = &entries[i];
            [IoSlice::new(&buf[e.start..e.start + e.len])]
        }));
        sent.resize(run.len(), false);
        let mut ctl: Vec<SendAncillaryBuffer<'_, '_, '_>> = recycle(std::mem::take(controls));
        let mut hdr: Vec<MMsgHdr<'_>> = recycle(std::mem::take(msgs));
        ctl.resize_with(run.len(), SendAncillaryBuffer::default);
        hdr.extend(
            addrs
                .iter()
                .zip(iov.iter())
                .zip(ctl.iter_mut())
                .map(|((a, v), c)| MMsgHdr::new_with_addr(a, v, c)),
        );
        let mut next = 0;
        while next < run.len() {
            match rustix::net::sendmmsg(sock.get_ref(), &mut hdr[next..], SendFlags::DONTWAIT) {
                Err(rustix::io::Errno::INTR) => {}
                // The first one could not be sent: dropped, as UDP may.
                Ok(0) | Err(_) => next += 1,
                Ok(k) => {
                    for ok in &mut sent[next..(next + k).min(run.len())] {
                        *ok = true;
                    }
                    next += k;
                }
            }
        }
        *msgs = recycle(hdr);
        *controls = recycle(ctl);
        *iovs = recycle(iov);
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn receiver() -> UdpSocket {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        r
    }

    #[test]
    fn queued_until_flush_then_batched() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reg = prometheus_client::registry::Registry::default();
            let metrics = Metrics::new(&mut reg);
            install(metrics.clone());
            let sock = Arc::new(
                crate::server::register_udp(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(),
            );
            let other = Arc::new(
                crate::server::register_udp(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(),
            );
            let (a, b) = (receiver(), receiver());
            let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            send(&metrics, &sock, to_a, b"one", 3, Direction::ToClient);
            send(&metrics, &other, to_b, b"peer", 4, Direction::ToPeer);
            send(&metrics, &sock, to_b, b"two", 3, Direction::ToClient);
            send(&metrics, &sock, to_a, b"three", 0, Direction::ToClient);
            // Nothing leaves before the flush.
            a.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            assert!(a.recv_from(&mut buf).is_err());
            a.set_nonblocking(false).unwrap();
            let before = text(&mut reg);
            assert!(!before.contains("relayed_packets_total{direction=\"ToClient\"} 2"));
            flush();
            let got = |s: &UdpSocket| {
                let mut buf = [0u8; 64];
                let (n, _) = s.recv_from(&mut buf).unwrap();
                buf[..n].to_vec()
            };
            // Per destination socket, in order.
            assert_eq!(got(&a), b"one");
            assert_eq!(got(&a), b"three");
            let mut at_b = vec![got(&b), got(&b)];
            at_b.sort();
            assert_eq!(at_b, vec![b"peer".to_vec(), b"two".to_vec()]);
            let after = text(&mut reg);
            assert!(
                after.contains("relayed_packets_total{direction=\"ToClient\"} 2"),
                "{after}"
            );
            assert!(
                after.contains("relayed_bytes_total{direction=\"ToClient\"} 6"),
                "{after}"
            );
            assert!(
                after.contains("relayed_packets_total{direction=\"ToPeer\"} 1"),
                "{after}"
            );
            uninstall();
        });
    }

    #[test]
    fn full_outbox_flushes_on_its_own() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let metrics = Metrics::default();
            install(metrics.clone());
            let sock = Arc::new(
                crate::server::register_udp(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(),
            );
            let r = receiver();
            let to = r.local_addr().unwrap();
            for i in 0..MAX_ENTRIES {
                send(
                    &metrics,
                    &sock,
                    to,
                    &[u8::try_from(i).unwrap()],
                    1,
                    Direction::ToClient,
                );
            }
            let mut buf = [0u8; 8];
            for i in 0..MAX_ENTRIES {
                let (n, _) = r.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], &[u8::try_from(i).unwrap()]);
            }
            uninstall();
        });
    }

    #[test]
    fn without_outbox_sends_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reg = prometheus_client::registry::Registry::default();
            let metrics = Metrics::new(&mut reg);
            let sock = Arc::new(
                crate::server::register_udp(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(),
            );
            let r = receiver();
            send(
                &metrics,
                &sock,
                r.local_addr().unwrap(),
                b"now",
                3,
                Direction::ToPeer,
            );
            let mut buf = [0u8; 8];
            let (n, _) = r.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"now");
            assert!(text(&mut reg).contains("relayed_packets_total{direction=\"ToPeer\"} 1"));
        });
    }

    fn text(reg: &mut prometheus_client::registry::Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
        s
    }
}
