//! The privacy canary under proxy traffic: the real binary (debug build, trace logging compiled
//! in) runs with `--log-level trace` on a real DHT (a plain dhtnode); requests come from a random
//! loopback alias and carry planted identifiers (push token, InfoHash key, client id, session id,
//! UnifiedPush endpoint, value data). Push deliveries fail on purpose (a closed gateway port) so
//! error paths run too. Nothing may reach standard output, standard error or `/metrics`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::{Watched, free_port, wait_tcp};

use crate::interop::{Dhtnode, free_udp_port, wait_proxy_connected};

fn send(canary: &Canary, addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> String {
    let mut s = canary
        .tcp_connect(addr)
        .expect("connect from the canary address");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nUser-Agent: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        canary.username,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn proxy_leaks_nothing_under_traffic() {
    let mut canary = Canary::new();
    let session = format!("sess{}", &canary.key[9..17]);
    let endpoint_port = free_port(); // nothing listens there: deliveries fail and are retried
    let endpoint = format!("http://127.0.0.1:{endpoint_port}/up/{}", canary.name);
    canary.plant("session id", &session);
    canary.plant("unifiedpush endpoint", &endpoint);
    canary.plant("value data (base64)", "Y2FuYXJ5LWRhdGE=");
    canary.plant("value data", "canary-data");

    let pb = free_udp_port();
    let mut b = Dhtnode::spawn(&["-p", &pb.to_string()]);
    let (http, admin, gw) = (free_port(), free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dht-proxy"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--log-level",
        "trace",
        "--listen",
        &addr.to_string(),
        "--admin-listen",
        &admin_addr.to_string(),
    ])
    .args([
        "--port",
        &free_udp_port().to_string(),
        "--dht-bind",
        "127.0.0.1",
    ])
    .args(["--bootstrap", &format!("127.0.0.1:{pb}")])
    .args([
        "--push-server",
        &format!("http://127.0.0.1:{gw}"),
        "--bundle-id",
        &canary.name,
    ]);
    let mut server = Watched::spawn(cmd).unwrap();
    assert!(wait_tcp(addr, Duration::from_secs(20)));
    assert!(wait_proxy_connected(addr, Duration::from_secs(20)));

    let key = canary.infohash.clone();
    let sub = |token: &str, platform: &str| {
        format!(
            r#"{{"key":"{token}","client_id":"{}","session_id":"{session}","platform":"{platform}","topic":""}}"#,
            canary.username
        )
    };
    for (token, platform) in [
        (canary.token.as_str(), "android"),
        (canary.token.as_str(), "ios"),
        (endpoint.as_str(), "unifiedpush"),
    ] {
        let r = send(
            &canary,
            addr,
            "SUBSCRIBE",
            &format!("/key/{key}"),
            sub(token, platform).as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let perm = format!(
        r#"{{"data":"Y2FuYXJ5LWRhdGE=","permanent":{{"key":"{}","client_id":"{}","session_id":"{session}","platform":"android"}}}}"#,
        canary.token, canary.username
    );
    assert!(
        send(
            &canary,
            addr,
            "POST",
            &format!("/key/{key}"),
            perm.as_bytes()
        )
        .starts_with("HTTP/1.1 200")
    );
    // A value from the DHT side triggers pushes (to closed ports: failures, retries).
    b.cmd(&format!("p {key} canary-data"));
    assert!(b.wait("Put: success", 1, Duration::from_secs(20)));
    assert!(send(&canary, addr, "GET", &format!("/key/{key}"), b"").contains("Y2FuYXJ5LWRhdGE="));
    // A listen stream opened and dropped, errors of every kind, a ping push.
    {
        let mut s = canary.tcp_connect(addr).unwrap();
        s.write_all(format!("GET /key/{key}/listen HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let mut buf = [0u8; 512];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read(&mut buf);
    }
    send(
        &canary,
        addr,
        "POST",
        &format!("/key/{key}"),
        format!("{{bad {}", canary.token).as_bytes(),
    );
    send(
        &canary,
        addr,
        "POST",
        &format!("/{}", canary.name),
        format!(r#"{{"data":"{}"}}"#, canary.key).as_bytes(),
    );
    send(
        &canary,
        addr,
        "SUBSCRIBE",
        &format!("/key/{key}"),
        format!(r#"{{"client_id":"{}"}}"#, canary.username).as_bytes(),
    );
    send(
        &canary,
        addr,
        "UNSUBSCRIBE",
        &format!("/key/{key}"),
        format!(r#"{{"client_id":"{}"}}"#, canary.username).as_bytes(),
    );
    send(
        &canary,
        addr,
        "BREW",
        &format!("/{}/{}", canary.name, canary.token),
        b"",
    );
    send(
        &canary,
        addr,
        "POST",
        "/node/pingPush",
        sub(&canary.token, "android").as_bytes(),
    );
    let unsub = format!(
        r#"{{"key":"{}","client_id":"{}"}}"#,
        canary.token, canary.username
    );
    assert!(
        send(
            &canary,
            addr,
            "UNSUBSCRIBE",
            &format!("/key/{key}"),
            unsub.as_bytes()
        )
        .starts_with("HTTP/1.1 200")
    );
    // Let the failing deliveries and their retries run.
    std::thread::sleep(Duration::from_secs(5));

    let metrics = {
        let mut s = std::net::TcpStream::connect(admin_addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(
        metrics.contains("waypost_dht_proxy_pushes_total"),
        "{metrics}"
    );
    assert_eq!(
        server.terminate(Duration::from_secs(10)),
        Some(0),
        "clean exit on SIGTERM"
    );
    let stdout = server.stdout();
    let stderr = server.stderr();
    canary.assert_clean(&[
        Source::log("stdout", &stdout),
        Source::log("stderr", &stderr),
        Source::other("metrics", metrics.as_bytes()),
    ]);
    // The run did log something (failed deliveries), so the check above was not vacuous.
    assert!(
        String::from_utf8_lossy(&stdout).contains("push"),
        "expected push failure warnings in the log: {}",
        String::from_utf8_lossy(&stdout)
    );
}
