//! POST /name load generator: fresh registrations (one new identity per request, so every
//! request is a durable redb write) or repeated idempotent registrations.
//!
//! ```text
//! cargo bench -p waypost-nameserver --bench post_load -- \
//!     --url http://127.0.0.1:18080 --keys 400 --bits 2048 --concurrency 8 --mode fresh
//! ```
//! Keys are generated before the clock starts. Each worker keeps one HTTP/1.1 keep-alive
//! connection. Bounded: at most `--keys` requests (fresh) or `--requests` (idempotent) and a
//! 120 s wall-clock cap.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_macros,
    clippy::unwrap_used
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use waypost_protocol::identity::{Identity, KeyBits};

struct Args {
    addr: SocketAddr,
    keys: usize,
    bits: KeyBits,
    concurrency: usize,
    idempotent: bool,
    requests: usize,
    prefix: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:18080".parse().unwrap(),
        keys: 400,
        bits: KeyBits::Rsa2048,
        concurrency: 8,
        idempotent: false,
        requests: 20_000,
        prefix: format!("b{}", std::process::id()),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--url" => {
                a.addr = v
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse()
                    .expect("--url http://IP:PORT");
                i += 1;
            }
            "--keys" => {
                a.keys = v.parse().unwrap();
                i += 1;
            }
            "--bits" => {
                a.bits = if v == "4096" {
                    KeyBits::Rsa4096
                } else {
                    KeyBits::Rsa2048
                };
                i += 1;
            }
            "--concurrency" => {
                a.concurrency = v.parse().unwrap();
                i += 1;
            }
            "--mode" => {
                a.idempotent = v == "idempotent";
                i += 1;
            }
            "--requests" => {
                a.requests = v.parse().unwrap();
                i += 1;
            }
            _ => {} // cargo bench adds --bench
        }
        i += 1;
    }
    a
}

fn body(k: &Identity, name: &str) -> Vec<u8> {
    format!(
        r#"{{"addr":"{}","owner":"{}","signature":"{}","publickey":"{}"}}"#,
        k.id().to_hex(),
        "1".repeat(40),
        k.sign_base64(name.as_bytes()).unwrap(),
        k.public_key().to_base64_field(true)
    )
    .into_bytes()
}

/// Sends one keep-alive POST and returns the status.
fn post(conn: &mut BufReader<TcpStream>, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let s = conn.get_mut();
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut buf = vec![0u8; len];
    conn.read_exact(&mut buf)?;
    Ok(status)
}

fn main() {
    let args = parse_args();
    let n_keys = if args.idempotent {
        args.concurrency
    } else {
        args.keys
    };
    let t = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let work: Vec<(String, Vec<u8>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let prefix = args.prefix.clone();
                let bits = args.bits;
                sc.spawn(move || {
                    (t..n_keys)
                        .step_by(threads)
                        .map(|i| {
                            let k = Identity::generate(bits).unwrap();
                            let name = format!("{prefix}-{i}");
                            let b = body(&k, &name);
                            (format!("/name/{name}"), b)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!(
        "generated {} identities in {:.1}s",
        work.len(),
        t.elapsed().as_secs_f64()
    );
    let work = Arc::new(work);
    let total = if args.idempotent {
        args.requests
    } else {
        work.len()
    };
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let cap = Instant::now() + Duration::from_secs(120);
    let start = Instant::now();
    let hs: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (work, next, lat, statuses) =
                (work.clone(), next.clone(), lat.clone(), statuses.clone());
            let (addr, idem) = (args.addr, args.idempotent);
            std::thread::spawn(move || {
                let mut conn = BufReader::new(TcpStream::connect(addr).expect("connect"));
                conn.get_ref().set_nodelay(true).unwrap();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total || Instant::now() > cap {
                        break;
                    }
                    // Idempotent mode: each worker repeats its own registration.
                    let (path, body) = if idem {
                        &work[w % work.len()]
                    } else {
                        &work[i]
                    };
                    let t0 = Instant::now();
                    let st = post(&mut conn, path, body).unwrap_or(0);
                    mine.push(t0.elapsed());
                    *statuses.lock().unwrap().entry(st).or_default() += 1;
                    if st == 0 {
                        conn = BufReader::new(TcpStream::connect(addr).expect("reconnect"));
                    }
                }
                lat.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    let mut lat = lat.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "mode={} requests={} concurrency={} elapsed={:.2}s throughput={:.0} req/s p50={:.2}ms p99={:.2}ms max={:.2}ms statuses={:?}",
        if args.idempotent {
            "idempotent"
        } else {
            "fresh"
        },
        lat.len(),
        args.concurrency,
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
        statuses.lock().unwrap()
    );
}
