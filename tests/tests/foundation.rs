//! Foundation tests over a real process (`canary-leaker`): configuration layering and exit codes,
//! graceful shutdown, and the privacy canary catching planted leaks.

use std::io::Write;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::{Watched, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_canary-leaker");

fn leaker() -> Command {
    let mut c = Command::new(BIN);
    // The test's own environment must not leak into the layering under test.
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            c.env_remove(k);
        }
    }
    c
}

fn dump(cmd: &mut Command) -> String {
    let out = cmd.arg("--dump-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn config_precedence_is_defaults_file_env_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leaker.toml");
    std::fs::write(
        &file,
        "greeting = \"file\"\nmax-datagram = 900\nlisten = \"127.0.0.1:7001\"\n",
    )
    .unwrap();

    let out = dump(&mut leaker());
    assert!(out.contains("greeting=default"), "{out}");

    let out = dump(leaker().arg("--config").arg(&file));
    assert!(
        out.contains("greeting=file") && out.contains("max-datagram=900"),
        "{out}"
    );

    let out = dump(
        leaker()
            .arg("--config")
            .arg(&file)
            .env("WAYPOST_LEAKER_GREETING", "env"),
    );
    assert!(out.contains("greeting=env"), "env beats file: {out}");
    assert!(out.contains("max-datagram=900"), "file value kept: {out}");

    let out = dump(
        leaker()
            .arg("--config")
            .arg(&file)
            .env("WAYPOST_LEAKER_GREETING", "env")
            .args(["--greeting", "flag"]),
    );
    assert!(out.contains("greeting=flag"), "flag beats env: {out}");
    assert!(out.contains("listen=127.0.0.1:7001"), "{out}");
}

#[test]
fn unknown_key_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "greeting = \"x\"\nno-such-key = true\n").unwrap();
    let out = leaker().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no-such-key"), "{err}");
}

#[test]
fn invalid_value_exits_64_before_binding() {
    // Hold the port the leaker would bind: if it bound before validating, it would fail with a
    // bind error (exit 70) instead of the configuration error.
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = leaker()
        .args(["--listen", &addr, "--max-datagram", "0"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max-datagram"), "{err}");
    assert!(
        !err.contains(&addr),
        "the error must not echo addresses: {err}"
    );

    // A value of the wrong type on the command line is also 64, not clap's 2.
    let out = leaker()
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    // So is an admin listener on a public address.
    let out = leaker()
        .args(["--admin-listen", "0.0.0.0:9100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_config_validates_without_running() {
    let out = leaker().arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration ok"));
    let out = leaker()
        .args(["--check-config", "--leak", "everything"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

fn start(leak: &str, data: &std::path::Path) -> (Watched, std::net::SocketAddr) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = leaker();
    cmd.args([
        "--listen",
        &listen,
        "--leak",
        leak,
        "--log-level",
        "trace",
        "--data-dir",
    ])
    .arg(data);
    let w = Watched::spawn(cmd).unwrap();
    (w, listen.parse().unwrap())
}

/// Sends datagrams from the canary address until the server answers, then a few more.
fn drive(canary: &Canary, to: std::net::SocketAddr) {
    let sock = canary.udp_socket();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut answered = 0;
    for _ in 0..50 {
        sock.send_to(canary.token.as_bytes(), to).unwrap();
        let mut buf = [0u8; 16];
        if sock.recv_from(&mut buf).is_ok() {
            answered += 1;
            if answered == 5 {
                return;
            }
        }
    }
    panic!("the server never answered");
}

fn run_scenario(leak: &str) -> Vec<String> {
    let canary = Canary::new();
    let data = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(leak, data.path());
    drive(&canary, addr);
    assert_eq!(
        server.terminate(Duration::from_secs(10)),
        Some(0),
        "SIGTERM drains and exits 0"
    );
    let mut sources = vec![
        Source::log("stdout", &server.stdout()),
        Source::log("stderr", &server.stderr()),
    ];
    sources.extend(Source::files_under(data.path()));
    canary.find_leaks(&sources)
}

#[test]
fn canary_passes_on_a_clean_server() {
    let leaks = run_scenario("none");
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[test]
fn canary_catches_an_address_in_a_log_message() {
    let leaks = run_scenario("log");
    assert!(
        leaks.iter().any(|l| l.starts_with("stdout: planted ip")),
        "{leaks:?}"
    );
    assert!(
        leaks.iter().any(|l| l.contains("planted port")),
        "{leaks:?}"
    );
}

#[test]
fn canary_catches_an_address_in_a_written_file() {
    let leaks = run_scenario("file");
    assert!(
        leaks
            .iter()
            .any(|l| l.starts_with("file ") && l.contains("planted ip")),
        "{leaks:?}"
    );
}

#[test]
fn logging_policy_drops_fields_outside_the_allow_list() {
    let leaks = run_scenario("field");
    assert!(
        leaks.is_empty(),
        "a non-allow-listed field reached the output: {leaks:?}"
    );
}

#[test]
fn admin_endpoint_serves_metrics_from_a_real_process() {
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let mut cmd = leaker();
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--admin-listen",
        &admin,
    ]);
    let dir = tempfile::tempdir().unwrap();
    cmd.arg("--data-dir").arg(dir.path());
    let mut w = Watched::spawn(cmd).unwrap();
    assert!(waypost_tests::proc::wait_tcp(
        admin.parse().unwrap(),
        Duration::from_secs(10)
    ));
    let mut s = std::net::TcpStream::connect(&admin).unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(w.terminate(Duration::from_secs(10)), Some(0));
}
