//! End to end: two peers meet through our servers, as real processes on loopback.
//!
//! Alice creates an identity and registers `alice`; Bob resolves `alice` to her Jami ID;
//! Alice's "phone" subscribes to her inbox key through the DHT proxy with a push token (a
//! UnifiedPush endpoint served by node-client's built-in push receiver); Bob, as a UDP DHT node,
//! puts an encrypted-looking request on Alice's inbox key; the push arrives and Alice fetches the
//! value through the proxy; then both allocate TURN (Alice a TCP relay, RFC 6062; Bob a UDP
//! relay) and 1 MB goes each way through the relay, checked by SHA-256. The `interop` variant
//! has a real `dhtnode` (2.4.12) stand in for Bob's node. The privacy canary then checks every
//! server's output and data directory.
//!
//! The binaries come from the target directory (built with `cargo build -p ...` when any source
//! is newer than them) and run with `--log-level trace`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::{Watched, free_port, require_binary, wait_tcp};

const PACKAGES: [&str; 5] = [
    "waypost-dht-node",
    "waypost-dht-proxy",
    "waypost-turn-server",
    "waypost-nameserver",
    "waypost-node-client",
];
const MB: usize = 1_000_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

const BINARIES: [&str; 5] = [
    "dht-node",
    "dht-proxy",
    "turn-server",
    "nameserver",
    "node-client",
];

/// Newest modification time of the sources the binaries are built from.
fn newest_source(root: &Path) -> std::time::SystemTime {
    let mut newest = std::time::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = [
        "protocol",
        "net",
        "dht-node",
        "dht-proxy",
        "turn-server",
        "nameserver",
        "node-client",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    stack.push(root.join("Cargo.lock"));
    stack.push(root.join("Cargo.toml"));
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if p.ends_with("tests") || p.ends_with("benches") {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = meta.modified() {
            newest = newest.max(m);
        }
    }
    newest
}

/// The directory of the servers' and node-client's binaries, built once per test process
/// (`cargo build -p ...`, with the test command's features) unless they are newer than every
/// source file or `WAYPOST_BINS_FRESH` says the workspace run has just built them.
fn bins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace();
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let dir = target.join("debug");
        let oldest_bin = BINARIES
            .iter()
            .map(|b| {
                std::fs::metadata(dir.join(b))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH)
            })
            .min()
            .unwrap_or(std::time::UNIX_EPOCH);
        // scripts/test.sh sets WAYPOST_BINS_FRESH: its `nextest run --workspace` has just built
        // every binary, and rebuilding one here (with another feature set) would swap it under
        // the tests running in parallel (seen: the eth tests got a nameserver without `eth`).
        let trust_build = std::env::var_os("WAYPOST_BINS_FRESH").is_some();
        if !trust_build && oldest_bin <= newest_source(&root) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut cmd = Command::new(cargo);
            // Same features as the test command, so a rebuild never drops the nameserver's `eth`.
            cmd.current_dir(&root)
                .args(["build", "--features", "waypost-nameserver/eth"]);
            for p in PACKAGES {
                cmd.args(["-p", p]);
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build of the servers failed");
        }
        for b in BINARIES {
            assert!(dir.join(b).is_file(), "{b} was not built in {dir:?}");
        }
        dir
    })
}

fn server(bin: &str, args: &[String]) -> Watched {
    let mut cmd = Command::new(bins().join(bin));
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--log-level").arg("trace").args(args);
    Watched::spawn(cmd).unwrap_or_else(|e| panic!("start {bin}: {e}"))
}

fn nc_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bins().join("node-client"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--json").args(args);
    cmd
}

/// Runs node-client to completion; returns its JSON lines, failing on a non-zero exit.
fn nc(args: &[&str]) -> Vec<Value> {
    let out = nc_command(args).output().expect("run node-client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node-client {args:?} failed ({:?}): {stdout}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("node-client prints JSON lines"))
        .collect()
}

/// node-client in the background; JSON lines read on a thread; killed by PID on drop.
struct Bg {
    child: Child,
    lines: mpsc::Receiver<Value>,
    what: String,
}

impl Bg {
    fn start(args: &[&str]) -> Self {
        let mut child = nc_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node-client");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Self {
            child,
            lines: rx,
            what: format!("{:?}", args.iter().take(2).collect::<Vec<_>>()),
        }
    }

    fn next(&self, timeout: Duration) -> Value {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("node-client {} printed nothing in time", self.what))
    }

    fn wait_ok(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().expect("wait") {
                assert!(s.success(), "node-client {} exited with {s}", self.what);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node-client {} did not exit in time", self.what);
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reference `dhtnode` reading commands on stdin; killed by PID on drop.
struct DhtNode {
    child: Child,
}

impl DhtNode {
    fn start(bootstrap: SocketAddr) -> Self {
        let bin = require_binary("dhtnode");
        let child = Command::new(bin)
            .args(["-p", &free_port().to_string(), "-b", &bootstrap.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dhtnode");
        Self { child }
    }

    fn cmd(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to dhtnode");
        stdin.flush().expect("flush");
    }
}

impl Drop for DhtNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` on an admin listener (plain HTTP/1.0).
fn metrics(admin: SocketAddr) -> Vec<u8> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(admin).expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("response");
    assert!(
        out.starts_with(b"HTTP/1.1 200") || out.starts_with(b"HTTP/1.0 200"),
        "/metrics: {}",
        String::from_utf8_lossy(&out)
    );
    out
}

struct Suite {
    admins: Vec<(&'static str, SocketAddr)>,
    dht: Watched,
    proxy: Watched,
    turn: Watched,
    ns: Watched,
    dht_addr: SocketAddr,
    proxy_url: String,
    turn_addr: String,
    ns_url: String,
    data: tempfile::TempDir,
}

impl Suite {
    fn start(canary: &Canary) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let (p_dht, p_http, p_pdht, p_turn, p_ns) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let s = |v: &str| v.to_owned();
        let admins: Vec<(&'static str, SocketAddr)> =
            ["dht-node", "dht-proxy", "turn-server", "nameserver"]
                .into_iter()
                .map(|n| (n, SocketAddr::from(([127, 0, 0, 1], free_port()))))
                .collect();
        let admin = |i: usize| [s("--admin-listen"), admins[i].1.to_string()];
        let dht = server(
            "dht-node",
            &[
                &[s("--bind"), s("127.0.0.1"), s("--port"), p_dht.to_string()][..],
                &admin(0),
            ]
            .concat(),
        );
        let dht_addr: SocketAddr = ([127, 0, 0, 1], p_dht).into();
        std::thread::sleep(Duration::from_millis(300));
        let proxy = server(
            "dht-proxy",
            &[
                s("--listen"),
                format!("127.0.0.1:{p_http}"),
                s("--port"),
                p_pdht.to_string(),
                s("--bootstrap"),
                dht_addr.to_string(),
                s("--data-dir"),
                data.path().join("dht-proxy").display().to_string(),
                admin(1)[0].clone(),
                admin(1)[1].clone(),
            ],
        );
        let turn = server(
            "turn-server",
            &[
                s("--listen"),
                format!("127.0.0.1:{p_turn}"),
                s("--relay-ip"),
                s("127.0.0.1"),
                s("--allow-loopback-peers"),
                s("--user"),
                s("ring:ring"),
                s("--user"),
                format!("{}:{}", canary.username, canary.key),
                admin(2)[0].clone(),
                admin(2)[1].clone(),
            ],
        );
        let ns = server(
            "nameserver",
            &[
                s("--listen"),
                format!("127.0.0.1:{p_ns}"),
                s("--data-dir"),
                data.path().join("nameserver").display().to_string(),
                admin(3)[0].clone(),
                admin(3)[1].clone(),
            ],
        );
        for (name, port) in [
            ("dht-proxy", p_http),
            ("turn-server", p_turn),
            ("nameserver", p_ns),
        ] {
            assert!(
                wait_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(30)),
                "{name} did not start listening"
            );
        }
        let suite = Self {
            admins,
            dht,
            proxy,
            turn,
            ns,
            dht_addr,
            proxy_url: format!("http://127.0.0.1:{p_http}"),
            turn_addr: format!("127.0.0.1:{p_turn}"),
            ns_url: format!("http://127.0.0.1:{p_ns}"),
            data,
        };
        // The proxy's node must have joined the bootstrap node.
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let info = nc(&["dht", "info", "--proxy", &suite.proxy_url]);
            if info[0]["connected"] == true {
                break;
            }
            assert!(
                Instant::now() < end,
                "the proxy never reported a good DHT node: {info:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        suite
    }
}

enum Bob {
    Ours,
    Dhtnode,
}

fn scenario(bob: Bob) {
    let mut canary = Canary::new();
    canary.name = "alice".to_owned();
    let base = canary.clone();
    let ip = canary.ip.to_string();
    let suite = Suite::start(&canary);
    let dir = tempfile::tempdir().expect("tempdir");

    // Alice: identity, name registration.
    let alice_pem = dir.path().join("alice.pem");
    let alice_pem = alice_pem.to_str().expect("utf-8 path");
    let id = nc(&["identity", "new", "--identity", alice_pem]);
    let jami_id = id[0]["jami_id"].as_str().expect("jami id").to_owned();
    let inbox = id[0]["inbox_key"].as_str().expect("inbox key").to_owned();
    assert_eq!(id[0]["bits"], 4096);
    canary.plant("alice's jami id", &jami_id);
    canary.plant("alice's inbox key", &inbox);
    let reg = nc(&[
        "name",
        "register",
        "--server",
        &suite.ns_url,
        "--identity",
        alice_pem,
        "alice",
    ]);
    assert_eq!(reg[0]["status"], "success", "{reg:?}");

    // Bob resolves alice.
    let found = nc(&["name", "lookup", "--server", &suite.ns_url, "alice"]);
    assert_eq!(found[0]["addr"], format!("0x{jami_id}"), "{found:?}");
    assert_eq!(found[0]["verified"], true);
    let bob_sees = found[0]["addr"]
        .as_str()
        .and_then(|a| a.strip_prefix("0x"))
        .expect("addr")
        .to_owned();
    let inbox_key = format!("inbox:{bob_sees}");

    // Alice's phone subscribes (from the canary IP) with a push token: its UnifiedPush endpoint.
    let push_port = free_port();
    let token = format!("http://127.0.0.1:{push_port}/up/{}", canary.token);
    let listen = format!("127.0.0.1:{push_port}");
    let mut phone = Bg::start(&[
        "push",
        "listen",
        "--proxy",
        &suite.proxy_url,
        &inbox_key,
        "--client-id",
        &jami_id,
        "--platform",
        "unifiedpush",
        "--token",
        &token,
        "--listen",
        &listen,
        "--source-ip",
        &ip,
        "--fetch",
        "--count",
        "1",
        "--timeout",
        "90",
    ]);
    let sub = phone.next(Duration::from_secs(30));
    assert_eq!(sub["event"], "subscribed", "{sub}");
    assert_eq!(sub["keys"][0], inbox.as_str());

    // Bob puts a request on Alice's inbox key.
    let expected: Value;
    let _dhtnode;
    match bob {
        Bob::Ours => {
            let put = nc(&[
                "dht",
                "put",
                "--bootstrap",
                &suite.dht_addr.to_string(),
                "--bind",
                &format!("{ip}:0"),
                &inbox_key,
                "--cypher-random",
                "1700",
            ]);
            assert_eq!(put[0]["acknowledged"], true, "{put:?}");
            expected = put[0]["value"].clone();
            assert!(expected["cypher"].is_string());
        }
        Bob::Dhtnode => {
            let mut d = DhtNode::start(suite.dht_addr);
            std::thread::sleep(Duration::from_secs(3));
            d.cmd(&format!("p {inbox} hello-from-dhtnode"));
            expected = serde_json::json!({"text": "hello-from-dhtnode"});
            _dhtnode = d;
        }
    }

    // The push arrives; Alice fetches through the proxy.
    let push = phone.next(Duration::from_secs(60));
    assert_eq!(push["event"], "push", "{push}");
    assert_eq!(push["data"]["to"], jami_id.as_str());
    assert_eq!(push["data"]["key"], inbox.as_str());
    let fetched = phone.next(Duration::from_secs(30));
    assert_eq!(fetched["event"], "fetched", "{fetched}");
    let values = fetched["values"].as_array().expect("values");
    let matches = |v: &Value| match &bob {
        Bob::Ours => v["id"] == expected["id"] && v["cypher"] == expected["cypher"],
        Bob::Dhtnode => v["text"] == expected["text"],
    };
    assert!(
        values.iter().any(matches),
        "Bob's value not fetched: {fetched}"
    );
    phone.wait_ok(Duration::from_secs(20));

    // TURN: Alice allocates a TCP relay (RFC 6062, Jami's default ring/ring) and Bob a UDP relay
    // (with his own credentials); 1 MB each way through the relay.
    let bytes = MB.to_string();
    let mut alice_turn = Bg::start(&[
        "turn",
        "listen",
        "--server",
        &suite.turn_addr,
        "--transport",
        "tcp",
        "--tcp-relay",
        "--permit",
        &ip,
        "--bytes",
        &bytes,
        "--timeout",
        "120",
    ]);
    let a = alice_turn.next(Duration::from_secs(20));
    assert_eq!(a["event"], "allocated", "{a}");
    let alice_relay = a["relayed"].as_str().expect("relayed").to_owned();
    let mut bob_turn = Bg::start(&[
        "turn",
        "listen",
        "--server",
        &suite.turn_addr,
        "--transport",
        "udp",
        "--user",
        &canary.username,
        "--password",
        &canary.key,
        "--source-ip",
        &ip,
        "--permit",
        "127.0.0.1",
        "--bytes",
        &bytes,
        "--timeout",
        "120",
    ]);
    let b = bob_turn.next(Duration::from_secs(20));
    assert_eq!(b["event"], "allocated", "{b}");
    let bob_relay = b["relayed"].as_str().expect("relayed").to_owned();
    assert_ne!(alice_relay, bob_relay);

    let bob_sent = nc(&[
        "turn",
        "send",
        "--peer",
        &alice_relay,
        "--tcp",
        "--direct",
        "--source-ip",
        &ip,
        "--bytes",
        &bytes,
        "--seed",
        "11",
    ]);
    let alice_got = alice_turn.next(Duration::from_secs(60));
    assert_eq!(alice_got["event"], "received", "{alice_got}");
    assert_eq!(alice_got["bytes"], MB);
    assert_eq!(alice_got["sha256"], bob_sent[0]["sha256"], "checksum");
    alice_turn.wait_ok(Duration::from_secs(20));

    let alice_sent = nc(&[
        "turn", "send", "--peer", &bob_relay, "--direct", "--bytes", &bytes, "--seed", "12",
    ]);
    let bob_got = bob_turn.next(Duration::from_secs(120));
    assert_eq!(bob_got["event"], "received", "{bob_got}");
    assert_eq!(bob_got["bytes"], MB);
    assert_eq!(bob_got["sha256"], alice_sent[0]["sha256"], "checksum");
    bob_turn.wait_ok(Duration::from_secs(20));

    // Privacy canary over every server's metrics, output and data directory.
    let mut sources = Vec::new();
    for (name, addr) in &suite.admins {
        sources.push(Source::other(&format!("{name} /metrics"), &metrics(*addr)));
    }
    let mut servers = [
        ("dht-node", suite.dht),
        ("dht-proxy", suite.proxy),
        ("turn-server", suite.turn),
        ("nameserver", suite.ns),
    ];
    for (name, p) in &mut servers {
        let code = p.terminate(Duration::from_secs(15));
        assert_eq!(code, Some(0), "{name} did not stop cleanly on SIGTERM");
        sources.push(Source::log(&format!("{name} stdout"), &p.stdout()));
        sources.push(Source::log(&format!("{name} stderr"), &p.stderr()));
    }
    canary.assert_clean(&sources);
    // Data directories hold what the servers must keep (the registry holds the name and Alice's
    // key; the proxy holds the push subscription: token, key, client id), nothing else.
    let ns_dir = suite.data.path().join("nameserver");
    assert!(
        base.find_leaks(&Source::files_under(&ns_dir))
            .iter()
            .any(|l| l.ends_with("planted name")),
        "the registered name is not in the name server's store: the canary looked for the wrong strings"
    );
    let mut ns_files = base.clone();
    ns_files.name = String::new();
    ns_files.assert_clean(&Source::files_under(&ns_dir));
    let mut proxy_files = base;
    proxy_files.token = String::new();
    proxy_files.assert_clean(&Source::files_under(&suite.data.path().join("dht-proxy")));
}

#[test]
fn two_peers_meet_through_our_servers() {
    scenario(Bob::Ours);
}

#[test]
fn interop_two_peers_meet_with_dhtnode_as_bob() {
    scenario(Bob::Dhtnode);
}
