//! The `dht-node` binary: config validation (exit 64), admin metrics, line commands.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{RefNode, free_udp_port};

const BIN: &str = env!("CARGO_BIN_EXE_dht-node");

#[test]
fn invalid_configuration_exits_64_with_one_line() {
    for args in [
        vec!["--port", "notaport"],
        vec!["--admin-listen", "0.0.0.0:9100"],
        vec!["--max-storage-bytes", "10"],
        vec!["--bootstrap", "host:99999"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?}: error message expected");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "port = 1\nbogus = 2\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    std::fs::write(
        &cfg,
        "port = 14999\nbootstrap = [\"127.0.0.1:1\"]\nnetwork = 3\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Kills (by PID) and reaps the child when a test fails midway.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::zombie_processes)] // reaped by `Reap` on every path
async fn binary_serves_dhtnode_and_line_commands_and_exports_metrics() {
    let mut a = RefNode::spawn(&[]);
    let port = free_udp_port();
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(BIN)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--bootstrap",
        ])
        .arg(a.addr().to_string())
        .args([
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--interactive",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut child = Reap(child);
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let o2 = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            o2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // The reference node counts the binary as good.
    let mut good = 0;
    for _ in 0..40 {
        good = a.good_ipv4().await;
        if good >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(good >= 1, "{}", a.output());
    let m = a.mark();
    a.cmd("p clikey from-dhtnode");
    a.wait_after(m, "Put: success", Duration::from_secs(10))
        .await
        .unwrap();
    stdin.write_all(b"g clikey\n").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !out.lock().unwrap().contains("Get: done") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        out.lock().unwrap().contains("\"from-dhtnode\""),
        "{}",
        out.lock().unwrap()
    );
    // Metrics are refreshed once a second.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http_get(admin, "/metrics").expect("admin listener");
        if metrics.contains("outcome=\"Ok\"}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("waypost_dht_nodes{family=\"Ipv4\",state=\"Good\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("waypost_dht_requests_total{type=") && metrics.contains("outcome=\"Ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("waypost_dht_stored_values "), "{metrics}");
    assert!(!metrics.contains("127.0.0.1"), "no addresses in metrics");
    stdin.write_all(b"q\n").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut code = None;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.0.try_wait() {
            code = s.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, Some(0), "q exits cleanly");
}
