//! Test helpers: reference `dhtnode` processes (stdin commands, captured output) and our node
//! in-process, all on loopback. Processes are killed by PID when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use waypost_dht_node::{NodeHandle, NodeOptions};
use waypost_net::shutdown::Shutdown;

/// Finds a reference binary; a missing peer is a failure, never a skip.
pub(crate) fn require(path: &str) -> String {
    assert!(
        std::path::Path::new(path).is_file(),
        "reference peer {path} is not installed (Debian packages dhtnode / python3-opendht)"
    );
    path.to_owned()
}

/// A UDP port free on loopback right now.
pub(crate) fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// A `dhtnode` 2.4.12 process.
pub(crate) struct RefNode {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    /// Its UDP port.
    pub(crate) port: u16,
}

impl RefNode {
    /// Starts `dhtnode -p PORT ARGS...`.
    pub(crate) fn spawn(args: &[&str]) -> Self {
        let bin = require("/usr/bin/dhtnode");
        let port = free_udp_port();
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dhtnode");
        let out = Arc::new(Mutex::new(String::new()));
        for mut r in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdin = child.stdin.take().expect("stdin");
        let node = Self {
            child,
            stdin,
            out,
            port,
        };
        assert!(
            node.wait_sync("running on port", Duration::from_secs(10)),
            "dhtnode did not start"
        );
        node
    }

    /// Its address.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends one command line.
    pub(crate) fn cmd(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.write_all(b"\n").expect("write");
        self.stdin.flush().expect("flush");
    }

    /// Output so far.
    pub(crate) fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Output length (a mark for [`Self::wait_after`]).
    pub(crate) fn mark(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    fn wait_sync(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until the output after `mark` contains `needle`; returns that output.
    pub(crate) async fn wait_after(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let o = self.output();
            let tail = o.get(mark..).unwrap_or("").to_owned();
            if tail.contains(needle) {
                return Some(tail);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs `ll` and returns the IPv4 good-node count.
    pub(crate) async fn good_ipv4(&mut self) -> u64 {
        let m = self.mark();
        self.cmd("ll");
        let Some(tail) = self
            .wait_after(m, "IPv6 stats", Duration::from_secs(5))
            .await
        else {
            return 0;
        };
        let after = tail.split("IPv4 stats").nth(1).unwrap_or("");
        after
            .split("Known nodes: ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RefNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our node, in-process on 127.0.0.1.
pub(crate) struct OurNode {
    /// Handle.
    pub(crate) node: NodeHandle,
    /// Its address.
    pub(crate) addr: SocketAddr,
    shutdown: Shutdown,
}

impl Drop for OurNode {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Starts our node on 127.0.0.1 (`port` 0 = ephemeral).
pub(crate) fn start_ours(port: u16, bootstrap: Vec<SocketAddr>, network: u32) -> OurNode {
    let sockets =
        waypost_dht_node::bind_sockets(&[SocketAddr::from(([127, 0, 0, 1], port))]).expect("bind");
    let addr = sockets[0].local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let opts = NodeOptions {
        bootstrap,
        network,
        ..NodeOptions::default()
    };
    let node = waypost_dht_node::spawn(opts, sockets, &shutdown, None).expect("spawn");
    OurNode {
        node,
        addr,
        shutdown,
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub(crate) async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
