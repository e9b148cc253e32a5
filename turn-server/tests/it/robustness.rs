//! Garbage input, relaying end to end with our client, SIGTERM drain and config errors.

use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use waypost_protocol::stun::{Class, attr, channel, method};

use crate::client::{A, Client, build, code, read_frame};
use crate::common::{start, test_config};

/// Allocates, binds a channel to a local echo socket and checks both directions.
async fn relay_round_trip(server: std::net::SocketAddr) {
    let mut c = Client::new(server, "ring", "ring").await;
    let relayed = c.allocate().await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let ch = A::Raw(attr::CHANNEL_NUMBER, vec![0x40, 0x00, 0, 0]);
    assert_eq!(
        code(
            &c.request(
                method::CHANNEL_BIND,
                &[ch, A::Xor(attr::XOR_PEER_ADDRESS, peer_addr)]
            )
            .await
        ),
        0
    );
    let mut frame = channel::header(0x4000, 5).to_vec();
    frame.extend_from_slice(b"hello");
    c.sock.send_to(&frame, server).await.unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .expect("peer got data")
        .unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from, relayed, "data comes from the relayed address");
    peer.send_to(b"world!", relayed).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), c.sock.recv_from(&mut buf))
        .await
        .expect("client got data")
        .unwrap();
    assert_eq!(channel::parse(&buf[..n]), Some((0x4000, &b"world!"[..])));
    // A peer without permission is not relayed.
    let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    stranger.send_to(b"spam", relayed).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.sock.recv_from(&mut buf))
            .await
            .is_err(),
        "stranger relayed"
    );
    // Without a channel, peer data arrives as a Data indication.
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = A::Xor(attr::XOR_PEER_ADDRESS, other.local_addr().unwrap());
    assert_eq!(code(&c.request(method::CREATE_PERMISSION, &[p]).await), 0);
    other.send_to(b"indicated", relayed).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), c.sock.recv_from(&mut buf))
        .await
        .expect("data indication")
        .unwrap();
    let m = waypost_protocol::stun::Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.method(), method::DATA);
    assert_eq!(m.get(attr::DATA), Some(&b"indicated"[..]));
    assert_eq!(
        m.xor_addr(attr::XOR_PEER_ADDRESS),
        Some(other.local_addr().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_then_normal_traffic() {
    let srv = start(test_config(), false).await;
    relay_round_trip(srv.addr).await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let socks = [
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ];
    for i in 0..10_000u32 {
        let len = rng.random_range(0..600usize);
        let mut d = vec![0u8; len];
        rng.fill_bytes(&mut d);
        match i % 4 {
            // STUN-looking: right cookie and length, random attributes.
            0 if len >= 20 => {
                d[0] &= 0x01;
                let body = ((len - 20) / 4 * 4) as u16;
                d.truncate(20 + body as usize);
                d[2..4].copy_from_slice(&body.to_be_bytes());
                d[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
            }
            // ChannelData-looking.
            1 if len >= 4 => d[0] = 0x40 | (d[0] & 0x3f),
            _ => {}
        }
        let s = &socks[(i % 3) as usize];
        let _ = s.send_to(&d, srv.addr).await;
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Malformed TCP: random bytes, a bad frame type, a huge STUN length, a half frame, lying
    // attributes; each on its own connection.
    let mut bad_frames: Vec<Vec<u8>> = Vec::new();
    for _ in 0..20 {
        let mut d = vec![0u8; rng.random_range(1..300usize)];
        rng.fill_bytes(&mut d);
        bad_frames.push(d);
    }
    bad_frames.push(vec![0x80, 0x01, 0x00, 0x08, 1, 2, 3, 4]);
    bad_frames.push(vec![0x00, 0x01, 0xff, 0xfc]);
    bad_frames.push(build(method::BINDING, Class::Request, &[], None)[..10].to_vec());
    let mut lying = build(
        method::ALLOCATE,
        Class::Request,
        &[A::Raw(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
        None,
    );
    lying[22..24].copy_from_slice(&[0xff, 0xff]);
    bad_frames.push(lying);
    for f in bad_frames {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let _ = s.write_all(&f).await;
        drop(s);
    }
    // Normal traffic still works, over UDP and TCP.
    relay_round_trip(srv.addr).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&build(method::BINDING, Class::Request, &[], None))
        .await
        .unwrap();
    let resp = read_frame(&mut s).await;
    assert_eq!(code(&resp), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_end_to_end_with_our_client() {
    let srv = start(test_config(), false).await;
    relay_round_trip(srv.addr).await;
    srv.stop().await;
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let port = crate::common::free_udp_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--relay-ip",
            "127.0.0.1",
            "--drain-seconds",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard_pid = child.id();
    // Wait until it answers a Binding request.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let req = build(method::BINDING, Class::Request, &[], None);
    let mut up = false;
    for _ in 0..50 {
        let _ = sock.send_to(&req, ("127.0.0.1", port));
        let mut b = [0u8; 128];
        if sock.recv_from(&mut b).is_ok() {
            up = true;
            break;
        }
    }
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not come up");
    }
    let st = Command::new("kill")
        .args(["-TERM", &guard_pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("server did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn invalid_config_exits_64_with_one_line() {
    for args in [
        vec!["--min-port", "6000", "--max-port", "5000"],
        vec!["--user", "no-colon"],
        vec!["--tls-listen", "127.0.0.1:5349"],
        vec!["--admin-listen", "0.0.0.0:9100"],
        vec!["--allowed-peer", "not-a-cidr"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_turn-server"))
            .args(&args)
            .output()
            .unwrap();
        let code = out.status.code();
        let err = String::from_utf8_lossy(&out.stderr);
        if args[0] == "--allowed-peer" {
            // clap rejects it before our validation, with its usage exit code.
            assert_ne!(code, Some(0), "{args:?}");
            continue;
        }
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    // A public admin listener is allowed only with the explicit opt-in.
    let out = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args([
            "--admin-listen",
            "0.0.0.0:9100",
            "--admin-public",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("turn.toml");
    std::fs::write(&f, "realm = \"ring\"\nbogus = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args(["--config", f.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    std::fs::write(
        &f,
        "realm = \"ring\"\nuser = [\"ring:ring\"]\nlisten = [\"127.0.0.1:3478\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args(["--config", f.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_relay_with_requested_address_family() {
    let Ok(peer) = UdpSocket::bind("[::1]:0").await else {
        panic!("IPv6 loopback is required for this test");
    };
    let cfg = waypost_turn_server::TurnConfig {
        relay_ip: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    let fam = A::Raw(
        attr::REQUESTED_ADDRESS_FAMILY,
        vec![attr::FAMILY_V6, 0, 0, 0],
    );
    let resp = c
        .request(method::ALLOCATE, &[crate::client::transport_udp(), fam])
        .await;
    assert_eq!(code(&resp), 0);
    let m = waypost_protocol::stun::Message::parse(&resp).unwrap();
    let relayed = m.xor_addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert!(relayed.is_ipv6(), "IPv6 relayed address");
    // An IPv4 peer on an IPv6 allocation: 443.
    let v4 = A::Xor(attr::XOR_PEER_ADDRESS, "127.0.0.1:9".parse().unwrap());
    assert_eq!(
        code(&c.request(method::CREATE_PERMISSION, &[v4]).await),
        443
    );
    let p = A::Xor(attr::XOR_PEER_ADDRESS, peer.local_addr().unwrap());
    let ch = A::Raw(attr::CHANNEL_NUMBER, vec![0x40, 0x10, 0, 0]);
    assert_eq!(code(&c.request(method::CHANNEL_BIND, &[ch, p]).await), 0);
    let mut frame = channel::header(0x4010, 3).to_vec();
    frame.extend_from_slice(b"six");
    c.sock.send_to(&frame, srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .expect("peer got data")
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"six"[..], relayed));
    peer.send_to(b"back", relayed).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), c.sock.recv_from(&mut buf))
        .await
        .expect("client got data")
        .unwrap();
    assert_eq!(channel::parse(&buf[..n]), Some((0x4010, &b"back"[..])));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_bandwidth_limit_drops_the_excess() {
    let cfg = waypost_turn_server::TurnConfig {
        max_bps_per_ip: 2000,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    c.allocate().await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = A::Xor(attr::XOR_PEER_ADDRESS, peer.local_addr().unwrap());
    let ch = A::Raw(attr::CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]);
    assert_eq!(code(&c.request(method::CHANNEL_BIND, &[ch, p]).await), 0);
    let mut frame = channel::header(0x4001, 500).to_vec();
    frame.extend_from_slice(&[7u8; 500]);
    for _ in 0..40 {
        c.sock.send_to(&frame, srv.addr).await.unwrap();
    }
    let mut got = 0;
    let mut buf = [0u8; 600];
    while tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf))
        .await
        .is_ok()
    {
        got += 1;
    }
    // 2000 B/s allows 4 packets per second; the burst spans at most two seconds.
    assert!(
        (1..=8).contains(&got),
        "{got} of 40 packets passed a 2000 B/s limit"
    );
    srv.stop().await;
}

#[test]
fn example_configs_validate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config");
    let ok = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args([
            "--config",
            &format!("{root}/turn-server.toml"),
            "--check-config",
        ])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The REST variant needs its secret from the environment.
    let rest = format!("{root}/turn-server-rest.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args(["--config", &rest, "--check-config"])
        .env_remove("WAYPOST_TURN_AUTH_SECRET")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "no credentials at all must be refused"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args(["--config", &rest, "--check-config"])
        .env("WAYPOST_TURN_AUTH_SECRET", "s1,s2")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The subject CN of the certificate a TLS listener presents (via the openssl CLI).
fn presented_cn(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 10 openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn tls_certificate_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let write = |name: &str| {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let c = params.self_signed(&ck.signing_key).unwrap();
        std::fs::write(&cert, c.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    };
    write("first.test");
    let port = crate::common::free_udp_port();
    let tls_port = crate::common::free_udp_port();
    let child = Command::new(env!("CARGO_BIN_EXE_turn-server"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--relay-ip",
            "127.0.0.1",
        ])
        .args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
        .args([
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--drain-seconds",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed by PID when the test ends, pass or fail.
    let mut child = crate::common::ChildGuard(child);
    let mut first = String::new();
    for _ in 0..50 {
        first = presented_cn(tls_port);
        if !first.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        first.contains("first.test"),
        "initial certificate: {first:?}"
    );
    write("second.test");
    let st = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut second = String::new();
    for _ in 0..50 {
        second = presented_cn(tls_port);
        if second.contains("second.test") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(second.contains("second.test"), "after SIGHUP: {second:?}");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the server"
    );
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_allocations_and_keeps_existing_ones() {
    let cfg = waypost_turn_server::TurnConfig {
        drain_seconds: 3,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut old = Client::new(srv.addr, "ring", "ring").await;
    let relayed = old.allocate().await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = A::Xor(attr::XOR_PEER_ADDRESS, peer.local_addr().unwrap());
    assert_eq!(code(&old.request(method::CREATE_PERMISSION, &[p]).await), 0);
    srv.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New allocations are refused while draining...
    let mut new = Client::new(srv.addr, "ring", "ring").await;
    assert_eq!(
        code(
            &new.request(method::ALLOCATE, &[crate::client::transport_udp()])
                .await
        ),
        508
    );
    // ...while the existing one still relays.
    peer.send_to(b"still here", relayed).await.unwrap();
    let mut buf = [0u8; 128];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), old.sock.recv_from(&mut buf))
        .await
        .expect("relayed during drain")
        .unwrap();
    let m = waypost_protocol::stun::Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.get(attr::DATA), Some(&b"still here"[..]));
    // Deleting the last allocation ends the drain early.
    let lt0 = A::Raw(attr::LIFETIME, vec![0, 0, 0, 0]);
    assert_eq!(code(&old.request(method::REFRESH, &[lt0]).await), 0);
    tokio::time::timeout(Duration::from_secs(2), srv.task)
        .await
        .expect("stopped once empty")
        .unwrap();
}

/// Waits until `addr` can be bound again (its relay socket was closed), up to 3 s.
async fn port_released(addr: std::net::SocketAddr) -> bool {
    for _ in 0..30 {
        if std::net::UdpSocket::bind(addr).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The shards keep their own view of the allocations for relaying; a removed allocation must not
/// live on there (its relay port stays bound otherwise), for UDP and for TCP clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_allocation_releases_its_relay_port() {
    let server = start(test_config(), false).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let ch = || A::Raw(attr::CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]);
    let lt0 = A::Raw(attr::LIFETIME, vec![0, 0, 0, 0]);
    let mut buf = [0u8; 256];

    // UDP client: relay once (the shard caches the allocation), then Refresh 0.
    let mut c = Client::new(server.addr, "ring", "ring").await;
    let relayed = c.allocate().await;
    let bind = [ch(), A::Xor(attr::XOR_PEER_ADDRESS, peer_addr)];
    assert_eq!(code(&c.request(method::CHANNEL_BIND, &bind).await), 0);
    let mut frame = channel::header(0x4001, 3).to_vec();
    frame.extend_from_slice(b"abc");
    c.sock.send_to(&frame, server.addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .expect("relayed")
        .unwrap();
    assert_eq!(&buf[..n], b"abc");
    assert!(
        std::net::UdpSocket::bind(relayed).is_err(),
        "relay port bound while allocated"
    );
    assert_eq!(
        code(&c.request(method::REFRESH, std::slice::from_ref(&lt0)).await),
        0
    );
    assert!(
        port_released(relayed).await,
        "UDP client's relay port released"
    );
    // Its ChannelData is no longer relayed.
    c.sock.send_to(&frame, server.addr).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf))
            .await
            .is_err(),
        "relayed after removal"
    );

    // TCP client: the same through a control connection that stays open.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut creds = None;
    let transport = crate::client::transport_udp();
    let resp = crate::client::tcp_request(
        &mut s,
        &mut creds,
        "ring",
        "ring",
        method::ALLOCATE,
        &[transport],
    )
    .await;
    assert_eq!(code(&resp), 0);
    let relayed = waypost_protocol::stun::Message::parse(&resp)
        .unwrap()
        .xor_addr(attr::XOR_RELAYED_ADDRESS)
        .unwrap();
    let r = crate::client::tcp_request(
        &mut s,
        &mut creds,
        "ring",
        "ring",
        method::CHANNEL_BIND,
        &bind,
    )
    .await;
    assert_eq!(code(&r), 0);
    s.write_all(&frame).await.unwrap();
    s.write_all(&[0]).await.unwrap(); // padding to 4 bytes
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .expect("relayed over TCP")
        .unwrap();
    assert_eq!(&buf[..n], b"abc");
    let r = crate::client::tcp_request(&mut s, &mut creds, "ring", "ring", method::REFRESH, &[lt0])
        .await;
    assert_eq!(code(&r), 0);
    assert!(
        port_released(relayed).await,
        "TCP client's relay port released"
    );
    drop(s);
    server.stop().await;
}
