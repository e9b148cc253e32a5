//! Starting the server in-process and the coturn tools as child processes.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prometheus_client::registry::Registry;
use waypost_net::admin::Admin;
use waypost_net::shutdown::Shutdown;
use waypost_turn_server::{Listeners, TurnConfig};

/// A server running in this process on ephemeral loopback ports.
pub struct TestServer {
    pub addr: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

/// The configuration tests start from: loopback, relaying to loopback allowed, no drain wait.
pub fn test_config() -> TurnConfig {
    TurnConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        relay_ip: vec!["127.0.0.1".parse().unwrap()],
        allow_loopback_peers: true,
        max_allocations_per_ip: 1000,
        unauth_rate: 100_000,
        drain_seconds: 0,
        shards: 2,
        ..TurnConfig::default()
    }
}

/// Writes a self-signed certificate for localhost.
pub fn test_cert() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

pub async fn start(mut cfg: TurnConfig, tls: bool) -> TestServer {
    let mut dir = None;
    if tls {
        let (d, cert, key) = test_cert();
        cfg.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.cert = Some(cert);
        cfg.key = Some(key);
        dir = Some(d);
    }
    let settings = cfg.validate().expect("valid test config");
    let listeners = Listeners::bind(&settings).expect("bind");
    let addr = listeners.listen_addrs()[0];
    let tls = listeners.tls_addrs().first().copied();
    let admin_addr = listeners.admin_addr();
    let shutdown = Shutdown::new();
    let sd = shutdown.clone();
    let admin = Admin::new(Registry::with_prefix("waypost"));
    let task = tokio::spawn(async move {
        waypost_turn_server::run(settings, listeners, admin, sd)
            .await
            .unwrap();
    });
    TestServer {
        addr,
        tls,
        admin: admin_addr,
        shutdown,
        task,
        _dir: dir,
    }
}

/// A child process killed (by PID) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free for both UDP and TCP at the time of the call (bound and released).
pub fn free_udp_port() -> u16 {
    for _ in 0..100 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// Resolves a coturn tool; panics (fails the test) when it is missing.
pub fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} is not installed (Debian package coturn); it is required for this test");
}

/// Starts turnutils_peer (UDP echo) on a free loopback port.
pub fn start_peer() -> (ChildGuard, u16) {
    let port = free_udp_port();
    let child = Command::new(tool("turnutils_peer"))
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnutils_peer");
    std::thread::sleep(Duration::from_millis(200));
    (ChildGuard(child), port)
}

/// The totals a uclient run reports.
#[derive(Debug, Default)]
pub struct UclientResult {
    pub sent: u64,
    pub received: u64,
    pub lost: Option<u64>,
    pub output: String,
}

/// Runs turnutils_uclient with `args` (bounded by `timeout 120`) and parses its totals.
pub async fn uclient(args: Vec<String>) -> UclientResult {
    let bin = tool("turnutils_uclient");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("120")
            .arg(bin)
            .args(&args)
            .arg("127.0.0.1")
            .output()
            .expect("run uclient")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = UclientResult {
        output: text.clone(),
        ..UclientResult::default()
    };
    for line in text.lines() {
        if let Some(rest) = line.split("start_mclient: tot_send_msgs=").nth(1) {
            let mut it = rest.split(", tot_recv_msgs=");
            r.sent = it.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            r.received = it.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        }
        if let Some(rest) = line.split("Total lost packets ").nth(1) {
            r.lost = rest.split_whitespace().next().and_then(|s| s.parse().ok());
        }
    }
    r
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}
