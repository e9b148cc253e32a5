//! Interop with the real OpenDHT 2.4.12 `dhtnode` (Debian), on loopback: the same proxy-client
//! scenario is run against `dhtnode --proxyserver` and against our proxy, and the observations
//! must be the same.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::Receiver;

pub fn dhtnode_bin() -> PathBuf {
    let p = PathBuf::from("/usr/bin/dhtnode");
    assert!(
        p.is_file(),
        "dhtnode (Debian package dhtnode 2.4.12) is required for the interop tests"
    );
    p
}

/// A `dhtnode` process driven through its standard input, killed by PID on drop.
pub struct Dhtnode {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dhtnode {
    pub fn spawn(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let mut child = Command::new(dhtnode_bin())
            .args(["-v", "-l"])
            .arg(&log)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dhtnode");
        let stdin = child.stdin.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for src in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(src);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    out.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        Self {
            child,
            stdin,
            out,
            log,
            _dir: dir,
        }
    }

    pub fn cmd(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the output holds `needle` at least `count` times.
    pub fn wait(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.output().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Dhtnode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_udp_port() -> u16 {
    loop {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// What a proxy client saw; must be equal for the reference proxy and ours.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub get_sees_udp_put: bool,
    pub udp_get_sees_proxy_put: bool,
    pub listen_sees_current: bool,
    pub listen_sees_new: bool,
    pub udp_get_sees_permanent_put: bool,
    pub listen_sees_own_permanent_put: bool,
}

const T: Duration = Duration::from_secs(20);

/// Waits until the proxy's `GET /` reports at least one good IPv4 node (else proxy clients
/// consider it "connecting" and only retry a minute later).
pub fn wait_proxy_connected(proxy: SocketAddr, timeout: Duration) -> bool {
    use std::io::Read;
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Ok(mut s) = std::net::TcpStream::connect(proxy) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if let Some(body) = out.split("\r\n\r\n").nth(1)
                && let Ok(j) = serde_json::from_str::<serde_json::Value>(body.trim())
                && j["ipv4"]["good"].as_u64().unwrap_or(0) > 0
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `plain` is a plain dhtnode on the same network as the proxy's node.
pub fn proxy_client_scenario(proxy: SocketAddr, plain: &mut Dhtnode) -> Observed {
    assert!(
        wait_proxy_connected(proxy, T),
        "the proxy's node never got a good peer"
    );
    let mut c = Dhtnode::spawn(&["-p", "0", "--proxyclient", &proxy.to_string()]);
    assert!(
        c.wait_log("IPv4: connected", T),
        "proxy client never connected: {}",
        c.log()
    );
    let tag = format!("{:08x}", rand::random::<u32>());
    let key = format!("key{tag}");

    plain.cmd(&format!("p {key} hello{tag}"));
    assert!(plain.wait("Put: success", 1, T), "{}", plain.output());
    c.cmd(&format!("g {key}"));
    assert!(c.wait("Get: completed", 1, T), "{}", c.output());
    let get_sees_udp_put = c.output().contains(&format!("\"hello{tag}\""));

    c.cmd(&format!("p {key} fromC{tag}"));
    assert!(c.wait("Put: success", 1, T), "{}", c.output());
    plain.cmd(&format!("g {key}"));
    assert!(plain.wait("Get: completed", 1, T), "{}", plain.output());
    let udp_get_sees_proxy_put = plain.output().contains(&format!("\"fromC{tag}\""));

    c.cmd(&format!("l {key}"));
    let listen_sees_current =
        c.wait("Listen: found", 1, T) && c.wait(&format!("\"hello{tag}\""), 2, T);
    plain.cmd(&format!("p {key} new{tag}"));
    assert!(plain.wait("Put: success", 2, T));
    let listen_sees_new = c.wait(&format!("\"new{tag}\""), 1, T);

    c.cmd(&format!("pp {key} perm{tag}"));
    assert!(c.wait("Put: success", 2, T), "{}", c.output());
    let listen_sees_own_permanent_put = c.wait(&format!("\"perm{tag}\""), 1, T);
    plain.cmd(&format!("g {key}"));
    assert!(plain.wait("Get: completed", 2, T));
    let udp_get_sees_permanent_put = plain.output().contains(&format!("\"perm{tag}\""));
    Observed {
        get_sees_udp_put,
        udp_get_sees_proxy_put,
        listen_sees_current,
        listen_sees_new,
        udp_get_sees_permanent_put,
        listen_sees_own_permanent_put,
    }
}

/// A push client (`--devicekey`) listens through the proxy; a plain node's put must reach the
/// gateway as a push addressed to "dhtnode". Returns the gateway body.
pub fn push_client_scenario(
    proxy: SocketAddr,
    plain: &mut Dhtnode,
    gw: &Receiver,
) -> serde_json::Value {
    let mut c = Dhtnode::spawn(&[
        "-p",
        "0",
        "--proxyclient",
        &proxy.to_string(),
        "--devicekey",
        "DEV1",
    ]);
    assert!(
        c.wait_log("IPv4: connected", T),
        "proxy client never connected: {}",
        c.log()
    );
    let tag = format!("{:08x}", rand::random::<u32>());
    let key = format!("pushkey{tag}");
    c.cmd(&format!("l {key}"));
    assert!(c.wait("Listening", 1, T));
    // Let the SUBSCRIBE reach the proxy and its DHT listen settle.
    std::thread::sleep(Duration::from_secs(2));
    plain.cmd(&format!("p {key} z{tag}"));
    assert!(plain.wait("Put: success", 1, T));
    let end = Instant::now() + T;
    let h = hex_sha1(&key);
    while Instant::now() < end {
        if let Some(r) = gw
            .requests()
            .into_iter()
            .find(|r| r.body.to_string().contains(&h))
        {
            return r.body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no push reached the gateway: {:?}", gw.requests());
}

pub fn hex_sha1(s: &str) -> String {
    hex::encode(waypost_dht_proxy::http::parse_key(s))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn reference_proxy_baseline() {
    let rt = runtime();
    let gw = rt.block_on(Receiver::start());
    let (pa, pp) = (free_udp_port(), free_udp_port());
    let push = gw.addr.to_string();
    let _a = Dhtnode::spawn(&[
        "-p",
        &pa.to_string(),
        "--proxyserver",
        &pp.to_string(),
        "--pushserver",
        &push,
    ]);
    let mut b = Dhtnode::spawn(&["-p", "0", "-b", &format!("127.0.0.1:{pa}")]);
    let proxy: SocketAddr = format!("127.0.0.1:{pp}").parse().unwrap();
    assert!(waypost_tests::proc::wait_tcp(proxy, T));
    let seen = proxy_client_scenario(proxy, &mut b);
    assert_eq!(
        seen,
        Observed {
            get_sees_udp_put: true,
            udp_get_sees_proxy_put: true,
            listen_sees_current: true,
            listen_sees_new: true,
            udp_get_sees_permanent_put: true,
            listen_sees_own_permanent_put: true,
        }
    );
    let body = push_client_scenario(proxy, &mut b, &gw);
    let n = &body["notifications"][0];
    assert_eq!(n["data"]["to"], "dhtnode");
    assert_eq!(n["tokens"], serde_json::json!(["DEV1"]));
}
