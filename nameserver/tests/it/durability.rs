//! A registration acknowledged before `kill -9` survives a restart: the real binary, a stream
//! of registrations from several clients, SIGKILL mid-stream, restart on the same data dir.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use waypost_protocol::identity::{Identity, KeyBits};
use waypost_tests::proc::{Watched, free_port, wait_tcp};

use crate::common::*;

const KEYS: usize = 64;
const KILL_AFTER: usize = 24;

fn spawn(dir: &std::path::Path, port: u16) -> Watched {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nameserver"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--post-rate", "0"]);
    Watched::spawn(cmd).expect("spawn nameserver")
}

/// One POST; `None` if the connection failed (the server was killed).
fn try_post(addr: SocketAddr, path: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    Some(parse_response(&raw).status)
}

#[test]
fn acknowledged_registrations_survive_kill_9() {
    // Distinct identities (one address holds one name). 2048-bit keys keep this test fast; the
    // server accepts any RSA key of at least 2048 bits.
    let ids: Vec<Identity> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    (0..KEYS / 4)
                        .map(|_| Identity::generate(KeyBits::Rsa2048).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let bodies: Arc<Vec<(String, Vec<u8>, String)>> = Arc::new(
        ids.iter()
            .enumerate()
            .map(|(i, k)| {
                let name = format!("durable-{i:03}");
                let b = reg(k, &name);
                (name, b, id(k))
            })
            .collect(),
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = spawn(dir.path(), port);
    assert!(
        wait_tcp(addr, Duration::from_secs(20)),
        "server did not start"
    );

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (next, acked, bodies) = (next.clone(), acked.clone(), bodies.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= bodies.len() {
                        return;
                    }
                    let (name, body, _) = &bodies[i];
                    match try_post(addr, &format!("/name/{name}"), body) {
                        Some(200) => acked.lock().unwrap().push(i),
                        Some(other) => panic!("unexpected status {other}"),
                        None => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < KILL_AFTER {
        assert!(Instant::now() < deadline, "registrations too slow");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill(); // SIGKILL, by PID
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER);
    assert!(acked.len() < KEYS, "the kill must land mid-stream");

    let mut server = spawn(dir.path(), port);
    assert!(
        wait_tcp(addr, Duration::from_secs(20)),
        "server did not restart"
    );
    for i in &acked {
        let (name, _, hex_id) = &bodies[*i];
        let r = get(addr, &format!("/name/{name}"));
        assert_eq!(r.status, 200, "acknowledged {name} lost after kill -9");
        assert_eq!(r.json()["addr"], json!(format!("0x{hex_id}")));
        get(addr, &format!("/addr/{hex_id}")).expect(200, json!({"name": name}));
    }
    // The restarted server keeps taking registrations.
    let (name, body, _) = &bodies[KEYS - 1];
    let st = try_post(addr, &format!("/name/{name}"), body);
    assert_eq!(st, Some(200));
    assert_eq!(
        server.terminate(Duration::from_secs(10)),
        Some(0),
        "clean exit on SIGTERM"
    );
}
