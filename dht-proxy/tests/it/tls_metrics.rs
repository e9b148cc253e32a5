//! The TLS listener and the Prometheus metrics.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypost_dht_proxy::backend::MemoryBackend;
use waypost_dht_proxy::config::ProxyOptions;
use waypost_dht_proxy::metrics::Metrics;
use waypost_dht_proxy::{Listeners, Proxy};
use waypost_net::admin::Admin;
use waypost_net::shutdown::Shutdown;
use waypost_net::tls::ReloadableTls;

use crate::common::*;

#[tokio::test]
async fn serves_the_same_api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = ReloadableTls::load(&cert, &key, &[b"http/1.1"]).unwrap();

    let shutdown = Shutdown::new();
    let dht = MemoryBackend::new();
    let proxy = Proxy::new(
        Arc::new(dht.clone()),
        ProxyOptions::default(),
        Metrics::default(),
        &shutdown,
    )
    .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(waypost_dht_proxy::serve(
        proxy,
        Listeners {
            http: None,
            tls: Some((l, tls)),
        },
        shutdown.clone(),
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let body = br#"{"data":"dGxz","id":"5"}"#;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    let req = format!(
        "POST /key/{KEY} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("{\"data\":\"dGxz\",\"id\":\"5\",\"type\":0}\n"),
        "{text}"
    );
    assert_eq!(dht.values(&key_bytes(KEY)).len(), 1);
    shutdown.trigger();
}

#[tokio::test]
async fn metrics_count_routes_without_identifying_labels() {
    let s = start().await;
    let mut reg = Registry::with_prefix("waypost_dht_proxy");
    s.proxy.metrics().register(&mut reg);
    let admin = Admin::new(reg);
    request(
        s.addr,
        "POST",
        &format!("/key/{KEY}"),
        Some(br#"{"data":"eA=="}"#),
    )
    .await;
    request(s.addr, "POST", &format!("/key/{KEY}"), Some(b"{bad")).await;
    request(s.addr, "GET", &format!("/key/{KEY}"), None).await;
    let mut listen = send_raw(s.addr, "GET", &format!("/key/{KEY}/listen"), None, "").await;
    read_head(&mut listen).await.unwrap();
    request(s.addr, "BREW", "/x", None).await;
    let text = admin.render();
    assert!(
        text.contains("waypost_dht_proxy_requests_total{route=\"Put\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_requests_total{route=\"Get\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_requests_total{route=\"Unknown\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_refused_total{reason=\"BadRequest\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_listen_streams 1"),
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.1") && !text.contains(KEY),
        "no address or key in metrics"
    );
}
