//! coturn's real clients against our server: every uclient mode must relay with zero loss.

use std::process::Command;

use crate::common::{self, s, start, start_peer, test_config, tool, uclient};

fn assert_no_loss(r: &common::UclientResult, expected: u64) {
    assert_eq!(
        r.lost,
        Some(0),
        "uclient reported loss:\n{}",
        tail(&r.output)
    );
    assert_eq!(r.sent, expected, "uclient sent count:\n{}", tail(&r.output));
    assert_eq!(
        r.received,
        expected,
        "uclient received count:\n{}",
        tail(&r.output)
    );
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

async fn run_mode(extra: &[&str], tls: bool) {
    let srv = start(test_config(), tls).await;
    let (_peer, peer_port) = start_peer();
    let port = if tls {
        srv.tls.unwrap().port()
    } else {
        srv.addr.port()
    };
    let mut args = s(&[
        "-u", "ring", "-w", "ring", "-m", "4", "-n", "60", "-l", "100",
    ]);
    args.extend(s(&[
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port.to_string(),
    ]));
    args.extend(s(extra));
    let r = uclient(args).await;
    assert_no_loss(&r, 240);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_channels() {
    run_mode(&["-c"], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_send_indications() {
    run_mode(&["-c", "-s"], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_padded_channel_data() {
    // -D pads ChannelData to 4 bytes like pjnath does.
    run_mode(&["-c", "-D", "-l", "101"], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp() {
    run_mode(&["-c", "-t"], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tls() {
    run_mode(&["-c", "-t", "-S"], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_rfc6062_tcp_relay() {
    let srv = start(test_config(), false).await;
    let port = srv.addr.port().to_string();
    let r = uclient(s(&[
        "-u", "ring", "-w", "ring", "-p", &port, "-T", "-m", "2", "-n", "60", "-l", "100",
    ]))
    .await;
    assert_no_loss(&r, 120);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_rfc6062_over_tls() {
    let srv = start(test_config(), true).await;
    let port = srv.tls.unwrap().port().to_string();
    let r = uclient(s(&[
        "-u", "ring", "-w", "ring", "-p", &port, "-T", "-S", "-m", "2", "-n", "40", "-l", "100",
    ]))
    .await;
    assert_no_loss(&r, 80);
    srv.stop().await;
}

fn rest_credentials(secret: &str, valid_for: i64) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let user = format!("{}:alice", now + valid_for);
    let pass = waypost_protocol::stun::auth::rest_password(secret.as_bytes(), user.as_bytes());
    (user, pass)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_rest_secret_udp_and_rfc6062() {
    let cfg = waypost_turn_server::TurnConfig {
        auth_secret: vec!["old-secret".into(), "new-secret".into()],
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let (_peer, peer_port) = start_peer();
    let port = srv.addr.port().to_string();
    // The second (rotated-in) secret works too.
    let (user, pass) = rest_credentials("new-secret", 3600);
    let mut args = s(&[
        "-u", &user, "-w", &pass, "-c", "-m", "2", "-n", "50", "-l", "100",
    ]);
    args.extend(s(&[
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port,
    ]));
    assert_no_loss(&uclient(args).await, 100);
    let (user, pass) = rest_credentials("old-secret", 3600);
    let r = uclient(s(&[
        "-u", &user, "-w", &pass, "-p", &port, "-T", "-m", "2", "-n", "30", "-l", "100",
    ]))
    .await;
    assert_no_loss(&r, 60);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stunclient_gets_xor_mapped_address() {
    let srv = start(test_config(), false).await;
    let port = srv.addr.port().to_string();
    let bin = tool("turnutils_stunclient");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["20", &bin, "-p", &port, "127.0.0.1"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("UDP reflexive addr"))
        .unwrap_or_else(|| panic!("no reflexive address:\n{text}"));
    let addr: std::net::SocketAddr = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);

    // The same check with our client, which knows its own source port.
    let c = crate::client::Client::new(srv.addr, "ring", "ring").await;
    let req = crate::client::build(
        waypost_protocol::stun::method::BINDING,
        waypost_protocol::stun::Class::Request,
        &[],
        None,
    );
    let resp = c.raw(&req).await.expect("binding answer");
    let m = waypost_protocol::stun::Message::parse(&resp).unwrap();
    assert_eq!(
        m.xor_addr(waypost_protocol::stun::attr::XOR_MAPPED_ADDRESS),
        Some(c.sock.local_addr().unwrap())
    );
    assert!(m.verify_fingerprint());
    srv.stop().await;
}
