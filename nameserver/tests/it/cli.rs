//! The binary's command line: validation before binding (exit 64), bind failures, SIGTERM.

use std::process::Command;
use std::time::Duration;

use waypost_tests::proc::{Watched, free_port, wait_tcp};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nameserver"));
    // The test's own environment must not leak into the layering under test.
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn invalid_values_exit_64_with_one_line() {
    for args in [
        vec!["--body-limit", "5"],
        vec!["--listen", "not-an-address"],
        vec!["--path-prefix", "ns"],
        vec!["--store", "sqlite"],
        vec!["--admin-listen", "0.0.0.0:9100"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().lines().count() >= 1, "{args:?}: {err}");
    }
    let out = bin().args(["--request-timeout-ms", "0"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}

#[test]
fn config_file_layers_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:1\"\nfoo = 1\n").unwrap();
    let out = bin().arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("foo"));

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "store = \"memory\"\nbody-limit = 2048\npath-prefix = \"/ns\"\n",
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
    // A flag beats the file.
    let out = bin()
        .arg("--config")
        .arg(&good)
        .args(["--body-limit", "1", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    // Defaults are valid.
    assert_eq!(
        bin().arg("--check-config").output().unwrap().status.code(),
        Some(0)
    );
}

#[test]
fn serves_with_admin_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut cmd = bin();
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--data-dir")
        .arg(dir.path().join("sub"));
    let mut server = Watched::spawn(cmd).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_tcp(addr, Duration::from_secs(20)));
    assert_eq!(crate::common::get(addr, "/name/nobody").status, 404);
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    let m = crate::common::get(admin_addr, "/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains(r#"waypost_nameserver_requests_total{op="Lookup",outcome="NotFound"} 1"#),
        "{text}"
    );
    assert!(
        dir.path().join("sub").join("names.redb").is_file(),
        "data dir created"
    );
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn bind_failure_exits_70_without_the_address() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(70));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains(&port.to_string()) && !err.contains("127.0.0.1"),
        "{err}"
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = bin();
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path());
    let mut first = Watched::spawn(cmd).unwrap();
    assert!(wait_tcp(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(20)
    ));
    let out = bin()
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(70));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "nameserver: cannot open the name database"
    );
    assert_eq!(first.terminate(Duration::from_secs(10)), Some(0));
}
