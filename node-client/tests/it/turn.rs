//! `node-client turn ...` against the real TURN server, in-process on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::registry::Registry;
use waypost_net::admin::Admin;
use waypost_net::shutdown::Shutdown;
use waypost_turn_server::{Listeners, TurnConfig};

use crate::common::{Background, run, runtime};

struct Turn {
    addr: SocketAddr,
    tls: Option<SocketAddr>,
    ca: Option<std::path::PathBuf>,
    shutdown: Shutdown,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Turn {
    fn start(secret: Option<&str>, tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TurnConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            relay_ip: vec!["127.0.0.1".parse().unwrap()],
            allow_loopback_peers: true,
            drain_seconds: 0,
            shards: 2,
            ..TurnConfig::default()
        };
        if let Some(s) = secret {
            cfg.auth_secret = vec![s.to_owned()];
        }
        let mut ca = None;
        if tls {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
            cfg.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
            cfg.cert = Some(cert.clone());
            cfg.key = Some(key);
            ca = Some(cert);
        }
        let settings = cfg.validate().unwrap();
        let rt = runtime();
        let _g = rt.enter();
        let listeners = Listeners::bind(&settings).unwrap();
        let addr = listeners.listen_addrs()[0];
        let tls = listeners.tls_addrs().first().copied();
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        rt.spawn(async move {
            let admin = Admin::new(Registry::with_prefix("waypost"));
            let _ = waypost_turn_server::run(settings, listeners, admin, sd).await;
        });
        drop(_g);
        Self {
            addr,
            tls,
            ca,
            shutdown,
            rt: Some(rt),
            _dir: dir,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

#[test]
fn allocate_udp_with_jami_default_credentials() {
    let t = Turn::start(None, false);
    let server = t.addr.to_string();
    let (code, lines, err) = run(&[
        "turn",
        "allocate",
        "--server",
        &server,
        "--permit",
        "127.0.0.1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines[0]["event"], "allocated");
    assert_eq!(lines[0]["relay"], "udp");
    let relayed: SocketAddr = lines[0]["relayed"].as_str().unwrap().parse().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert_ne!(relayed.port(), t.addr.port());
    assert!(lines[0]["lifetime"].as_u64().unwrap() > 0);
    assert_eq!(lines[0]["permissions"], 1);
    assert_eq!(lines[1]["event"], "released");

    // Held for a while, with a requested lifetime above the default 600 s (RFC 8656 §7.2: a
    // shorter one gets the default); human output.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_node-client"))
        .args([
            "turn",
            "allocate",
            "--server",
            &server,
            "--lifetime",
            "1200",
            "--hold",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("allocated "), "{text}");
    assert!(text.contains("lifetime=1200"), "{text}");
    assert!(text.contains("\nreleased"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allocating"), "progress on stderr: {err}");
}

#[test]
fn wrong_password_is_refused() {
    let t = Turn::start(None, false);
    let (code, _, err) = run(&[
        "turn",
        "allocate",
        "--server",
        &t.addr.to_string(),
        "--password",
        "nope",
    ]);
    assert_eq!(code, 3);
    assert!(err.contains("server error 401"), "{err}");
}

#[test]
fn allocate_tcp_relay_over_tls_with_rest_credentials() {
    let t = Turn::start(Some("s3cret"), true);
    let tls = t.tls.unwrap().to_string();
    let ca = t.ca.as_ref().unwrap().to_str().unwrap().to_owned();
    let (code, lines, err) = run(&[
        "turn",
        "allocate",
        "--server",
        &tls,
        "--transport",
        "tls",
        "--tls-name",
        "localhost",
        "--ca",
        &ca,
        "--secret",
        "s3cret",
        "--user",
        "alice",
        "--tcp-relay",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines[0]["relay"], "tcp");
    assert_eq!(lines[0]["transport"], "tls");
    // A wrong secret is refused.
    let (code, _, err) = run(&[
        "turn",
        "allocate",
        "--server",
        &tls,
        "--transport",
        "tls",
        "--tls-name",
        "localhost",
        "--ca",
        &ca,
        "--secret",
        "other",
    ]);
    assert_eq!(code, 3, "{err}");
    // Without the CA the certificate is not trusted.
    let (code, _, err) = run(&[
        "turn",
        "allocate",
        "--server",
        &tls,
        "--transport",
        "tls",
        "--tls-name",
        "localhost",
    ]);
    assert_eq!(code, 3);
    assert!(err.contains("tls"), "{err}");
}

fn listen_and_send(t: &Turn, listen: &[&str], send: &[&str], bytes: usize) {
    listen_and_send_to(&t.addr.to_string(), listen, send, bytes);
}

fn listen_and_send_to(server: &str, listen: &[&str], send: &[&str], bytes: usize) {
    let server = server.to_owned();
    let n = bytes.to_string();
    let mut args = vec![
        "turn",
        "listen",
        "--server",
        &server,
        "--permit",
        "127.0.0.1",
    ];
    args.extend_from_slice(&["--bytes", &n]);
    args.extend_from_slice(listen);
    let mut l = Background::start(&args);
    let ev = l.next(Duration::from_secs(10));
    assert_eq!(ev["event"], "allocated", "{ev}");
    let relayed = ev["relayed"].as_str().unwrap().to_owned();
    let mut sargs = vec!["turn", "send", "--server", &server, "--peer", &relayed];
    sargs.extend_from_slice(&["--bytes", &n, "--seed", "7"]);
    sargs.extend_from_slice(send);
    let (code, lines, err) = run(&sargs);
    assert_eq!(code, 0, "sender failed: {err}");
    let sent = lines.last().unwrap().clone();
    assert_eq!(sent["event"], "sent");
    assert_eq!(sent["bytes"], bytes);
    let got = l.next(Duration::from_secs(30));
    assert_eq!(got["event"], "received", "{got}");
    assert_eq!(got["bytes"], bytes);
    assert_eq!(got["complete"], true);
    assert_eq!(got["sha256"], sent["sha256"], "checksums differ");
    assert_eq!(l.wait(Duration::from_secs(10)), 0);
}

#[test]
fn udp_relay_to_udp_relay_with_channels() {
    let t = Turn::start(None, false);
    // The sender allocates over TCP with a UDP relay and binds a channel.
    listen_and_send(&t, &[], &["--transport", "tcp"], 300_000);
}

#[test]
fn udp_relay_from_a_plain_socket_with_send_indications() {
    let t = Turn::start(None, false);
    listen_and_send(&t, &["--no-channel"], &["--direct"], 200_000);
}

#[test]
fn rfc6062_accept_from_a_direct_tcp_peer() {
    let t = Turn::start(None, false);
    listen_and_send(
        &t,
        &["--transport", "tcp", "--tcp-relay"],
        &["--tcp", "--direct"],
        1_000_000,
    );
}

#[test]
fn rfc6062_connect_to_an_rfc6062_accept() {
    let t = Turn::start(None, false);
    listen_and_send(
        &t,
        &["--transport", "tcp", "--tcp-relay"],
        &["--transport", "tcp", "--tcp"],
        500_000,
    );
}

#[test]
fn rfc6062_over_tls_on_both_sides() {
    let t = Turn::start(None, true);
    let tls = t.tls.unwrap().to_string();
    let ca = t.ca.as_ref().unwrap().to_str().unwrap().to_owned();
    let opts = [
        "--transport",
        "tls",
        "--tls-name",
        "localhost",
        "--ca",
        ca.as_str(),
    ];
    let mut listen = opts.to_vec();
    listen.push("--tcp-relay");
    let mut send = opts.to_vec();
    send.push("--tcp");
    listen_and_send_to(&tls, &listen, &send, 400_000);
}
