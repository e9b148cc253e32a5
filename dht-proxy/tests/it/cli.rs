//! The binary's command line: configuration errors exit 64 with one line before anything is
//! bound; `--check-config`; TOML keys; the TLS listener and admin endpoint of the real binary.

use std::process::Command;
use std::time::Duration;

use crate::interop::{Dhtnode, free_udp_port, spawn_our_proxy};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dht-proxy"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn invalid_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad.toml");
    std::fs::write(&bad_key, "listen = \"127.0.0.1:0\"\nno-such-key = 1\n").unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["--listen".into(), "not-an-address".into()],
        vec!["--bootstrap".into(), "nohostport".into()],
        vec!["--tls-listen".into(), "127.0.0.1:0".into()],
        vec!["--admin-listen".into(), "0.0.0.0:9100".into()],
        vec!["--push-format".into(), "7".into()],
        vec!["--max-streams".into(), "0".into()],
        vec!["--config".into(), bad_key.to_str().unwrap().into()],
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--cert".into(),
            "/nonexistent/cert.pem".into(),
            "--key".into(),
            "/nonexistent/key.pem".into(),
        ],
    ];
    for args in cases {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(err.starts_with("dht-proxy: "), "{err}");
    }
}

#[test]
fn check_config_and_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:18999\"\nport = 4222\nbootstrap = [\"127.0.0.1:4222\"]\npush-server = \"127.0.0.1:8088\"\nbundle-id = \"x\"\ndata-dir = \"/tmp/nope\"\nadmin-listen = \"127.0.0.1:9100\"\n",
    )
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration ok"));
    // The shipped example configuration is valid.
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config/dht-proxy.toml"
    );
    if std::path::Path::new(shipped).exists() {
        let out = bin()
            .arg("--config")
            .arg(shipped)
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
}

#[test]
fn tls_listener_and_admin_endpoint_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (tls_port, admin_port) = (
        waypost_tests::proc::free_port(),
        waypost_tests::proc::free_port(),
    );
    let pb = free_udp_port();
    let _b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let tls = format!("127.0.0.1:{tls_port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let ours = spawn_our_proxy(
        pb,
        &[
            "--tls-listen",
            &tls,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--admin-listen",
            &admin,
        ],
    );
    assert!(waypost_tests::proc::wait_tcp(
        tls.parse().unwrap(),
        Duration::from_secs(10)
    ));
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            cert.to_str().unwrap(),
            "--resolve",
            &format!("localhost:{tls_port}:127.0.0.1"),
        ])
        .arg(format!("https://localhost:{tls_port}/node/info"))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"node_id\""), "node info over TLS: {body}");
    let out = Command::new("curl")
        .args(["-s", &format!("http://{admin}/metrics")])
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("waypost_dht_proxy_requests_total{route=\"Info\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("waypost_dht_proxy_node_"),
        "the DHT node's metrics are exported too: {metrics}"
    );
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{admin}/readyz"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    drop(ours);
}
