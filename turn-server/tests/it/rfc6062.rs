//! RFC 6062 passive side, as Jami's pjnath uses it: a peer connects to the relayed address, the
//! client gets ConnectionAttempt, opens a data connection and sends ConnectionBind.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waypost_protocol::stun::{Class, Message, attr, method};

use crate::client::{A, code, read_frame, tcp_request};
use crate::common::{start, test_config};

fn tcp_transport() -> A {
    A::Raw(
        attr::REQUESTED_TRANSPORT,
        vec![attr::TRANSPORT_TCP, 0, 0, 0],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempt_then_connection_bind() {
    let cfg = waypost_turn_server::TurnConfig {
        admin_listen: waypost_net::config::AdminAddr::At("127.0.0.1:0".parse().unwrap()),
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut ctrl = TcpStream::connect(srv.addr).await.unwrap();
    let mut creds = None;
    let resp = tcp_request(
        &mut ctrl,
        &mut creds,
        "ring",
        "ring",
        method::ALLOCATE,
        &[tcp_transport()],
    )
    .await;
    assert_eq!(code(&resp), 0);
    let relayed = Message::parse(&resp)
        .unwrap()
        .xor_addr(attr::XOR_RELAYED_ADDRESS)
        .unwrap();

    // Without a permission, an inbound peer is dropped and no ConnectionAttempt is sent.
    let mut stranger = TcpStream::connect(relayed).await.unwrap();
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), stranger.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "stranger connection must be closed"
    );
    let mut h = [0u8; 4];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ctrl.read_exact(&mut h))
            .await
            .is_err(),
        "no ConnectionAttempt for a peer without permission"
    );

    // With a permission: ConnectionAttempt with the peer's address and a CONNECTION-ID.
    let p = A::Xor(attr::XOR_PEER_ADDRESS, "127.0.0.1:1".parse().unwrap());
    let resp = tcp_request(
        &mut ctrl,
        &mut creds,
        "ring",
        "ring",
        method::CREATE_PERMISSION,
        &[p],
    )
    .await;
    assert_eq!(code(&resp), 0);
    let mut peer = TcpStream::connect(relayed).await.unwrap();
    let ind = read_frame(&mut ctrl).await;
    let m = Message::parse(&ind).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (method::CONNECTION_ATTEMPT, Class::Indication)
    );
    assert_eq!(
        m.xor_addr(attr::XOR_PEER_ADDRESS),
        Some(peer.local_addr().unwrap())
    );
    let id = m.get(attr::CONNECTION_ID).unwrap().to_vec();

    // A wrong CONNECTION-ID is refused; the right one binds.
    let mut data = TcpStream::connect(srv.addr).await.unwrap();
    let mut dcreds = None;
    let resp = tcp_request(
        &mut data,
        &mut dcreds,
        "ring",
        "ring",
        method::CONNECTION_BIND,
        &[A::Raw(attr::CONNECTION_ID, vec![0, 0, 0, 0])],
    )
    .await;
    assert_eq!(code(&resp), 400);
    let resp = tcp_request(
        &mut data,
        &mut dcreds,
        "ring",
        "ring",
        method::CONNECTION_BIND,
        &[A::Raw(attr::CONNECTION_ID, id.clone())],
    )
    .await;
    assert_eq!(code(&resp), 0);
    // Raw bytes both ways.
    peer.write_all(b"from-peer").await.unwrap();
    let mut buf = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(2), data.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"from-peer");
    data.write_all(b"from-client").await.unwrap();
    let mut buf = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(2), peer.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"from-client");
    // The relayed bytes of data connections count in the metrics, as they flow.
    let metrics = metrics_text(srv.admin.unwrap()).await;
    let value = |dir: &str| -> u64 {
        let key = format!("waypost_turn_relayed_bytes_total{{direction=\"{dir}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in:\n{metrics}"))
    };
    assert!(value("ToClient") >= 9, "{metrics}");
    assert!(value("ToPeer") >= 11, "{metrics}");
    // The same ID cannot be bound twice.
    let mut again = TcpStream::connect(srv.addr).await.unwrap();
    let mut acreds = None;
    let resp = tcp_request(
        &mut again,
        &mut acreds,
        "ring",
        "ring",
        method::CONNECTION_BIND,
        &[A::Raw(attr::CONNECTION_ID, id)],
    )
    .await;
    assert_eq!(code(&resp), 400);

    // Closing the control connection ends the allocation and its data connections.
    drop(ctrl);
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(3), peer.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "peer side closed with the allocation"
    );
    srv.stop().await;
}

async fn metrics_text(admin: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}
