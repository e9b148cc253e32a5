//! The privacy canary: the real binary at `--log-level trace` under uclient load and canary
//! traffic must not print any address, port, username or password, nor expose them in metrics.

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypost_protocol::stun::{Class, attr, method};
use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::Watched;

use crate::client::{A, Client, build, code, transport_udp};
use crate::common::{free_udp_port, s, start_peer, uclient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifier_reaches_logs_or_metrics_under_load() {
    let canary = Canary::new();
    let port = free_udp_port();
    let admin_port = free_udp_port();
    let user = format!("{}:{}", canary.username, canary.key);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turn-server"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--relay-ip",
        "127.0.0.1",
        "--allow-loopback-peers",
    ])
    .args([
        "--user",
        &user,
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
    ])
    .args([
        "--log-level",
        "trace",
        "--drain-seconds",
        "1",
        "--unauth-rate",
        "3",
    ]);
    let mut server = Watched::spawn(cmd).expect("spawn turn-server");
    let server_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Canary traffic from the planted address: auth failures, a real allocation, a denied peer,
    // garbage, and a burst that trips the 401 rate limit.
    let sock = canary.udp_socket();
    sock.set_nonblocking(true).unwrap();
    let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
    let mut c = Client {
        sock,
        server: server_addr,
        user: canary.username.clone().into_bytes(),
        pass: b"wrong".to_vec(),
        creds: None,
    };
    for _ in 0..50 {
        if c.raw(&build(method::BINDING, Class::Request, &[], None))
            .await
            .is_some()
        {
            break;
        }
    }
    assert_eq!(
        code(&c.request(method::ALLOCATE, &[transport_udp()]).await),
        401,
        "wrong password"
    );
    c.pass = canary.key.clone().into_bytes();
    c.creds = None;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.allocate().await;
    let denied = A::Xor(attr::XOR_PEER_ADDRESS, "10.9.8.7:6543".parse().unwrap());
    assert_eq!(
        code(&c.request(method::CREATE_PERMISSION, &[denied]).await),
        403
    );
    for i in 0..200u32 {
        let mut junk = i.to_be_bytes().repeat(5 + (i as usize % 30));
        junk[0] = (i % 4) as u8 * 0x40;
        let _ = c.sock.send_to(&junk, server_addr).await;
    }
    for _ in 0..20 {
        let _ = c
            .sock
            .send_to(
                &build(method::ALLOCATE, Class::Request, &[transport_udp()], None),
                server_addr,
            )
            .await;
    }

    // uclient load with the canary credentials (UDP channels and RFC 6062).
    let (_peer, peer_port) = start_peer();
    let mut args = s(&[
        "-u",
        &canary.username,
        "-w",
        &canary.key,
        "-c",
        "-m",
        "5",
        "-n",
        "100",
        "-l",
        "100",
    ]);
    args.extend(s(&[
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port.to_string(),
    ]));
    let r = uclient(args).await;
    assert_eq!(r.lost, Some(0), "{}", r.output);
    assert_eq!(r.received, 500);
    let r = uclient(s(&[
        "-u",
        &canary.username,
        "-w",
        &canary.key,
        "-p",
        &port.to_string(),
        "-T",
        "-m",
        "2",
        "-n",
        "50",
        "-l",
        "100",
    ]))
    .await;
    assert_eq!(r.lost, Some(0), "{}", r.output);

    let mut m = tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
        .await
        .unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut metrics = String::new();
    m.read_to_string(&mut metrics).await.unwrap();
    assert!(
        metrics.contains("waypost_turn_relayed_packets_total"),
        "{metrics}"
    );

    let status = server.terminate(Duration::from_secs(15));
    assert_eq!(status, Some(0), "clean exit after SIGTERM");
    let stdout = server.stdout();
    assert!(!stdout.is_empty(), "trace logging produced output to check");
    canary.assert_clean(&[
        Source::log("stdout", &stdout),
        Source::log("stderr", &server.stderr()),
        Source::other("metrics", metrics.as_bytes()),
    ]);
}
