//! The UDP listener shards: batched receive (`recvmmsg` and GRO through quinn-udp).

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSockRef, UdpSocketState};
use waypost_protocol::stun::{Class, Message, channel};

use crate::metrics::{Refusal, Transport};
use crate::server::{Allocation, FiveTuple, Server, Sink, Udp};
use waypost_protocol::stun::method;

/// Receive buffer per batch slot: one datagram, or a GRO train of them.
const SLOT: usize = 65536;

/// This listener's view of the allocations of its clients, so that relaying a client's datagram
/// does not take the lock shared with the other shards. An entry is only used while its
/// allocation is live; entries of removed allocations are dropped after the batch that sees a
/// new removal, and at least once a second, so a cached allocation never keeps its relay port.
struct AllocCache {
    map: HashMap<SocketAddr, Arc<Allocation>>,
    removals: u64,
}

impl AllocCache {
    fn get(&mut self, server: &Server, tuple: &FiveTuple) -> Option<&Arc<Allocation>> {
        let live = self
            .map
            .get(&tuple.client)
            .is_some_and(|a| !a.removed.load(Ordering::Relaxed));
        if !live {
            match server.allocation(tuple) {
                Some(a) => {
                    self.map.insert(tuple.client, a);
                }
                None => {
                    self.map.remove(&tuple.client);
                    return None;
                }
            }
        }
        self.map.get(&tuple.client)
    }

    /// Drops the entries of removed allocations if any was removed since the last call.
    fn purge(&mut self, server: &Server) {
        let removals = server.removals();
        if removals != self.removals {
            self.removals = removals;
            self.map.retain(|_, a| !a.removed.load(Ordering::Relaxed));
        }
    }
}

/// Serves one SO_REUSEPORT socket until the server stops.
pub(crate) async fn serve(server: Arc<Server>, sock: Arc<Udp>, local: SocketAddr) {
    let Ok(state) = UdpSocketState::new(UdpSockRef::from(sock.get_ref())) else {
        tracing::error!("udp listener setup failed");
        return;
    };
    crate::server::allow_fragmentation(sock.get_ref());
    let mut storage = vec![0u8; SLOT * BATCH_SIZE];
    let mut slices: Vec<IoSliceMut<'_>> = storage.chunks_mut(SLOT).map(IoSliceMut::new).collect();
    let mut metas = [RecvMeta::default(); BATCH_SIZE];
    let mut out = Vec::with_capacity(1500);
    let mut cache = AllocCache {
        map: HashMap::new(),
        removals: server.removals(),
    };
    let mut purge = tokio::time::interval(Duration::from_secs(1));
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A child token: polling it each wake-up touches no lock shared with the other shards.
    let stop = server.stop.child_token();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let mut guard = tokio::select! {
            biased;
            () = &mut stopped => return,
            _ = purge.tick() => {
                cache.purge(&server);
                continue;
            }
            g = sock.readable() => match g {
                Ok(g) => g,
                Err(_) => return,
            },
        };
        let n = match state.recv(UdpSockRef::from(sock.get_ref()), &mut slices, &mut metas) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                }
                continue;
            }
        };
        // A short batch means the queue was empty: wait for the next edge without another
        // (EAGAIN) receive call. A datagram that raced in keeps the readiness set.
        if n < BATCH_SIZE {
            guard.clear_ready();
        }
        for (slot, meta) in slices.iter().zip(metas.iter()).take(n) {
            let stride = meta.stride.max(1);
            for data in slot[..meta.len.min(SLOT)].chunks(stride) {
                handle(&server, &sock, local, meta.addr, data, &mut out, &mut cache);
            }
        }
        cache.purge(&server);
    }
}

fn handle(
    server: &Arc<Server>,
    sock: &Arc<Udp>,
    local: SocketAddr,
    from: SocketAddr,
    data: &[u8],
    out: &mut Vec<u8>,
    cache: &mut AllocCache,
) {
    let tuple = FiveTuple {
        client: from,
        local,
        transport: Transport::Udp,
    };
    match data.first().map(|b| b >> 6) {
        Some(1) => match channel::parse(data) {
            Some((ch, payload)) => {
                if let Some(a) = cache.get(server, &tuple) {
                    server.channel_data_on(a, ch, payload);
                }
            }
            None => server.metrics.refused(Refusal::Malformed),
        },
        Some(0) => {
            let Ok(msg) = Message::parse(data) else {
                server.metrics.refused(Refusal::Malformed);
                return;
            };
            if msg.class() == Class::Indication && msg.method() == method::SEND {
                if let Some(a) = cache.get(server, &tuple) {
                    server.send_indication_on(a, &msg);
                }
                return;
            }
            out.clear();
            let sink = Sink::Udp(sock.clone(), from);
            server.handle_stun(&msg, tuple, &sink, out);
            if out.is_empty() {
                return;
            }
            // No amplification: an error answer is never larger than the request. Only
            // Binding and authenticated successes may be larger.
            if out.len() > data.len()
                && Message::parse(out).is_ok_and(|m| m.class() == Class::Error)
            {
                server.metrics.refused(Refusal::Amplification);
                return;
            }
            crate::server::udp_send(sock, out, from);
        }
        _ => server.metrics.refused(Refusal::Malformed),
    }
}
