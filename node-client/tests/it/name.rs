//! The `node-client name` subcommands against the real name server, started in-process.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use waypost_nameserver::{MemoryStore, Metrics, Settings};
use waypost_net::shutdown::Shutdown;

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        runtime.spawn(waypost_nameserver::run(
            Settings::for_tests(),
            listener,
            Arc::new(MemoryStore::new()),
            metrics,
            shutdown.clone(),
        ));
        Self {
            addr,
            shutdown,
            runtime: Some(runtime),
        }
    }

    fn url(&self) -> String {
        // Upper case and a trailing slash: the client canonicalises like the daemon.
        format!("HTTP://127.0.0.1:{}/", self.addr.port())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

fn client(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_node-client"))
        .arg("--json")
        .args(args)
        .env_remove("WAYPOST_NAME_SERVER")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout not JSON ({e}): {text} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

#[test]
fn register_lookup_reverse_round_trip() {
    let s = Server::start();
    let url = s.url();
    let dir = tempfile::tempdir().unwrap();
    let key_a = dir.path().join("a.pem");
    let key_a = key_a.to_str().unwrap();

    let (code, v) = client(&["name", "lookup", "--server", &url, "alice"]);
    assert_eq!((code, v["status"].as_str()), (2, Some("not found")));

    // A fresh RSA-4096 identity is generated and saved.
    let (code, v) = client(&[
        "name",
        "register",
        "--server",
        &url,
        "--identity",
        key_a,
        "Alice",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["identity_generated"], true);
    let addr = v["addr"].as_str().unwrap().to_owned();
    let pem = std::fs::read_to_string(key_a).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(key_a).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let id = waypost_protocol::identity::Identity::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(id.public_key().bits(), 4096);
    assert_eq!(addr, format!("0x{}", id.id().to_hex()));

    let (code, v) = client(&["name", "lookup", "--server", &url, "ALICE"]);
    assert_eq!(code, 0);
    assert_eq!(v["name"], "alice");
    assert_eq!(v["addr"], addr.as_str());
    assert_eq!(
        v["verified"], true,
        "key and signature checked like the daemon"
    );

    let (code, v) = client(&["name", "reverse", "--server", &url, &addr]);
    assert_eq!((code, v["name"].as_str()), (0, Some("alice")));

    // Same identity again: idempotent, key reused.
    let (code, v) = client(&[
        "name",
        "register",
        "--server",
        &url,
        "--identity",
        key_a,
        "alice",
    ]);
    assert_eq!((code, v["identity_generated"].as_bool()), (0, Some(false)));

    // Another identity (2048 bits to keep it quick) cannot take the name.
    let key_b = dir.path().join("b.pem");
    let (code, v) = client(&[
        "name",
        "register",
        "--server",
        &url,
        "--identity",
        key_b.to_str().unwrap(),
        "--bits",
        "2048",
        "alice",
    ]);
    assert_eq!((code, v["status"].as_str()), (1, Some("already taken")));

    // Invalid input.
    let (code, v) = client(&["name", "lookup", "--server", &url, "=="]);
    assert_eq!((code, v["status"].as_str()), (1, Some("invalid")));
    let (code, v) = client(&[
        "name",
        "register",
        "--server",
        &url,
        "--identity",
        key_b.to_str().unwrap(),
        "al",
    ]);
    assert_eq!(
        (code, v["status"].as_str()),
        (1, Some("incomplete request"))
    );
    let (code, v) = client(&["name", "reverse", "--server", &url, &"7".repeat(40)]);
    assert_eq!((code, v["status"].as_str()), (2, Some("not found")));
    // Human-readable output is the default.
    let out = Command::new(env!("CARGO_BIN_EXE_node-client"))
        .args(["name", "lookup", "--server", &url, "alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: found"), "{text}");
    assert!(text.contains(&format!("addr: {addr}")), "{text}");
}

#[test]
fn unreachable_server_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_node-client"))
        .args([
            "name",
            "lookup",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "alice",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}
