//! The UDP listener shards.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use waypost_protocol::stun::{Class, Message, channel};

use crate::metrics::{Refusal, Transport};
use crate::server::{FiveTuple, Server, Sink};

/// Serves one SO_REUSEPORT socket until the server stops.
pub(crate) async fn serve(server: Arc<Server>, sock: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(1500);
    let stop = server.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let r = tokio::select! {
            biased;
            () = &mut stopped => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let Ok((n, from)) = r else { continue };
        let data = &buf[..n];
        let tuple = FiveTuple {
            client: from,
            local,
            transport: Transport::Udp,
        };
        match data.first().map(|b| b >> 6) {
            Some(1) => match channel::parse(data) {
                Some((ch, payload)) => server.client_channel_data(&tuple, ch, payload),
                None => server.metrics.refused(Refusal::Malformed),
            },
            Some(0) => {
                let Ok(msg) = Message::parse(data) else {
                    server.metrics.refused(Refusal::Malformed);
                    continue;
                };
                out.clear();
                let sink = Sink::Udp(sock.clone(), from);
                server.handle_stun(&msg, tuple, &sink, &mut out);
                if out.is_empty() {
                    continue;
                }
                // No amplification: an error answer is never larger than the request. Only
                // Binding and authenticated successes may be larger.
                if out.len() > n && Message::parse(&out).is_ok_and(|m| m.class() == Class::Error) {
                    server.metrics.refused(Refusal::Malformed);
                    continue;
                }
                crate::server::udp_send(&sock, &out, from);
            }
            _ => server.metrics.refused(Refusal::Malformed),
        }
    }
}
