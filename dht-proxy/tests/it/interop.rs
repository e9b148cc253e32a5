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

/// Our proxy binary on loopback, bootstrapped to `bootstrap_port`.
pub struct OurProxy {
    pub proc: waypost_tests::proc::Watched,
    pub http: SocketAddr,
}

pub fn spawn_our_proxy(bootstrap_port: u16, extra: &[&str]) -> OurProxy {
    let http_port = waypost_tests::proc::free_port();
    let udp = free_udp_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dht-proxy"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{http_port}"),
        "--port",
        &udp.to_string(),
        "--dht-bind",
        "127.0.0.1",
    ])
    .args(["--bootstrap", &format!("127.0.0.1:{bootstrap_port}")])
    .args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            cmd.env_remove(k);
        }
    }
    let proc = waypost_tests::proc::Watched::spawn(cmd).expect("spawn dht-proxy");
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    assert!(
        waypost_tests::proc::wait_tcp(http, T),
        "dht-proxy did not start: {}",
        String::from_utf8_lossy(&proc.stderr())
    );
    OurProxy { proc, http }
}

#[test]
fn our_proxy_matches_reference_for_dhtnode_clients() {
    let rt = runtime();
    let gw = rt.block_on(Receiver::start());
    let pb = free_udp_port();
    let mut b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let push = format!("http://{}", gw.addr);
    let ours = spawn_our_proxy(pb, &["--push-server", &push, "--push-format", "2.4"]);
    let seen = proxy_client_scenario(ours.http, &mut b);
    assert_eq!(
        seen,
        Observed {
            get_sees_udp_put: true,
            udp_get_sees_proxy_put: true,
            listen_sees_current: true,
            listen_sees_new: true,
            udp_get_sees_permanent_put: true,
            listen_sees_own_permanent_put: true,
        },
        "same observations as with dhtnode --proxyserver (reference_proxy_baseline)"
    );
    let body = push_client_scenario(ours.http, &mut b, &gw);
    let n = &body["notifications"][0];
    assert_eq!(n["data"]["to"], "dhtnode");
    assert_eq!(n["tokens"], serde_json::json!(["DEV1"]));
    assert_eq!(
        n["platform"], 1,
        "dhtnode's empty platform is sent like iOS"
    );
    // The SUBSCRIBE body dhtnode sent is the one of the spec (D.4): client_id "dhtnode".
    assert!(
        n["data"]["s"].as_str().is_some_and(|s| s.len() == 8),
        "8-character session id: {n}"
    );
}

#[test]
fn node_backend_listen_sees_remote_puts() {
    use waypost_dht_proxy::backend::DhtBackend as _;
    let rt = runtime();
    let pb = free_udp_port();
    let mut b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let shutdown = waypost_net::shutdown::Shutdown::new();
    let backend = rt.block_on(async {
        let sockets = waypost_dht_node::bind_sockets(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let opts = waypost_dht_node::NodeOptions {
            bootstrap: vec![format!("127.0.0.1:{pb}").parse().unwrap()],
            ..Default::default()
        };
        let node = waypost_dht_node::spawn(opts, sockets, &shutdown, None).unwrap();
        assert!(node.wait_connected(T).await);
        waypost_dht_proxy::node::NodeBackend::new(node)
    });
    let key = waypost_dht_proxy::http::parse_key("lkey");
    b.cmd("p lkey first");
    assert!(b.wait("Put: success", 1, T));
    let mut l = rt.block_on(backend.listen(key)).unwrap();
    let first = rt
        .block_on(async { tokio::time::timeout(T, l.events.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(first.values.len(), 1);
    b.cmd("p lkey second");
    assert!(b.wait("Put: success", 2, T));
    let second = rt
        .block_on(async { tokio::time::timeout(T, l.events.recv()).await })
        .expect("second event in time")
        .unwrap();
    assert!(!second.expired);
    shutdown.trigger();
}

/// A blocking HTTP/1.1 request with `Connection: close`; returns (status, body) (chunked
/// bodies are returned with their framing).
pub fn blocking_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn stats(addr: SocketAddr) -> serde_json::Value {
    let (st, body) = blocking_request(addr, "GET", "/node/stats", b"");
    assert_eq!(st, 200);
    serde_json::from_str(body.trim()).unwrap()
}

#[test]
fn subscriptions_and_permanent_puts_survive_kill_9() {
    let rt = runtime();
    let gw = rt.block_on(Receiver::start());
    let pb = free_udp_port();
    let mut b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let push = format!("http://{}", gw.addr);
    let args = [
        "--push-server",
        push.as_str(),
        "--push-format",
        "2.4",
        "--data-dir",
        data.as_str(),
    ];
    let mut first = spawn_our_proxy(pb, &args);
    assert!(wait_proxy_connected(first.http, T));
    let tag = format!("{:08x}", rand::random::<u32>());
    let (sub_key, perm_key) = (format!("sub{tag}"), format!("perm{tag}"));
    let sub = br#"{"key":"TOKEN-K9","client_id":"c-k9","session_id":"s-k9","platform":"android","topic":""}"#;
    let (st, body) = blocking_request(first.http, "SUBSCRIBE", &format!("/key/{sub_key}"), sub);
    assert_eq!((st, body.as_str()), (200, "{}\n"));
    let (st, body) = blocking_request(
        first.http,
        "POST",
        &format!("/key/{perm_key}"),
        br#"{"data":"cGVybQ==","permanent":true}"#,
    );
    assert_eq!(st, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    first.proc.kill(); // SIGKILL: no clean shutdown, nothing flushed at exit

    let second = spawn_our_proxy(pb, &args);
    assert!(wait_proxy_connected(second.http, T));
    let s = stats(second.http);
    assert_eq!(
        (
            s["totalPermanentPuts"].as_u64(),
            s["pushListenersCount"].as_u64()
        ),
        (Some(1), Some(1)),
        "{s}"
    );
    // The permanent put is announced again by the restarted proxy and has the same id.
    let (st, body) = blocking_request(
        second.http,
        "POST",
        &format!("/key/{perm_key}"),
        br#"{"data":"cGVybQ==","permanent":true}"#,
    );
    assert_eq!(st, 200);
    assert!(
        body.contains(&format!("\"id\":\"{id}\"")),
        "dedupe against the restored put: {body}"
    );
    // The restored subscription still pushes.
    std::thread::sleep(Duration::from_secs(1));
    b.cmd(&format!("p {sub_key} after{tag}"));
    assert!(b.wait("Put: success", 1, T));
    let h = hex_sha1(&sub_key);
    let end = Instant::now() + T;
    let push = loop {
        if let Some(r) = gw
            .requests()
            .into_iter()
            .find(|r| r.body.to_string().contains(&h))
        {
            break r.body;
        }
        assert!(
            Instant::now() < end,
            "no push after restart: {:?}",
            gw.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let n = &push["notifications"][0];
    assert_eq!(n["tokens"], serde_json::json!(["TOKEN-K9"]));
    assert_eq!(n["data"]["to"], "c-k9");
    assert_eq!(n["data"]["s"], "s-k9");
}

/// The "timeout" push (lease end − margin) goes out exactly once per lease across a SIGKILL
/// restart: one already sent is not repeated, one not yet sent is sent by the restarted proxy.
#[test]
fn timeout_push_is_sent_once_across_kill_9() {
    let rt = runtime();
    let gw = rt.block_on(Receiver::start());
    let pb = free_udp_port();
    let _b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let push = format!("http://{}", gw.addr);
    // Timeout push 4 s after each SUBSCRIBE/POST (the sweep runs every 5 s).
    let args = [
        "--push-server",
        push.as_str(),
        "--push-format",
        "2.4",
        "--data-dir",
        data.as_str(),
        "--lease",
        "60",
        "--timeout-margin",
        "56",
    ];
    let tag = format!("{:08x}", rand::random::<u32>());
    let (early, perm, late) = (
        format!("early{tag}"),
        format!("perm{tag}"),
        format!("late{tag}"),
    );
    let (he, hp, hl) = (hex_sha1(&early), hex_sha1(&perm), hex_sha1(&late));
    let timeouts = |h: &str| {
        gw.requests()
            .iter()
            .filter(|r| r.body["notifications"][0]["data"]["timeout"] == h)
            .count()
    };
    let sub = |token: &str| {
        format!(
            r#"{{"key":"{token}","client_id":"c","session_id":"s","platform":"android","topic":""}}"#
        )
    };

    let mut first = spawn_our_proxy(pb, &args);
    assert!(wait_proxy_connected(first.http, T));
    let (st, _) = blocking_request(
        first.http,
        "SUBSCRIBE",
        &format!("/key/{early}"),
        sub("TOK-E").as_bytes(),
    );
    assert_eq!(st, 200);
    let body = br#"{"data":"cA==","permanent":{"key":"TOK-P","client_id":"c","session_id":"s","platform":"android"}}"#;
    let (st, _) = blocking_request(first.http, "POST", &format!("/key/{perm}"), body);
    assert_eq!(st, 200);
    let end = Instant::now() + T;
    while timeouts(&he) + timeouts(&hp) < 2 {
        assert!(Instant::now() < end, "no timeout push: {:?}", gw.requests());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A subscription whose timeout push is not due yet when the proxy is killed.
    let (st, _) = blocking_request(
        first.http,
        "SUBSCRIBE",
        &format!("/key/{late}"),
        sub("TOK-L").as_bytes(),
    );
    assert_eq!(st, 200);
    assert_eq!(timeouts(&hl), 0);
    first.proc.kill(); // SIGKILL

    let second = spawn_our_proxy(pb, &args);
    assert!(wait_proxy_connected(second.http, T));
    let end = Instant::now() + T;
    while timeouts(&hl) == 0 {
        assert!(
            Instant::now() < end,
            "the restarted proxy never sent the pending timeout push"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two more sweeps: nothing is sent again.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        (timeouts(&he), timeouts(&hp), timeouts(&hl)),
        (1, 1, 1),
        "each timeout push exactly once"
    );
    let vid = gw
        .requests()
        .iter()
        .find(|r| r.body["notifications"][0]["data"]["timeout"] == hp.as_str())
        .map(|r| r.body["notifications"][0]["data"]["vid"].clone());
    assert!(
        vid.is_some_and(|v| v.is_string()),
        "permanent put timeout has its vid"
    );
    let s = stats(second.http);
    assert_eq!(s["pushListenersCount"].as_u64(), Some(2), "{s}");
    assert_eq!(s["totalPermanentPuts"].as_u64(), Some(1), "{s}");
}

/// Scenarios 14–16 at the HTTP level: a value POSTed to our proxy is read by a plain dhtnode
/// over UDP, a value put by the dhtnode is listed by GET, and a listen stream gets new values
/// as one chunked JSON line each.
#[test]
fn http_put_get_listen_against_a_plain_dhtnode() {
    use std::io::Read;
    let pb = free_udp_port();
    let mut b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let ours = spawn_our_proxy(pb, &[]);
    assert!(wait_proxy_connected(ours.http, T));
    let tag = format!("{:08x}", rand::random::<u32>());
    let key = format!("k{tag}");
    let h = hex_sha1(&key);
    let (st, body) = blocking_request(
        ours.http,
        "POST",
        &format!("/key/{h}"),
        br#"{"data":"aGVsbG8=","type":0}"#,
    );
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert!(
        v["id"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
        "string id: {body}"
    );
    b.cmd(&format!("g {key}"));
    assert!(b.wait("Get: completed", 1, T));
    assert!(
        b.output().contains("68656c6c6f"),
        "dhtnode sees the proxy's value: {}",
        b.output()
    );

    b.cmd(&format!("p {key} fromB"));
    assert!(b.wait("Put: success", 1, T));
    let (st, body) = blocking_request(ours.http, "GET", &format!("/key/{key}"), b"");
    assert_eq!(st, 200);
    assert!(body.contains("\"data\":\"ZnJvbUI=\""), "{body}");

    let mut s = std::net::TcpStream::connect(ours.http).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("GET /key/{h}/listen HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + T;
    let mut sent = false;
    while Instant::now() < end && !got.contains("bmV3") {
        if !sent && got.contains("ZnJvbUI=") {
            b.cmd(&format!("p {key} new"));
            sent = true;
        }
        if let Ok(n) = s.read(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(
        got.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{got}"
    );
    assert!(
        got.contains("{\"data\":\"bmV3\",\"id\":\""),
        "new value streamed: {got}"
    );
    let new_line = got.split("\r\n").find(|l| l.contains("bmV3")).unwrap();
    assert!(
        new_line.ends_with('\n'),
        "one JSON object + newline per chunk"
    );
}

/// 10 000 listen connections that never read (5 000 complete streams, 5 000 stuck half-way
/// through their request head) leave the proxy serving every other request; closing them
/// releases everything.
#[test]
fn ten_thousand_half_open_listen_streams_leave_the_proxy_serving() {
    let pb = free_udp_port();
    let _b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let ours = spawn_our_proxy(pb, &["--max-streams-per-ip", "20000"]);
    assert!(wait_proxy_connected(ours.http, T));
    let mut held = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let mut s = std::net::TcpStream::connect(ours.http).expect("connect");
        let req = if i % 2 == 0 {
            format!("GET /key/k{}/listen HTTP/1.1\r\nHost: x\r\n\r\n", i % 100)
        } else {
            format!(
                "GET /key/k{}/listen HTTP/1.1\r\nHost: x\r\nX-Slow:",
                i % 100
            )
        };
        s.write_all(req.as_bytes()).unwrap();
        held.push(s);
    }
    let end = Instant::now() + Duration::from_secs(30);
    while stats(ours.http)["listenCount"].as_u64() != Some(5_000) {
        assert!(
            Instant::now() < end,
            "streams not all open: {}",
            stats(ours.http)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    let (st, _) = blocking_request(ours.http, "GET", "/", b"");
    assert_eq!(st, 200);
    let (st, body) = blocking_request(ours.http, "POST", "/key/x", br#"{"data":"eA=="}"#);
    assert_eq!(st, 200, "{body}");
    let (st, _) = blocking_request(ours.http, "POST", "/key/x", b"{garbage");
    assert_eq!(st, 400);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the proxy stayed responsive"
    );
    drop(held);
    let end = Instant::now() + Duration::from_secs(30);
    while stats(ours.http)["listenCount"].as_u64() != Some(0) {
        assert!(
            Instant::now() < end,
            "streams not released: {}",
            stats(ours.http)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Scenario 9 through our proxy: values signed and encrypted by a real dhtnode identity are
/// served (signatures verified with the real OpenDHT to-sign bytes, encrypted values untouched);
/// a tampered copy is refused on POST and never served.
#[test]
fn signed_and_encrypted_values_from_a_real_identity() {
    let pb = free_udp_port();
    let _b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let mut signer = Dhtnode::spawn(&["-i", "-p", "0", "-b", &format!("127.0.0.1:{pb}")]);
    assert!(
        signer.wait("Public key ID", 1, Duration::from_secs(60)),
        "{}",
        signer.output()
    );
    let out = signer.output();
    let pkid = out
        .split("Public key ID")
        .nth(1)
        .and_then(|r| {
            r.split_whitespace()
                .find(|w| w.len() == 40 && w.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .expect("public key id")
        .to_owned();
    let ours = spawn_our_proxy(pb, &[]);
    assert!(wait_proxy_connected(ours.http, T));
    std::thread::sleep(Duration::from_secs(1));
    let tag = format!("{:08x}", rand::random::<u32>());
    signer.cmd(&format!("s sign{tag} hello-signed"));
    assert!(
        signer.wait("Put signed", 1, T) || signer.wait("success", 1, T),
        "{}",
        signer.output()
    );
    signer.cmd(&format!("e enc{tag} {pkid} secret-{tag}"));
    assert!(signer.wait("success", 2, T), "{}", signer.output());

    let (st, body) = blocking_request(ours.http, "GET", &format!("/key/sign{tag}"), b"");
    assert_eq!(st, 200);
    let line = body
        .lines()
        .find(|l| l.contains("\"sig\""))
        .unwrap_or_else(|| panic!("signed value served and verified: {body}"))
        .to_owned();
    let signed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        signed["owner"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    assert_eq!(signed["data"], "aGVsbG8tc2lnbmVk");

    let (st, body) = blocking_request(ours.http, "GET", &format!("/key/enc{tag}"), b"");
    assert_eq!(st, 200);
    assert!(
        body.contains("\"cypher\":\""),
        "encrypted value forwarded as is: {body}"
    );
    assert!(!body.contains("secret"), "{body}");

    // The signed value re-POSTed verbatim is accepted; with its data changed it is refused.
    let (st, _) = blocking_request(
        ours.http,
        "POST",
        &format!("/key/copy{tag}"),
        line.as_bytes(),
    );
    assert_eq!(st, 200);
    let mut tampered = signed;
    tampered["data"] = serde_json::json!("aGVsbG8tU0lHTkVE");
    tampered["id"] = serde_json::json!("0");
    let (st, body) = blocking_request(
        ours.http,
        "POST",
        &format!("/key/bad{tag}"),
        tampered.to_string().as_bytes(),
    );
    assert_eq!((st, body.trim()), (502, r#"{"err":"Put failed"}"#));
    let (_, body) = blocking_request(ours.http, "GET", &format!("/key/bad{tag}"), b"");
    assert!(!body.contains("aGVsbG8tU0lHTkVE"), "{body}");
}
