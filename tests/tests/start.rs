//! The README's start command: `scripts/start.sh` builds and launches the whole suite on
//! localhost, prints the endpoints and a node-client example, serves, and stops every server it
//! started on Ctrl-C (SIGINT).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::io::Read as _;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use waypost_tests::proc::free_port;

/// The script, its output captured; killed by PID on drop if still running.
struct Script {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Script {
    fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start scripts/start.sh");
        let out = Arc::new(Mutex::new(Vec::new()));
        for mut r in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    out.lock().expect("lock").extend_from_slice(&buf[..n]);
                }
            });
        }
        Self { child, out }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    fn wait_output(&self, needle: &str, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Ask the script to stop its servers first, then make sure it is gone.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn node_client(root: &Path, args: &[&str]) -> (bool, String) {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let out = Command::new(target.join("debug").join("node-client"))
        .arg("--json")
        .args(args)
        .output()
        .expect("run node-client");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn start_script_launches_the_suite_and_stops_on_ctrl_c() {
    let root = workspace();
    let data = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/start.sh"))
        .current_dir(&root)
        .env("WAYPOST_START_DATA", data.path())
        .env("WAYPOST_START_DHT_PORT", ports[0].to_string())
        .env("WAYPOST_START_PROXY_PORT", ports[1].to_string())
        .env("WAYPOST_START_PROXY_DHT_PORT", ports[2].to_string())
        .env("WAYPOST_START_TURN_PORT", ports[3].to_string())
        .env("WAYPOST_START_NS_PORT", ports[4].to_string());
    // Under scripts/test.sh the workspace run has built every binary (with the nameserver's
    // `eth` feature); a `cargo build` here would relink target/debug/nameserver without it
    // while the Ethereum tests run it.
    if std::env::var_os("WAYPOST_BINS_FRESH").is_some() {
        cmd.env("WAYPOST_START_NO_BUILD", "1");
    }
    let mut script = Script::spawn(cmd);
    // The first run may compile the servers.
    let ready = script.wait_output("Waypost is ready", Duration::from_secs(900));
    let out = script.output();
    assert!(ready, "not ready: {out}");

    // Every server started, and the output says where they are and how to try them.
    let mut pids = Vec::new();
    for name in ["dht-node", "dht-proxy", "turn-server", "nameserver"] {
        let line = out
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{name}: started (pid "))
            })
            .unwrap_or_else(|| panic!("{name} was not started: {out}"));
        let pid: u32 = line
            .rsplit("pid ")
            .next()
            .and_then(|s| s.trim_end_matches(')').parse().ok())
            .expect("pid");
        assert!(alive(pid), "{name} is not running");
        pids.push(pid);
    }
    let proxy = format!("http://127.0.0.1:{}", ports[1]);
    let ns = format!("http://127.0.0.1:{}", ports[4]);
    let turn = format!("127.0.0.1:{}", ports[3]);
    for needle in [
        &proxy,
        &ns,
        &turn,
        &"node-client".to_owned(),
        &"ring".to_owned(),
    ] {
        assert!(
            out.contains(needle.as_str()),
            "{needle} missing from: {out}"
        );
    }

    // The endpoints work: the pasted examples, run for real.
    let (ok, text) = node_client(&root, &["dht", "info", "--proxy", &proxy]);
    assert!(
        ok && text.contains("\"connected\":true"),
        "the proxy is not connected to the DHT when start.sh says ready: {text}"
    );
    let (ok, text) = node_client(&root, &["dht", "put", "--proxy", &proxy, "hello", "hi"]);
    assert!(ok, "put: {text}");
    let (ok, text) = node_client(&root, &["dht", "get", "--proxy", &proxy, "hello"]);
    assert!(ok && text.contains("\"text\":\"hi\""), "get: {text}");
    let (ok, text) = node_client(&root, &["name", "lookup", "--server", &ns, "nobody"]);
    assert!(
        !ok && text.contains("not found"),
        "name server lookup: {text}"
    );
    let (ok, text) = node_client(
        &root,
        &[
            "turn",
            "allocate",
            "--server",
            &turn,
            "--transport",
            "tcp",
            "--tcp-relay",
        ],
    );
    assert!(ok && text.contains("\"relayed\""), "TURN allocate: {text}");

    // Ctrl-C: the script stops its servers (by PID) and exits 0.
    let _ = Command::new("kill")
        .args(["-INT", &script.child.id().to_string()])
        .status();
    let code = script.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "start.sh exit on Ctrl-C");
    let out = script.output();
    assert!(out.contains("Stopped."), "{out}");
    for pid in pids {
        assert!(!alive(pid), "server pid {pid} still running after Ctrl-C");
    }
}
