//! Test payloads and transfers through a relay: deterministic pseudo-random data with a SHA-256
//! checksum, a small reliable datagram protocol (sequence numbers, cumulative acks, a sliding
//! window, retransmission) for UDP paths, and plain byte streams for TCP paths.
//!
//! Datagram format: `D` seq(u32) total(u32) payload, and `A` next-expected(u32).

use std::net::SocketAddr;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

use crate::turn::{Incoming, TurnClient, TurnClientError};

/// Payload bytes per datagram.
pub const CHUNK: usize = 1_200;
const WINDOW: u32 = 64;

/// `len` bytes of pseudo-random data derived from `seed`.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A datagram path to one peer.
pub enum Pipe<'a> {
    /// A plain UDP socket (the peer talks to a relayed address directly).
    Plain {
        /// The socket.
        sock: &'a UdpSocket,
        /// The peer, once known.
        peer: Option<SocketAddr>,
    },
    /// Through our own TURN allocation.
    Turn {
        /// The client.
        client: &'a mut TurnClient,
        /// The peer, once known.
        peer: Option<SocketAddr>,
        /// Bind a channel to the peer (else Send indications).
        channel: bool,
    },
}

impl Pipe<'_> {
    async fn send(&mut self, data: &[u8]) -> Result<(), TurnClientError> {
        match self {
            Self::Plain { sock, peer } => {
                if let Some(p) = peer {
                    sock.send_to(data, *p).await?;
                }
                Ok(())
            }
            Self::Turn { client, peer, .. } => match peer {
                Some(p) => client.send_to(*p, data).await,
                None => Ok(()),
            },
        }
    }

    async fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, TurnClientError> {
        match self {
            Self::Plain { sock, peer } => {
                let mut b = vec![0u8; 65_536];
                match tokio::time::timeout(timeout, sock.recv_from(&mut b)).await {
                    Err(_) => Ok(None),
                    Ok(r) => {
                        let (n, from) = r?;
                        if peer.is_none() {
                            *peer = Some(from);
                        }
                        if Some(from) != *peer {
                            return Ok(None);
                        }
                        b.truncate(n);
                        Ok(Some(b))
                    }
                }
            }
            Self::Turn {
                client,
                peer,
                channel,
            } => match client.recv(timeout).await? {
                Some(Incoming::Data { peer: from, data }) => {
                    if peer.is_none() {
                        *peer = Some(from);
                        if *channel {
                            client.channel_bind(from).await?;
                        }
                    }
                    if Some(from) != *peer {
                        return Ok(None);
                    }
                    Ok(Some(data))
                }
                _ => Ok(None),
            },
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Sends `data` reliably; `progress(sent_acked, total)` is called as acks arrive.
pub async fn send_datagrams(
    pipe: &mut Pipe<'_>,
    data: &[u8],
    deadline: Duration,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), TurnClientError> {
    let total = u32::try_from(data.len().div_ceil(CHUNK)).unwrap_or(u32::MAX);
    let end = tokio::time::Instant::now() + deadline;
    let mut base = 0u32;
    let mut next = 0u32;
    let mut last_progress = tokio::time::Instant::now();
    let frame = |seq: u32| {
        let from = seq as usize * CHUNK;
        let to = (from + CHUNK).min(data.len());
        let mut f = Vec::with_capacity(9 + to - from);
        f.push(b'D');
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&data[from..to]);
        f
    };
    while base < total {
        if tokio::time::Instant::now() > end {
            return Err(TurnClientError::Timeout);
        }
        while next < total && next < base + WINDOW {
            pipe.send(&frame(next)).await?;
            next += 1;
        }
        match pipe.recv(Duration::from_millis(100)).await? {
            Some(a) if a.first() == Some(&b'A') => {
                if let Some(k) = be32(&a, 1)
                    && k > base
                {
                    base = k.min(total);
                    last_progress = tokio::time::Instant::now();
                    progress(
                        (u64::from(base) * CHUNK as u64).min(data.len() as u64),
                        data.len() as u64,
                    );
                }
            }
            _ => {}
        }
        if last_progress.elapsed() > Duration::from_millis(300) {
            // Go back N.
            next = base;
            last_progress = tokio::time::Instant::now();
        }
    }
    Ok(())
}

/// Receives a reliable datagram transfer; returns the bytes.
pub async fn recv_datagrams(
    pipe: &mut Pipe<'_>,
    deadline: Duration,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u8>, TurnClientError> {
    let end = tokio::time::Instant::now() + deadline;
    let mut chunks: Vec<Option<Vec<u8>>> = Vec::new();
    let mut total: Option<u32> = None;
    let mut expected = 0u32;
    let mut received = 0u64;
    loop {
        if tokio::time::Instant::now() > end {
            return Err(TurnClientError::Timeout);
        }
        let Some(d) = pipe.recv(Duration::from_millis(200)).await? else {
            continue;
        };
        if d.first() != Some(&b'D') || d.len() < 9 {
            continue;
        }
        let (Some(seq), Some(t)) = (be32(&d, 1), be32(&d, 5)) else {
            continue;
        };
        if total.is_none() {
            total = Some(t);
            chunks = vec![None; t as usize];
        }
        if Some(t) != total {
            continue;
        }
        if let Some(slot) = chunks.get_mut(seq as usize)
            && slot.is_none()
        {
            received += (d.len() - 9) as u64;
            *slot = Some(d[9..].to_vec());
        }
        while (expected as usize) < chunks.len() && chunks[expected as usize].is_some() {
            expected += 1;
        }
        let mut ack = vec![b'A'];
        ack.extend_from_slice(&expected.to_be_bytes());
        pipe.send(&ack).await?;
        progress(received, u64::from(t) * CHUNK as u64);
        if expected == t {
            // Linger so that a lost final ack is answered again.
            let linger = tokio::time::Instant::now() + Duration::from_millis(800);
            while tokio::time::Instant::now() < linger {
                if let Some(d) = pipe.recv(Duration::from_millis(100)).await?
                    && d.first() == Some(&b'D')
                {
                    pipe.send(&ack).await?;
                }
            }
            return Ok(chunks.into_iter().flatten().flatten().collect());
        }
    }
}

/// Writes `data` to a stream and closes the write side.
pub async fn send_stream(
    s: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    progress: &mut dyn FnMut(u64, u64),
) -> std::io::Result<()> {
    for (i, c) in data.chunks(64 * 1024).enumerate() {
        s.write_all(c).await?;
        progress(
            ((i + 1) * 64 * 1024).min(data.len()) as u64,
            data.len() as u64,
        );
    }
    s.flush().await?;
    s.shutdown().await
}

/// Reads exactly `len` bytes (or up to EOF) from a stream.
pub async fn recv_stream(
    s: &mut (impl AsyncRead + Unpin),
    len: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut buf = vec![0u8; 64 * 1024];
    while out.len() < len {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        progress(out.len() as u64, len as u64);
    }
    Ok(out)
}
