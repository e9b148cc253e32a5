//! Security defaults: peer filter, quotas, 401 rate limit, no amplification, metrics hygiene.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use waypost_protocol::stun::{Class, MessageWriter, attr, method};

use crate::client::{A, Client, build, code, read_frame, tcp_request, transport_udp};
use crate::common::{start, test_config};

fn lt(s: u32) -> A {
    A::Raw(attr::LIFETIME, s.to_be_bytes().to_vec())
}

#[tokio::test]
async fn dangerous_peers_are_refused_by_default() {
    let cfg = waypost_turn_server::TurnConfig {
        allow_loopback_peers: false,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    c.allocate().await;
    for peer in [
        "127.0.0.1:5000",
        "0.0.0.0:5000",
        "[::ffff:127.0.0.1]:5000",
        "[::1]:5000",
        "169.254.169.254:80",
        "[fc00::1]:80",
        "10.0.0.1:80",
        "[::]:80",
    ] {
        let p = A::Xor(attr::XOR_PEER_ADDRESS, peer.parse().unwrap());
        assert_eq!(
            code(
                &c.request(method::CREATE_PERMISSION, std::slice::from_ref(&p))
                    .await
            ),
            403,
            "permission to {peer}"
        );
        let ch = A::Raw(attr::CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]);
        assert_eq!(
            code(&c.request(method::CHANNEL_BIND, &[ch, p]).await),
            403,
            "channel to {peer}"
        );
    }
    // A Send indication to a loopback listener is dropped: nothing arrives.
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = target.local_addr().unwrap();
    let ind = build(
        method::SEND,
        Class::Indication,
        &[
            A::Xor(attr::XOR_PEER_ADDRESS, to),
            A::Raw(attr::DATA, b"leak".to_vec()),
        ],
        None,
    );
    c.sock.send_to(&ind, srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), target.recv_from(&mut buf))
            .await
            .is_err(),
        "relayed to loopback"
    );
    srv.stop().await;
}

#[tokio::test]
async fn allowed_peer_overrides_the_deny_list() {
    let cfg = waypost_turn_server::TurnConfig {
        allow_loopback_peers: false,
        allowed_peer: vec!["127.0.0.0/8".parse().unwrap()],
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    c.allocate().await;
    let p = A::Xor(attr::XOR_PEER_ADDRESS, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(code(&c.request(method::CREATE_PERMISSION, &[p]).await), 0);
    let p = A::Xor(attr::XOR_PEER_ADDRESS, "0.0.0.0:5000".parse().unwrap());
    assert_eq!(
        code(&c.request(method::CREATE_PERMISSION, &[p]).await),
        403,
        "0.0.0.0 is never allowed"
    );
    srv.stop().await;
}

#[tokio::test]
async fn rfc6062_connect_to_denied_peer_is_refused() {
    let cfg = waypost_turn_server::TurnConfig {
        allow_loopback_peers: false,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut creds = None;
    let tcp = A::Raw(
        attr::REQUESTED_TRANSPORT,
        vec![attr::TRANSPORT_TCP, 0, 0, 0],
    );
    let resp = tcp_request(&mut s, &mut creds, "ring", "ring", method::ALLOCATE, &[tcp]).await;
    assert_eq!(code(&resp), 0, "TCP allocation");
    let peer = A::Xor(attr::XOR_PEER_ADDRESS, target.local_addr().unwrap());
    let resp = tcp_request(&mut s, &mut creds, "ring", "ring", method::CONNECT, &[peer]).await;
    assert_eq!(code(&resp), 403);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), target.accept())
            .await
            .is_err(),
        "connected to loopback"
    );
    srv.stop().await;
}

#[tokio::test]
async fn per_ip_allocation_quota_gives_486() {
    let cfg = waypost_turn_server::TurnConfig {
        max_allocations_per_ip: 2,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut a = Client::new(srv.addr, "ring", "ring").await;
    let mut b = Client::new(srv.addr, "ring", "ring").await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    a.allocate().await;
    b.allocate().await;
    assert_eq!(
        code(&c.request(method::ALLOCATE, &[transport_udp()]).await),
        486
    );
    // Freeing one makes room again.
    assert_eq!(code(&a.request(method::REFRESH, &[lt(0)]).await), 0);
    assert_eq!(
        code(&c.request(method::ALLOCATE, &[transport_udp()]).await),
        0
    );
    srv.stop().await;
}

#[tokio::test]
async fn unauthenticated_answers_are_rate_limited() {
    let cfg = waypost_turn_server::TurnConfig {
        unauth_rate: 5,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let c = Client::new(srv.addr, "ring", "ring").await;
    let mut answered = 0;
    for _ in 0..30 {
        let req = build(method::ALLOCATE, Class::Request, &[transport_udp()], None);
        c.sock.send_to(&req, srv.addr).await.unwrap();
    }
    let mut buf = [0u8; 512];
    while tokio::time::timeout(Duration::from_millis(300), c.sock.recv_from(&mut buf))
        .await
        .is_ok()
    {
        answered += 1;
    }
    assert!(
        (1..=10).contains(&answered),
        "answered {answered} of 30 with a limit of 5/s"
    );
    srv.stop().await;
}

#[tokio::test]
async fn no_amplification_before_authentication() {
    let srv = start(test_config(), false).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 2048];
    // Requests of several shapes and sizes; every unauthenticated error answer is no larger.
    for software in [
        &b""[..],
        b"x",
        b"0123456789abcdef",
        b"0123456789abcdef0123456789abcdef",
    ] {
        for m in [
            method::ALLOCATE,
            method::REFRESH,
            method::CREATE_PERMISSION,
            method::CHANNEL_BIND,
            0x0123,
        ] {
            let mut req = Vec::new();
            let mut w = MessageWriter::new(&mut req, m, Class::Request, &[7; 12]);
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            if !software.is_empty() {
                w.attr(attr::SOFTWARE, software);
            }
            w.finish();
            sock.send_to(&req, srv.addr).await.unwrap();
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
            {
                let (n, _) = r.unwrap();
                assert!(
                    n <= req.len(),
                    "method {m:#x}: {n}-byte answer to a {}-byte request",
                    req.len()
                );
            }
        }
    }
    // uclient's real first Allocate (52 bytes) does get its 401.
    let uclient_alloc = hex_decode(
        "000300202112a4420db6dc3946f002492eac84e90019000411000000000d00040000030900170004010000008028000436ff6fcd",
    );
    sock.send_to(&uclient_alloc, srv.addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .expect("401")
        .unwrap();
    assert!(n <= uclient_alloc.len());
    assert_eq!(code(&buf[..n]), 401);
    srv.stop().await;
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn metrics_count_without_identifiers() {
    let cfg = waypost_turn_server::TurnConfig {
        admin_listen: waypost_net::config::AdminAddr::At("127.0.0.1:0".parse().unwrap()),
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    c.allocate().await;
    let mut s = TcpStream::connect(srv.admin.unwrap()).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("waypost_turn_allocations{relay=\"Udp\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("waypost_turn_refused_total{reason=\"Unauthorized\"}"),
        "{body}"
    );
    assert!(
        !body.contains("127.0.0.1") && !body.contains("ring"),
        "identifier in metrics:\n{body}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_connection_limit_closes_the_excess() {
    let cfg = waypost_turn_server::TurnConfig {
        max_connections_per_ip: 3,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let binding = build(method::BINDING, Class::Request, &[], None);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(&binding).await.unwrap();
        assert_eq!(code(&read_frame(&mut s).await), 0);
        held.push(s);
    }
    let mut extra = TcpStream::connect(srv.addr).await.unwrap();
    let _ = extra.write_all(&binding).await;
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "fourth connection must be closed"
    );
    // Closing one frees a slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&binding).await.unwrap();
    assert_eq!(code(&read_frame(&mut s).await), 0);
    srv.stop().await;
}
