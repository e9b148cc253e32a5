//! TCP and TLS client connections (RFC 8656 stream framing, RFC 6062 data connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use waypost_protocol::stun::{Message, channel, frame_len};

use crate::metrics::{Direction, Metrics, Refusal, Transport};
use crate::server::{Action, Allocation, FiveTuple, Server, Sink};

/// Largest frame a client may send (a STUN message or ChannelData with padding).
const MAX_FRAME: usize = 4 + 65536;
/// A connection that has not sent a complete first message by then is closed.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Queued frames for the client written in one go, up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// Serves one client stream until it closes or the server stops.
pub(crate) async fn serve<S>(
    server: Arc<Server>,
    stream: S,
    client: SocketAddr,
    local: SocketAddr,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    server.metrics.connection(transport, true);
    let tuple = FiveTuple {
        client,
        local,
        transport,
    };
    let bound = serve_inner(&server, stream, tuple).await;
    server.remove_allocation(&tuple);
    server.metrics.connection(transport, false);
    if let Some((client_stream, mut peer, owner, leftover, alloc_cancel)) = bound {
        // RFC 6062 data connection: raw bytes both ways until either side closes.
        let stop = server.stop.child_token();
        if peer.write_all(&leftover).await.is_ok() {
            if !leftover.is_empty() {
                server.metrics.relayed(Direction::ToPeer, leftover.len());
            }
            let (client_rd, client_wr) = tokio::io::split(client_stream);
            let (peer_rd, peer_wr) = peer.into_split();
            let metrics = &server.metrics;
            tokio::select! {
                () = stop.cancelled() => {}
                () = alloc_cancel.cancelled() => {}
                _ = async {
                    tokio::join!(
                        pump(client_rd, peer_wr, metrics, Direction::ToPeer),
                        pump(peer_rd, client_wr, metrics, Direction::ToClient),
                    )
                } => {}
            }
        }
        server.tcp_data_closed(&owner);
    }
}

/// Copies one direction of an RFC 6062 data connection, counting the relayed bytes as they go
/// (so `/metrics` shows traffic on long-lived connections), then half-closes the writer.
async fn pump<R, W>(mut rd: R, mut wr: W, metrics: &Metrics, dir: Direction)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if wr.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                crate::outbox::count(metrics, dir, n);
            }
        }
    }
    let _ = wr.shutdown().await;
}

type Bound<S> = (
    S,
    tokio::net::TcpStream,
    FiveTuple,
    Vec<u8>,
    tokio_util::sync::CancellationToken,
);

async fn serve_inner<S>(server: &Arc<Server>, stream: S, tuple: FiveTuple) -> Option<Bound<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(4096);
    let sink = Sink::Stream(tx);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut tmp = vec![0u8; 65536];
    let mut out = Vec::with_capacity(1500);
    let mut wbuf: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    // This connection's allocation, looked up once instead of under the shared lock per frame;
    // dropped as soon as it is seen removed.
    let mut alloc: Option<Arc<Allocation>> = None;
    // A child token: polling it each wake-up touches no lock shared with other shards.
    let stop = server.stop.child_token();
    let mut seen_message = false;
    let first_deadline = tokio::time::sleep(FIRST_MESSAGE_TIMEOUT);
    tokio::pin!(first_deadline);
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            () = &mut first_deadline, if !seen_message => return None,
            Some(b) = rx.recv() => {
                // Everything queued so far goes out in one write.
                wbuf.clear();
                wbuf.extend_from_slice(&b);
                while wbuf.len() < WRITE_BATCH {
                    let Ok(b) = rx.try_recv() else { break };
                    wbuf.extend_from_slice(&b);
                }
                if wr.write_all(&wbuf).await.is_err() {
                    return None;
                }
            }
            r = rd.read(&mut tmp) => {
                let n = match r { Ok(0) | Err(_) => return None, Ok(n) => n };
                buf.extend_from_slice(&tmp[..n]);
                let mut pos = 0;
                loop {
                    let len = match frame_len(&buf[pos..]) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(_) => {
                            server.metrics.refused(Refusal::Malformed);
                            return None;
                        }
                    };
                    if len > MAX_FRAME {
                        server.metrics.refused(Refusal::Malformed);
                        return None;
                    }
                    if buf.len() - pos < len {
                        break;
                    }
                    let frame = &buf[pos..pos + len];
                    pos += len;
                    seen_message = true;
                    if frame[0] >> 6 == 1 {
                        if let Some((ch, payload)) = channel::parse(frame) {
                            if alloc.as_ref().is_none_or(|a| a.removed.load(Ordering::Relaxed)) {
                                alloc = server.allocation(&tuple);
                            }
                            if let Some(a) = &alloc {
                                server.channel_data_on(a, ch, payload);
                            }
                        }
                        continue;
                    }
                    let Ok(msg) = Message::parse(frame) else {
                        server.metrics.refused(Refusal::Malformed);
                        return None;
                    };
                    out.clear();
                    let action = server.handle_stun(&msg, tuple, &sink, &mut out);
                    if !out.is_empty() && wr.write_all(&out).await.is_err() {
                        return None;
                    }
                    if let Action::Bind(peer, owner, alloc_cancel) = action {
                        let leftover = buf[pos..].to_vec();
                        let _ = wr.flush().await;
                        return Some((rd.unsplit(wr), peer, owner, leftover, alloc_cancel));
                    }
                }
                buf.drain(..pos);
                if alloc.as_ref().is_some_and(|a| a.removed.load(Ordering::Relaxed)) {
                    alloc = None;
                }
            }
        }
    }
}
