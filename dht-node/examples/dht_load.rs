//! Load generator for `bench/dht-node.sh`: sends `count` put requests (distinct keys, 64-byte
//! values) over UDP to one node, keeping at most `window` unanswered, and prints the number of
//! acknowledgements and the elapsed time. Loopback only; bounded in count and time.
//!
//! Usage: `dht_load TARGET_ADDR COUNT [WINDOW]`

#![allow(clippy::print_stdout, clippy::disallowed_macros)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use waypost_protocol::dht::msg::WireValues;
use waypost_protocol::dht::{Args, Body, InfoHash, Message, QueryKind, Value};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let target: SocketAddr = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("target"))?
        .parse()?;
    anyhow::ensure!(target.ip().is_loopback(), "loopback targets only");
    let count: u64 = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("count"))?
        .parse()?;
    let window: u64 = args.next().map(|w| w.parse()).transpose()?.unwrap_or(256);
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let me = InfoHash::get(format!("load-{}", std::process::id()));
    // Token from a find.
    let find = Message {
        tid: 1,
        network: 0,
        is_client: false,
        body: Body::Query(
            QueryKind::Find,
            Args {
                target: Some(me),
                ..Args::new(me)
            },
        ),
    };
    sock.send_to(&find.encode(false), target)?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf)?;
    let Body::Reply(r) = Message::decode(&buf[..n])
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .body
    else {
        anyhow::bail!("no find reply");
    };
    let token = r.token.ok_or_else(|| anyhow::anyhow!("no token"))?;
    let acks = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rx = {
        let (sock, acks, done) = (sock.clone(), acks.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            sock.set_read_timeout(Some(Duration::from_millis(200))).ok();
            while !done.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf)
                    && let Ok(m) = Message::decode(&buf[..n])
                    && matches!(m.body, Body::Reply(ref a) if a.vid.is_some())
                {
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    let mut sent = 0u64;
    while sent < count && Instant::now() < deadline {
        if sent - acks.load(Ordering::Relaxed) >= window {
            let a = acks.load(Ordering::Relaxed);
            let t = Instant::now();
            while acks.load(Ordering::Relaxed) == a && t.elapsed() < Duration::from_millis(50) {
                std::thread::sleep(Duration::from_micros(100));
            }
            if acks.load(Ordering::Relaxed) != a {
                continue; // progress: re-check the window
            }
            // No progress in 50 ms: count the window as lost and go on.
        }
        let mut v = Value::new(vec![(sent % 251) as u8; 64]);
        v.id = sent + 1;
        let a = Args {
            h: Some(InfoHash::get(sent.to_be_bytes())),
            token: Some(token.clone()),
            values: Some(WireValues::Values(vec![v])),
            ..Args::new(me)
        };
        let m = Message {
            tid: (sent as u32).wrapping_mul(2) | 1,
            network: 0,
            is_client: false,
            body: Body::Query(QueryKind::Put, a),
        };
        sock.send_to(&m.encode(false), target)?;
        sent += 1;
    }
    let send_elapsed = start.elapsed();
    let t = Instant::now();
    while acks.load(Ordering::Relaxed) < sent && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::Relaxed);
    let _ = rx.join();
    println!(
        "sent {sent} acked {} seconds {:.2} rate {:.0}/s",
        acks.load(Ordering::Relaxed),
        send_elapsed.as_secs_f64(),
        sent as f64 / send_elapsed.as_secs_f64()
    );
    Ok(())
}
