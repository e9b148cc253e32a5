//! Running the `node-client` binary from tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Runs `node-client --json ARGS` to completion: (exit code, JSON lines, stderr).
pub fn run(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_node-client"))
        .arg("--json")
        .args(args)
        .env_remove("WAYPOST_NAME_SERVER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {l}"))
        })
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `node-client --json ARGS` process running in the background; its JSON lines are read
/// on a thread. Killed (by PID) on drop.
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Background {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_node-client"))
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Self { child, lines: rx }
    }

    /// The next JSON line, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Value {
        self.lines
            .recv_timeout(timeout)
            .expect("node-client printed a line in time")
    }

    /// Waits for the exit code, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node-client did not exit in time");
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A multi-thread runtime for in-process servers (the client runs as a separate process).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
