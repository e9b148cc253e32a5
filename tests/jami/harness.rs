//! The Jami conformance harness: a network namespace per test (veth pair with TEST-NET addresses,
//! IPv6 off), servers started inside it, a private D-Bus daemon, a headless `jamid`, and the
//! D-Bus agent (`tests/jami/agent.py`). Every process is started by the harness, stopped by its
//! PID, and the namespace is deleted, also when a test panics (see `Drop for Lab`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::Watched;

use crate::json::Json;

/// Prefix of the namespaces this suite creates: `wpjami-<test pid>-<n>`.
const NS_PREFIX: &str = "wpjami-";
/// Fixed ports: the namespace is fresh, so nothing else is bound in it.
pub(crate) const DHT_PORT: u16 = 4222;
pub(crate) const PROXY_DHT_PORT: u16 = 4223;
pub(crate) const PROXY_HTTP_PORT: u16 = 8095;
pub(crate) const NS_PORT: u16 = 8080;
pub(crate) const TURN_PORT: u16 = 3478;
pub(crate) const ADMIN_NS: u16 = 9101;
pub(crate) const ADMIN_TURN: u16 = 9102;
pub(crate) const ADMIN_PROXY: u16 = 9103;
pub(crate) const ADMIN_DHT: u16 = 9104;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A system binary the suite needs (jamid, dbus-daemon, ip, nft, dhtnode, turnserver).
pub(crate) fn system_binary(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.is_file(),
        "{path} is missing: install the Debian package `{package}` (scripts/install-deps.sh)"
    );
    p
}

/// The directory holding this build's binaries (`target/<profile>`): the test executable lives
/// in `target/<profile>/deps`, which honours `CARGO_TARGET_DIR` and the profile.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        target.join("debug")
    }
}

/// One of our server binaries, built with `cargo build -p <package>` when it is missing (a
/// `cargo nextest run -p waypost-tests` does not build other packages' binaries).
pub(crate) fn our_binary(bin: &str, package: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let path = bin_dir().join(bin);
    if path.is_file() {
        return path;
    }
    let _g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(root())
            .args(["build", "-p", package, "--bin", bin])
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success() && path.is_file(),
            "our binary `{bin}` is missing at {} and `cargo build -p {package}` failed:\n{}",
            path.display(),
            tail(&String::from_utf8_lossy(&out.stderr), 30)
        );
    }
    path
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip() -> Command {
    Command::new(system_binary("/usr/sbin/ip", "iproute2"))
}

/// A network namespace created by this test, deleted on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    /// Creates the namespace of spec §7.2: lo up, IPv6 off, a veth pair with both ends inside
    /// carrying 192.0.2.1/24 and 192.0.2.2/24, no default route, no link out.
    pub(crate) fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        sweep_stale_namespaces();
        let name = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        run(ip().args(["netns", "add", &name])).expect("ip netns add (the suite runs as root)");
        let ns = Self { name };
        for key in ["all", "default", "lo"] {
            ns.exec("/usr/sbin/sysctl")
                .args(["-q", "-w", &format!("net.ipv6.conf.{key}.disable_ipv6=1")])
                .status()
                .ok()
                .filter(|s| s.success())
                .expect("disable IPv6 in the namespace");
        }
        let n = ns.name.clone();
        for args in [
            vec!["-n", &n, "link", "set", "lo", "up"],
            vec![
                "-n", &n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ],
            vec!["-n", &n, "addr", "add", "192.0.2.1/24", "dev", "v0"],
            vec!["-n", &n, "addr", "add", "192.0.2.2/24", "dev", "v1"],
            vec!["-n", &n, "link", "set", "v0", "up"],
            vec!["-n", &n, "link", "set", "v1", "up"],
        ] {
            run(ip().args(&args)).expect("namespace set-up");
        }
        // The jamid ICE hang (spec §7.1) comes back with any IPv6 address: make sure there is none.
        let v6 = run(ip().args(["-n", &n, "-6", "addr", "show"])).expect("ip -6 addr");
        assert!(
            v6.trim().is_empty(),
            "IPv6 addresses left in the namespace: {v6}"
        );
        ns
    }

    /// A command run inside the namespace (`ip netns exec`, which execs the program: the child's
    /// PID is the program's PID).
    pub(crate) fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = ip();
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Loads an nftables ruleset inside the namespace.
    pub(crate) fn nft(&self, ruleset: &str) -> Result<(), String> {
        let mut child = self
            .exec(system_binary("/usr/sbin/nft", "nftables"))
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `nft list ruleset` inside the namespace (counters included).
    pub(crate) fn nft_list(&self) -> String {
        let out = self
            .exec("/usr/sbin/nft")
            .args(["list", "ruleset"])
            .output()
            .expect("nft list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_namespace_pids(&self.name);
        let _ = run(ip().args(["netns", "delete", &self.name]));
    }
}

/// Kills (SIGKILL, by PID) whatever is still running inside one of our namespaces. Only
/// processes this suite started can be in there.
fn kill_namespace_pids(name: &str) {
    if let Ok(pids) = run(ip().args(["netns", "pids", name])) {
        for pid in pids.split_whitespace() {
            if pid.chars().all(|c| c.is_ascii_digit()) {
                let _ = Command::new("kill")
                    .args(["-KILL", pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Deletes namespaces left behind by an earlier run of this suite that was killed before its
/// destructors ran (its test process, whose PID is in the name, no longer exists).
fn sweep_stale_namespaces() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(list) = run(ip().args(["netns", "list"])) else {
            return;
        };
        for line in list.lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
                kill_namespace_pids(name);
                let _ = run(ip().args(["netns", "delete", name]));
            }
        }
    });
}

/// The agent process (`agent.py`) and its JSON-lines channel.
pub(crate) struct Agent {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<String>,
    next: u64,
    stderr: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl Agent {
    fn spawn(ns: &Netns, bus: &str) -> Self {
        let python = system_binary("/usr/bin/python3", "python3");
        let mut child = ns
            .exec(python)
            .arg("-u")
            .arg(root().join("tests/jami/agent.py"))
            .arg(bus)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the D-Bus agent");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr_pipe, &mut buf);
            if let Ok(mut s) = sink.lock() {
                s.extend_from_slice(&buf);
            }
        });
        let agent = Self {
            child,
            stdin,
            rx,
            next: 1,
            stderr,
        };
        match agent.rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if line.contains("ready") => agent,
            other => panic!(
                "the D-Bus agent did not start ({other:?}); python3-dbus and python3-gi are \
                 needed: {}",
                String::from_utf8_lossy(&agent.stderr.lock().unwrap())
            ),
        }
    }

    /// Sends one request and waits for its answer (at most `timeout`).
    pub(crate) fn request(
        &mut self,
        mut req: BTreeMap<String, Json>,
        timeout: Duration,
    ) -> Result<Json, String> {
        let id = self.next;
        self.next += 1;
        req.insert("id".into(), Json::Num(id as f64));
        let line = Json::Obj(req).encode();
        writeln!(self.stdin, "{line}").map_err(|e| format!("agent stdin: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("agent stdin: {e}"))?;
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let v = Json::parse(&line).map_err(|e| format!("agent said {line:?}: {e}"))?;
                    if v.get("id").and_then(Json::as_f64) != Some(id as f64) {
                        continue;
                    }
                    if let Some(err) = v.get("err") {
                        return Err(err.as_str().unwrap_or("error").to_owned());
                    }
                    return Ok(v.get("ok").cloned().unwrap_or(Json::Null));
                }
                Err(RecvTimeoutError::Timeout) => return Err("agent did not answer in time".into()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "agent exited: {}",
                        String::from_utf8_lossy(&self.stderr.lock().unwrap())
                    ));
                }
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which implementation of each server a lab runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Impl {
    /// Ours, from target/<profile>.
    Ours,
    /// The reference peer (dhtnode 2.4.12, coturn 4.6.1): only for the harness baseline.
    Reference,
    /// Not started.
    Off,
}

/// What a lab starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    pub(crate) dht: Impl,
    pub(crate) turn: Impl,
    pub(crate) nameserver: Impl,
    pub(crate) proxy: Impl,
}

/// One of the servers started in the namespace.
pub(crate) struct Server {
    pub(crate) label: &'static str,
    pub(crate) ours: bool,
    pub(crate) proc: Watched,
    pub(crate) data_dir: Option<PathBuf>,
}

/// A namespace with servers, a private bus, jamid and the agent.
pub(crate) struct Lab {
    // Field order is drop order: the agent, jamid and the bus go first, then the servers, then the
    // namespace, then the scratch directory.
    pub(crate) agent: Option<Agent>,
    pub(crate) jamid: Option<Watched>,
    pub(crate) bus: Option<Watched>,
    pub(crate) servers: Vec<Server>,
    pub(crate) ns: Netns,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) setup: Setup,
    pub(crate) start: Instant,
}

fn obj<'a>(pairs: impl IntoIterator<Item = (&'a str, Json)>) -> BTreeMap<String, Json> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Lab {
    pub(crate) fn new(setup: Setup) -> Self {
        let start = Instant::now();
        let ns = Netns::create();
        let dir = tempfile::Builder::new()
            .prefix("waypost-jami-")
            .tempdir()
            .expect("scratch dir");
        let mut lab = Self {
            agent: None,
            jamid: None,
            bus: None,
            servers: Vec::new(),
            ns,
            dir,
            setup,
            start,
        };
        lab.start_servers();
        lab.start_jamid();
        lab
    }

    pub(crate) fn log(&self, what: &str) {
        eprintln!("[{:7.2}s] {what}", self.start.elapsed().as_secs_f64());
    }

    fn path(&self, rel: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(&p).expect("scratch subdir");
        p
    }

    fn spawn_server(
        &mut self,
        label: &'static str,
        ours: bool,
        cmd: Command,
        data_dir: Option<PathBuf>,
    ) {
        let proc = Watched::spawn(cmd).unwrap_or_else(|e| panic!("start {label}: {e}"));
        self.servers.push(Server {
            label,
            ours,
            proc,
            data_dir,
        });
    }

    /// Waits until `label` accepts TCP on `port` inside the namespace (probed from the agent-less
    /// side with `ip netns exec … python3`), or its process exits.
    fn wait_server(&mut self, label: &str, port: u16, udp: bool) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = if udp {
                format!(
                    "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                     try:\n s.bind(('127.0.0.1',{port}))\nexcept OSError:\n sys.exit(0)\nsys.exit(1)"
                )
            } else {
                format!(
                    "import socket,sys\ntry:\n socket.create_connection(('127.0.0.1',{port}),0.5)\n\
                     except OSError:\n sys.exit(1)"
                )
            };
            let ok = self
                .ns
                .exec("/usr/bin/python3")
                .args(["-c", &probe])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            let srv = self
                .servers
                .iter_mut()
                .find(|s| s.label == label)
                .expect("server");
            if !srv.proc.is_running() || Instant::now() > end {
                let out = String::from_utf8_lossy(&[srv.proc.stdout(), srv.proc.stderr()].concat())
                    .into_owned();
                panic!(
                    "{label} did not come up on port {port} in the namespace:\n{}",
                    tail(&out, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_servers(&mut self) {
        let s = self.setup;
        match s.dht {
            Impl::Ours => {
                let mut c = self.ns.exec(our_binary("dht-node", "waypost-dht-node"));
                c.args(["--log-level", "trace", "--bind", "127.0.0.1"])
                    .args(["--port", &DHT_PORT.to_string()])
                    .args(["--admin-listen", &format!("127.0.0.1:{ADMIN_DHT}")]);
                self.spawn_server("dht-node", true, c, None);
                self.wait_server("dht-node", DHT_PORT, true);
            }
            Impl::Reference => {
                let mut c = self.ns.exec(system_binary("/usr/bin/dhtnode", "dhtnode"));
                c.args(["-s", "-p", &DHT_PORT.to_string()]);
                self.spawn_server("dhtnode (reference)", false, c, None);
                self.wait_server("dhtnode (reference)", DHT_PORT, true);
            }
            Impl::Off => {}
        }
        match s.nameserver {
            Impl::Ours => {
                let data = self.path("nameserver");
                let mut c = self.ns.exec(our_binary("nameserver", "waypost-nameserver"));
                c.args(["--log-level", "trace"])
                    .args(["--listen", &format!("0.0.0.0:{NS_PORT}")])
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["--admin-listen", &format!("127.0.0.1:{ADMIN_NS}")]);
                self.spawn_server("nameserver", true, c, Some(data));
                self.wait_server("nameserver", NS_PORT, false);
            }
            Impl::Reference => panic!("there is no reference name server"),
            Impl::Off => {}
        }
        match s.turn {
            Impl::Ours => {
                let mut c = self
                    .ns
                    .exec(our_binary("turn-server", "waypost-turn-server"));
                c.args(["--log-level", "trace"])
                    .args(["--listen", &format!("127.0.0.1:{TURN_PORT}")])
                    .args(["--realm", "ring", "--user", "ring:ring"])
                    .args(["--relay-ip", "127.0.0.1", "--allow-loopback-peers"])
                    .args(["--allowed-peer", "192.0.2.0/24", "--drain-seconds", "1"])
                    .args(["--admin-listen", &format!("127.0.0.1:{ADMIN_TURN}")]);
                self.spawn_server("turn-server", true, c, None);
                self.wait_server("turn-server", TURN_PORT, false);
            }
            Impl::Reference => {
                let scratch = self.path("coturn");
                let mut c = self.ns.exec(system_binary("/usr/bin/turnserver", "coturn"));
                c.args(["--listening-ip", "127.0.0.1"])
                    .args(["--listening-port", &TURN_PORT.to_string()])
                    .args(["--relay-ip", "127.0.0.1", "--allow-loopback-peers"])
                    .args(["--lt-cred-mech", "--user=ring:ring", "--realm=ring"])
                    .args(["--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout"])
                    .arg(format!("--pidfile={}", scratch.join("pid").display()))
                    .arg(format!("--userdb={}", scratch.join("userdb").display()));
                self.spawn_server("turnserver (reference)", false, c, None);
                self.wait_server("turnserver (reference)", TURN_PORT, false);
            }
            Impl::Off => {}
        }
        match s.proxy {
            Impl::Ours => {
                let data = self.path("dht-proxy");
                let mut c = self.ns.exec(our_binary("dht-proxy", "waypost-dht-proxy"));
                c.args(["--log-level", "trace"])
                    .args(["--listen", &format!("127.0.0.1:{PROXY_HTTP_PORT}")])
                    .args(["--port", &PROXY_DHT_PORT.to_string()])
                    .args(["--dht-bind", "127.0.0.1"])
                    .args(["--bootstrap", &format!("127.0.0.1:{DHT_PORT}")])
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["--admin-listen", &format!("127.0.0.1:{ADMIN_PROXY}")]);
                self.spawn_server("dht-proxy", true, c, Some(data));
                self.wait_server("dht-proxy", PROXY_HTTP_PORT, false);
            }
            Impl::Reference => {
                let mut c = self.ns.exec(system_binary("/usr/bin/dhtnode", "dhtnode"));
                c.args(["-s", "-p", &PROXY_DHT_PORT.to_string()])
                    .args(["-b", &format!("127.0.0.1:{DHT_PORT}")])
                    .args(["--proxyserver", &PROXY_HTTP_PORT.to_string()]);
                self.spawn_server("dhtnode proxy (reference)", false, c, None);
                self.wait_server("dhtnode proxy (reference)", PROXY_HTTP_PORT, false);
            }
            Impl::Off => {}
        }
    }

    fn start_jamid(&mut self) {
        let run_dir = self.path("run");
        let sock = run_dir.join("bus.sock");
        let conf = run_dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>session</type><listen>unix:path={}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                 <allow own=\"*\"/></policy></busconfig>\n",
                sock.display()
            ),
        )
        .expect("bus config");
        let mut bus = self.ns.exec(system_binary("/usr/bin/dbus-daemon", "dbus"));
        bus.arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        let bus = Watched::spawn(bus).expect("start dbus-daemon");
        self.bus = Some(bus);
        let end = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < end,
                "dbus-daemon did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let address = format!("unix:path={}", sock.display());
        let home = self.path("home");
        let mut j = self
            .ns
            .exec(system_binary("/usr/libexec/jamid", "jami-daemon"));
        j.args(["-c", "-d", "-p"])
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", self.path("home/config"))
            .env("XDG_DATA_HOME", self.path("home/data"))
            .env("XDG_CACHE_HOME", self.path("home/cache"))
            .env("XDG_RUNTIME_DIR", self.path("home/runtime"))
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("DHTLOGLEVEL", "3")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        self.jamid = Some(Watched::spawn(j).expect("start jamid"));
        self.agent = Some(Agent::spawn(&self.ns, &address));
        // jamid owns cx.ring.Ring within about 0.3 s.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match self.call("getAccountList", vec![]) {
                Ok(_) => break,
                Err(e) => {
                    if Instant::now() > end || !self.jamid.as_mut().is_some_and(Watched::is_running)
                    {
                        panic!(
                            "jamid did not come up on the bus: {e}\n{}",
                            self.jamid_log_tail(40)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        self.log("jamid is on the bus");
    }

    pub(crate) fn jamid_log(&self) -> String {
        self.jamid.as_ref().map_or_else(String::new, |j| {
            String::from_utf8_lossy(&[j.stdout(), j.stderr()].concat()).into_owned()
        })
    }

    pub(crate) fn jamid_log_tail(&self, n: usize) -> String {
        tail(&self.jamid_log(), n)
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("agent")
    }

    /// ConfigurationManager.`method`(args).
    pub(crate) fn call(&mut self, method: &str, args: Vec<Json>) -> Result<Json, String> {
        let req = obj([
            ("op", Json::str("call")),
            ("method", Json::str(method)),
            ("args", Json::Arr(args)),
            ("timeout", Json::Num(30.0)),
        ]);
        self.agent().request(req, Duration::from_secs(40))
    }

    /// Like [`Self::call`], panicking with the jamid log on error.
    pub(crate) fn must(&mut self, method: &str, args: Vec<Json>) -> Json {
        match self.call(method, args) {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e}\n{}", self.jamid_log_tail(40)),
        }
    }

    /// Waits for signal `name` whose positional arguments match `matches` (index, value), with
    /// sequence number above `since`. Returns (seq, args) or an error with `timeout` exceeded.
    pub(crate) fn wait_signal(
        &mut self,
        name: &str,
        matches: &[(usize, Json)],
        since: u64,
        timeout: Duration,
    ) -> Result<(u64, Vec<Json>), String> {
        let m = Json::Obj(
            matches
                .iter()
                .map(|(i, v)| (i.to_string(), v.clone()))
                .collect(),
        );
        let req = obj([
            ("op", Json::str("wait_signal")),
            ("signal", Json::str(name)),
            ("match", m),
            ("since", Json::Num(since as f64)),
            ("timeout", Json::Num(timeout.as_secs_f64())),
        ]);
        let v = self
            .agent()
            .request(req, timeout + Duration::from_secs(10))?;
        let seq = v.get("seq").and_then(Json::as_f64).unwrap_or(0.0) as u64;
        let args = match v.get("args") {
            Some(Json::Arr(a)) => a.clone(),
            _ => Vec::new(),
        };
        Ok((seq, args))
    }

    /// The sequence number of the last signal recorded so far.
    pub(crate) fn last_seq(&mut self) -> u64 {
        let req = obj([("op", Json::str("signals")), ("since", Json::Num(0.0))]);
        match self.agent().request(req, Duration::from_secs(10)) {
            Ok(Json::Arr(v)) => v
                .last()
                .and_then(|s| s.at(0))
                .and_then(Json::as_f64)
                .unwrap_or(0.0) as u64,
            _ => 0,
        }
    }

    /// Polls account details until `key` equals `value` (`None`: any non-empty value).
    pub(crate) fn wait_details(
        &mut self,
        account: &str,
        volatile: bool,
        key: &str,
        value: Option<&str>,
        timeout: Duration,
    ) -> Result<Json, String> {
        let req = obj([
            ("op", Json::str("wait_details")),
            ("account", Json::str(account)),
            ("volatile", Json::Bool(volatile)),
            ("key", Json::str(key)),
            ("value", value.map_or(Json::Null, Json::str)),
            ("timeout", Json::Num(timeout.as_secs_f64())),
        ]);
        self.agent().request(req, timeout + Duration::from_secs(10))
    }

    /// An HTTP GET from inside the namespace (metrics pages).
    pub(crate) fn http_get(&mut self, url: &str) -> Result<String, String> {
        let req = obj([
            ("op", Json::str("http_get")),
            ("url", Json::str(url)),
            ("timeout", Json::Num(5.0)),
        ]);
        self.agent()
            .request(req, Duration::from_secs(15))
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// The account settings pointing jamid at this lab's servers (spec §2), plus `extra`.
    pub(crate) fn account_details(
        &mut self,
        alias: &str,
        extra: &[(&str, &str)],
    ) -> BTreeMap<String, String> {
        let template = self.must("getAccountTemplate", vec![Json::str("RING")]);
        let mut d: BTreeMap<String, String> = match template {
            Json::Obj(m) => m
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let turn_on = self.setup.turn != Impl::Off;
        let ns_uri = format!("http://127.0.0.1:{NS_PORT}");
        let turn_server = format!("127.0.0.1:{TURN_PORT}");
        let hostname = format!("127.0.0.1:{DHT_PORT}");
        for (k, v) in [
            ("Account.type", "RING"),
            ("Account.alias", alias),
            ("Account.displayName", alias),
            ("Account.hostname", hostname.as_str()),
            ("RingNS.uri", ns_uri.as_str()),
            ("Account.upnpEnabled", "false"),
            ("Account.peerDiscovery", "false"),
            ("Account.accountDiscovery", "false"),
            ("Account.accountPublish", "false"),
            ("Account.dhtProxyListUrl", ""),
            ("Account.proxyEnabled", "false"),
            ("Account.proxyServer", ""),
            ("Account.archivePassword", ""),
            ("Account.videoEnabled", "false"),
            ("TURN.enable", if turn_on { "true" } else { "false" }),
            ("TURN.server", turn_server.as_str()),
            ("TURN.username", "ring"),
            ("TURN.password", "ring"),
            ("TURN.realm", "ring"),
        ] {
            d.insert(k.to_owned(), v.to_owned());
        }
        for (k, v) in extra {
            d.insert((*k).to_owned(), (*v).to_owned());
        }
        d
    }

    /// addAccount: returns the account ID at once (keys are generated in the background).
    pub(crate) fn add_account(&mut self, alias: &str, extra: &[(&str, &str)]) -> String {
        let d = self.account_details(alias, extra);
        let id = self.must("addAccount", vec![Json::dict(&d)]);
        id.as_str().expect("account id").to_owned()
    }

    /// The account's Jami ID (40 hex), once its keys exist.
    pub(crate) fn jami_id(&mut self, account: &str, timeout: Duration) -> String {
        match self.wait_details(account, false, "Account.username", None, timeout) {
            Ok(d) => {
                let u = d.s("Account.username");
                u.trim_start_matches("ring:").to_owned()
            }
            Err(e) => panic!(
                "account {account} got no Jami ID: {e}\n{}",
                self.jamid_log_tail(40)
            ),
        }
    }

    /// Scrapes a metrics page of one of our servers.
    pub(crate) fn metrics(&mut self, admin_port: u16) -> String {
        self.http_get(&format!("http://127.0.0.1:{admin_port}/metrics"))
            .unwrap_or_else(|e| panic!("metrics on admin port {admin_port}: {e}"))
    }

    /// A metrics page, or "" when the server is not up (for the canary's sources).
    pub(crate) fn metrics_or_empty(&mut self, admin_port: u16) -> String {
        self.http_get(&format!("http://127.0.0.1:{admin_port}/metrics"))
            .unwrap_or_default()
    }

    /// Stops jamid (SIGTERM, then SIGKILL after 8 s) and returns whether SIGTERM was enough.
    pub(crate) fn stop_jamid(&mut self) -> bool {
        let Some(mut j) = self.jamid.take() else {
            return true;
        };
        if !j.is_running() {
            self.jamid = Some(j);
            return true;
        }
        let clean = j.terminate(Duration::from_secs(8)).is_some();
        if !clean {
            j.kill();
        }
        // Keep its output for diagnostics.
        self.jamid = Some(j);
        clean
    }

    /// Stops our servers (SIGTERM, so they flush) and runs the privacy canary over their outputs:
    /// standard output and error (trace level), metrics pages collected by the test, and the files
    /// they wrote outside their stores.
    pub(crate) fn assert_canary(&mut self, canary: &Canary, metrics: &[(String, String)]) {
        let mut sources = Vec::new();
        for (label, page) in metrics {
            sources.push(Source::other(label, page.as_bytes()));
        }
        for s in &mut self.servers {
            if !s.ours {
                continue;
            }
            if s.proc.is_running() && s.proc.terminate(Duration::from_secs(10)).is_none() {
                s.proc.kill();
            }
            sources.push(Source::log(
                &format!("{} stdout", s.label),
                &s.proc.stdout(),
            ));
            sources.push(Source::log(
                &format!("{} stderr", s.label),
                &s.proc.stderr(),
            ));
        }
        canary.assert_clean(&sources);
    }

    /// The PIDs of every process the lab started (jamid, bus, agent, servers).
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.servers.iter().map(|s| s.proc.pid()).collect();
        v.extend(self.jamid.as_ref().map(Watched::pid));
        v.extend(self.bus.as_ref().map(Watched::pid));
        v.extend(self.agent.as_ref().map(|a| a.child.id()));
        v
    }

    /// The server entry for `label`.
    pub(crate) fn server(&self, label: &str) -> &Server {
        self.servers
            .iter()
            .find(|s| s.label == label)
            .expect("server")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // jamid first (it may need SIGKILL after an ICE hang), then everything else by PID via
        // the fields' own destructors, then the namespace.
        self.stop_jamid();
        self.bus = None;
        for s in &mut self.servers {
            if s.proc.is_running() && s.proc.terminate(Duration::from_secs(3)).is_none() {
                s.proc.kill();
            }
        }
        // Diagnostics: WAYPOST_JAMI_LOGS=<dir> keeps jamid's and every server's output.
        if let Some(dir) = std::env::var_os("WAYPOST_JAMI_LOGS").map(PathBuf::from) {
            let _ = std::fs::create_dir_all(&dir);
            let tag = std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-");
            let _ = std::fs::write(dir.join(format!("{tag}.jamid.log")), self.jamid_log());
            for s in &self.servers {
                let out = [s.proc.stdout(), s.proc.stderr()].concat();
                let file = format!("{tag}.{}.log", s.label.replace(' ', "_"));
                let _ = std::fs::write(dir.join(file), out);
            }
        }
    }
}

/// Sum of the samples of every metric line whose name ends with `name` and whose label set
/// contains every `labels` fragment.
pub(crate) fn metric_sum(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().unwrap_or("").ends_with(name))
        .filter(|l| {
            labels
                .iter()
                .all(|f| l.to_ascii_lowercase().contains(&f.to_ascii_lowercase()))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
