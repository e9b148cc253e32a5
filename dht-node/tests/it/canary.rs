//! The privacy canary: the real binary at `--log-level trace`, under canary traffic (queries,
//! puts, listens, fragmented values, errors, garbage) and a reference node, must not print any
//! address, port, key or value, nor expose them in metrics.

use std::process::Command;
use std::time::Duration;

use waypost_protocol::dht::msg::WireValues;
use waypost_protocol::dht::{Args, Body, InfoHash, Message, QueryKind, Value};
use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::Watched;

use crate::common::{RefNode, free_udp_port};

fn q(tid: u32, kind: QueryKind, a: Args) -> Vec<u8> {
    Message {
        tid,
        network: 0,
        is_client: false,
        body: Body::Query(kind, a),
    }
    .encode(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifier_reaches_logs_or_metrics_under_traffic() {
    let canary = Canary::new();
    let reference = RefNode::spawn(&[]);
    let port = free_udp_port();
    let admin_port = free_udp_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dht-node"));
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--bootstrap",
    ])
    .arg(reference.addr().to_string())
    .args([
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
        "--log-level",
        "trace",
    ]);
    let mut server = Watched::spawn(cmd).expect("spawn dht-node");
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sock = canary.udp_socket();
    sock.set_nonblocking(true).unwrap();
    let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
    let key = InfoHash::from_hex(&canary.infohash).expect("canary infohash is 40 hex digits");
    let me = InfoHash::get(&canary.key);
    let mut buf = vec![0u8; 65536];
    // Wait for the node, then get a token.
    let mut token = None;
    for tid in 1..50u32 {
        let a = Args {
            target: Some(key),
            ..Args::new(me)
        };
        sock.send_to(&q(tid, QueryKind::Find, a), to).await.unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
            && let Ok(Message {
                body: Body::Reply(r),
                ..
            }) = Message::decode(&buf[..n])
        {
            token = r.token;
            break;
        }
    }
    let token = token.unwrap_or_else(|| {
        panic!(
            "find reply with token; server said: {}",
            String::from_utf8_lossy(&server.stderr())
        )
    });
    // Puts: small value carrying the planted strings, a fragmented one, a bad token, id 0.
    let mut small =
        Value::new(format!("{} {} {}", canary.username, canary.token, canary.name).into_bytes());
    small.id = 77;
    small.user_type = canary.name.clone();
    let mut big = Value::new(canary.key.repeat(200).into_bytes());
    big.id = 78;
    let mut tid = 100u32;
    let mut send = |kind: QueryKind, a: Args, frags: bool| {
        tid += 1;
        let m = Message {
            tid,
            network: 0,
            is_client: false,
            body: Body::Query(kind, a),
        };
        let mut out = vec![m.encode(frags)];
        if frags {
            out.extend(waypost_protocol::dht::msg::fragments(
                tid,
                0,
                m.values().unwrap_or(&[]),
            ));
        }
        out
    };
    let mut datagrams = Vec::new();
    let base = || Args {
        h: Some(key),
        token: Some(token.clone()),
        ..Args::new(me)
    };
    datagrams.extend(send(
        QueryKind::Put,
        Args {
            values: Some(WireValues::Values(vec![small.clone()])),
            ..base()
        },
        false,
    ));
    datagrams.extend(send(
        QueryKind::Put,
        Args {
            values: Some(WireValues::Values(vec![big])),
            ..base()
        },
        true,
    ));
    datagrams.extend(send(
        QueryKind::Put,
        Args {
            token: Some(vec![7; 32]),
            values: Some(WireValues::Values(vec![small.clone()])),
            ..base()
        },
        false,
    ));
    datagrams.extend(send(
        QueryKind::Put,
        Args {
            values: Some(WireValues::Values(vec![Value::new(b"x".to_vec())])),
            ..base()
        },
        false,
    ));
    datagrams.extend(send(
        QueryKind::Listen,
        Args {
            sid: Some(5),
            ve: Some(1),
            ..base()
        },
        false,
    ));
    datagrams.extend(send(
        QueryKind::Get,
        Args {
            h: Some(key),
            ..Args::new(me)
        },
        false,
    ));
    datagrams.extend(send(
        QueryKind::Refresh,
        Args {
            h: Some(InfoHash::get(&canary.name)),
            vid: Some(1),
            ..base()
        },
        false,
    ));
    datagrams.extend(send(QueryKind::Get, Args::new(me), false)); // no h: error 203
    for d in datagrams {
        sock.send_to(&d, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..300u32 {
        let junk = format!("{}{}", canary.infohash, i).into_bytes();
        let _ = sock.send_to(&junk, to).await;
    }
    // The reference node stores a value on the same key through our node too.
    let mut reference = reference;
    let m = reference.mark();
    reference.cmd(&format!("p {} {}", canary.infohash, canary.username));
    reference
        .wait_after(m, "Put:", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin_port)).expect("admin");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(metrics.contains("waypost_dht_stored_values"), "{metrics}");
    server.terminate(Duration::from_secs(10));
    let stdout = server.stdout();
    let stderr = server.stderr();
    canary.assert_clean(&[
        Source::log("stdout", &stdout),
        Source::log("stderr", &stderr),
        Source::other("metrics", metrics.as_bytes()),
    ]);
}
