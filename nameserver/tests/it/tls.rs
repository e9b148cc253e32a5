//! The optional HTTPS listener of the real binary: a self-signed certificate, a registration
//! over TLS that is visible over plain HTTP, and invalid TLS files rejected with exit 64.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use waypost_tests::proc::{Watched, free_port, wait_tcp};

use crate::common::*;

fn https_request(port: u16, root: &[u8], method: &str, path: &str, body: &[u8]) -> Resp {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from(root.to_vec());
    roots.add(der).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body).unwrap();
    let mut raw = Vec::new();
    // A peer that closes without close_notify surfaces as an error after the data: keep the data.
    let _ = tls.read_to_end(&mut raw);
    parse_response(&raw)
}

#[test]
fn https_listener_serves_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nameserver"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--tls-listen",
        &format!("127.0.0.1:{tls_port}"),
    ])
    .arg("--tls-cert")
    .arg(&cert)
    .arg("--tls-key")
    .arg(&key)
    .arg("--data-dir")
    .arg(dir.path().join("data"));
    let mut server = Watched::spawn(cmd).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_tcp(addr, Duration::from_secs(20)));
    assert!(wait_tcp(
        format!("127.0.0.1:{tls_port}").parse().unwrap(),
        Duration::from_secs(20)
    ));

    let r = https_request(
        tls_port,
        ck.cert.der(),
        "POST",
        "/name/alice",
        &reg(key_a(), "alice"),
    );
    r.expect(200, json!({"success": true}));
    let r = https_request(tls_port, ck.cert.der(), "GET", "/name/alice", b"");
    assert_eq!(r.json()["name"], json!("alice"));
    assert_eq!(
        get(addr, "/name/alice").json()["addr"],
        json!(format!("0x{}", id(key_a())))
    );
    // Plain HTTP on the TLS port gets no answer and does not disturb the server.
    let mut s = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /name/alice HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        https_request(tls_port, ck.cert.der(), "GET", "/name/alice", b"").status,
        200
    );
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn bad_tls_files_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_nameserver"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tls-listen",
            "127.0.0.1:1",
        ])
        .arg("--tls-cert")
        .arg(&junk)
        .arg("--tls-key")
        .arg(&junk)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing opened before the configuration is valid"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nameserver"))
        .args(["--tls-listen", "127.0.0.1:8443"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
