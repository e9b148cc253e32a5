//! `node-client dht|push|identity ...` against our real DHT node and DHT proxy, in-process on
//! loopback: a bootstrap node, and a proxy on its own node bootstrapped from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use waypost_dht_proxy::config::ProxyOptions;
use waypost_dht_proxy::metrics::Metrics;
use waypost_dht_proxy::node::NodeBackend;
use waypost_dht_proxy::{Listeners, Proxy};
use waypost_net::shutdown::Shutdown;

use crate::common::{Background, run, runtime};

struct Net {
    bootstrap: String,
    proxy: String,
    shutdown: Shutdown,
    _boot: waypost_dht_node::NodeHandle,
    rt: Option<tokio::runtime::Runtime>,
}

impl Net {
    fn start(push_server: Option<SocketAddr>) -> Self {
        let rt = runtime();
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let (bootstrap, proxy, boot_node) = rt.block_on(async move {
            let s = waypost_dht_node::bind_sockets(&["127.0.0.1:0".parse().unwrap()]).unwrap();
            let boot = s[0].local_addr().unwrap();
            let b = waypost_dht_node::spawn(Default::default(), s, &sd, None).unwrap();
            let s = waypost_dht_node::bind_sockets(&["127.0.0.1:0".parse().unwrap()]).unwrap();
            let opts = waypost_dht_node::NodeOptions {
                bootstrap: vec![boot],
                ..Default::default()
            };
            let node = waypost_dht_node::spawn(opts, s, &sd, None).unwrap();
            assert!(node.wait_connected(Duration::from_secs(10)).await);
            let popts = ProxyOptions {
                push_server: push_server.map(|a| format!("http://{a}")),
                ..ProxyOptions::default()
            };
            let proxy = Proxy::new(
                Arc::new(NodeBackend::new(node)),
                popts,
                Metrics::default(),
                &sd,
            )
            .unwrap();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(waypost_dht_proxy::serve(
                proxy,
                Listeners {
                    http: Some(l),
                    tls: None,
                },
                sd.clone(),
            ));
            (boot.to_string(), format!("http://{addr}"), b)
        });
        Self {
            bootstrap,
            proxy,
            shutdown,
            _boot: boot_node,
            rt: Some(rt),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

const BIND: &str = "127.0.0.1:0";

#[test]
fn identity_new_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("id.pem");
    let f = f.to_str().unwrap();
    let (code, l, err) = run(&["identity", "new", "--identity", f, "--bits", "2048"]);
    assert_eq!(code, 0, "{err}");
    let id = l[0]["jami_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 40);
    assert_eq!(l[0]["bits"], 2048);
    assert_eq!(l[0]["generated"], true);
    let pem = std::fs::read(f).unwrap();
    let parsed = waypost_protocol::identity::Identity::from_pem(&pem).unwrap();
    assert_eq!(
        parsed.id().to_hex(),
        id,
        "Jami ID = SHA-1 of the DER public key"
    );
    assert_eq!(
        l[0]["inbox_key"],
        waypost_protocol::dht::InfoHash::get(format!("inbox:{id}")).to_hex()
    );
    let (code, l2, _) = run(&["identity", "show", "--identity", f]);
    assert_eq!(code, 0);
    assert_eq!(l2[0]["jami_id"], id.as_str());
    assert_eq!(l2[0]["generated"], false);
    // `new` never overwrites; `show` needs the file.
    let (code, _, err) = run(&["identity", "new", "--identity", f]);
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = run(&["identity", "show", "--identity", "/nonexistent/x.pem"]);
    assert_eq!(code, 64);
}

#[test]
fn proxy_info_put_get_listen() {
    let n = Net::start(None);
    let (code, l, err) = run(&["dht", "info", "--proxy", &n.proxy]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(l[0]["connected"], true, "{l:?}");
    assert_eq!(l[0]["node_id"].as_str().unwrap().len(), 40);

    let (code, _, _) = run(&["dht", "get", "--proxy", &n.proxy, "nothing-here"]);
    assert_eq!(code, 2, "empty get exits 2");

    let mut listen = Background::start(&[
        "dht",
        "listen",
        "--proxy",
        &n.proxy,
        "k1",
        "--count",
        "1",
        "--timeout",
        "20",
    ]);
    assert_eq!(listen.next(Duration::from_secs(10))["event"], "listening");
    std::thread::sleep(Duration::from_millis(300));

    let (code, l, err) = run(&[
        "dht",
        "put",
        "--proxy",
        &n.proxy,
        "k1",
        "hello",
        "--utype",
        "text/plain",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = l[0]["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "0");
    assert_eq!(l[0]["acknowledged"], true);

    let ev = listen.next(Duration::from_secs(10));
    assert_eq!(ev["event"], "value");
    assert_eq!(ev["value"]["text"], "hello");
    assert_eq!(listen.wait(Duration::from_secs(5)), 0);

    let (code, l, _) = run(&["dht", "get", "--proxy", &n.proxy, "k1"]);
    assert_eq!(code, 0);
    assert_eq!(l[0]["value"]["id"], id.as_str());
    assert_eq!(l[0]["value"]["utype"], "text/plain");
    assert_eq!(l.last().unwrap()["count"], 1);

    // A permanent put, and a not-urgent priority, through the proxy.
    let (code, l, err) = run(&[
        "dht",
        "put",
        "--proxy",
        &n.proxy,
        "k1",
        "kept",
        "--permanent",
        "--prio",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(l[0]["value"]["prio"], 1, "{l:?}");
    assert!(l[0]["value"].get("permanent").is_none(), "never echoed");
    let (code, l, _) = run(&["dht", "get", "--proxy", &n.proxy, "k1"]);
    assert_eq!(code, 0);
    assert_eq!(l.last().unwrap()["count"], 2);
}

#[test]
fn udp_node_put_get_listen() {
    let n = Net::start(None);
    let b = n.bootstrap.clone();
    let mut listen = Background::start(&[
        "dht",
        "listen",
        "--bootstrap",
        &b,
        "--bind",
        BIND,
        "k2",
        "--count",
        "1",
        "--timeout",
        "30",
    ]);
    assert_eq!(listen.next(Duration::from_secs(15))["event"], "listening");
    std::thread::sleep(Duration::from_millis(500));
    let (code, l, err) = run(&[
        "dht",
        "put",
        "--bootstrap",
        &b,
        "--bind",
        BIND,
        "k2",
        "over udp",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(l[0]["acknowledged"], true);
    let id = l[0]["id"].as_str().unwrap().to_owned();
    let ev = listen.next(Duration::from_secs(20));
    assert_eq!(ev["value"]["text"], "over udp");
    assert_eq!(listen.wait(Duration::from_secs(5)), 0);
    // Read back as a UDP node and through the proxy.
    let (code, l, _) = run(&["dht", "get", "--bootstrap", &b, "--bind", BIND, "k2"]);
    assert_eq!(code, 0);
    assert_eq!(l[0]["value"]["id"], id.as_str());
    let (code, l, _) = run(&["dht", "get", "--proxy", &n.proxy, "k2"]);
    assert_eq!(code, 0);
    assert_eq!(l[0]["value"]["text"], "over udp");
}

#[test]
fn push_listen_gets_unifiedpush_and_fetches() {
    let n = Net::start(None);
    let key = format!("inbox:{}", "ab".repeat(20));
    let mut phone = Background::start(&[
        "push",
        "listen",
        "--proxy",
        &n.proxy,
        &key,
        "--client-id",
        "alice",
        "--fetch",
        "--count",
        "1",
        "--timeout",
        "30",
    ]);
    let sub = phone.next(Duration::from_secs(10));
    assert_eq!(sub["event"], "subscribed", "{sub}");
    assert!(
        sub["token"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let (code, l, err) = run(&[
        "dht",
        "put",
        "--bootstrap",
        &n.bootstrap,
        "--bind",
        BIND,
        &key,
        "--cypher-random",
        "1700",
    ]);
    assert_eq!(code, 0, "{err}");
    let put = l[0]["value"].clone();
    assert!(put["cypher"].is_string());
    let push = phone.next(Duration::from_secs(20));
    assert_eq!(push["event"], "push", "{push}");
    assert_eq!(push["via"], "unifiedpush");
    assert_eq!(push["data"]["to"], "alice");
    let fetched = phone.next(Duration::from_secs(20));
    assert_eq!(fetched["event"], "fetched");
    let values = fetched["values"].as_array().unwrap();
    assert!(
        values
            .iter()
            .any(|v| v["id"] == put["id"] && v["cypher"] == put["cypher"]),
        "{fetched}"
    );
    assert_eq!(phone.wait(Duration::from_secs(10)), 0);
}

#[test]
fn push_receive_as_gateway_with_subscribe_and_unsubscribe() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut recv = Background::start(&[
        "push",
        "receive",
        "--listen",
        &gw.to_string(),
        "--count",
        "1",
        "--timeout",
        "30",
    ]);
    assert_eq!(recv.next(Duration::from_secs(10))["event"], "receiving");
    let n = Net::start(Some(gw));
    let (code, l, err) = run(&[
        "dht",
        "subscribe",
        "--proxy",
        &n.proxy,
        "k3",
        "--token",
        "TOK",
        "--client-id",
        "c1",
        "--session-id",
        "s1",
        "--platform",
        "android",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(l[0]["event"], "subscribed");
    let (code, _, err) = run(&["dht", "put", "--proxy", &n.proxy, "k3", "ping"]);
    assert_eq!(code, 0, "{err}");
    let p = recv.next(Duration::from_secs(20));
    assert_eq!(p["via"], "gorush", "{p}");
    assert_eq!(p["tokens"][0], "TOK");
    assert_eq!(p["data"]["to"], "c1");
    assert_eq!(p["data"]["s"], "s1");
    assert_eq!(recv.wait(Duration::from_secs(5)), 0);
    let (code, l, err) = run(&[
        "dht",
        "unsubscribe",
        "--proxy",
        &n.proxy,
        "k3",
        "--token",
        "TOK",
        "--client-id",
        "c1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(l[0]["event"], "unsubscribed");
}

#[test]
fn push_listen_as_an_android_phone_through_the_gateway() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw: SocketAddr = ([127, 0, 0, 1], port).into();
    let n = Net::start(Some(gw));
    let mut phone = Background::start(&[
        "push",
        "listen",
        "--proxy",
        &n.proxy,
        "k4",
        "--platform",
        "android",
        "--token",
        "DEVTOKEN",
        "--listen",
        &gw.to_string(),
        "--client-id",
        "bob",
        "--fetch",
        "--count",
        "1",
        "--timeout",
        "30",
    ]);
    assert_eq!(phone.next(Duration::from_secs(10))["event"], "subscribed");
    // Another session's push for the same token is ignored, like the reference client does.
    let (code, _, err) = run(&[
        "dht",
        "subscribe",
        "--proxy",
        &n.proxy,
        "k5",
        "--token",
        "DEVTOKEN",
        "--client-id",
        "bob",
        "--session-id",
        "other",
        "--platform",
        "android",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "dht",
        "put",
        "--proxy",
        &n.proxy,
        "k5",
        "not for this session",
    ]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = run(&["dht", "put", "--proxy", &n.proxy, "k4", "for the phone"]);
    assert_eq!(code, 0, "{err}");
    let p = phone.next(Duration::from_secs(20));
    assert_eq!(p["event"], "push", "{p}");
    assert_eq!(p["via"], "gorush");
    assert_eq!(
        p["priority"], "high",
        "priority-0 value: high priority push"
    );
    let f = phone.next(Duration::from_secs(20));
    assert_eq!(f["values"][0]["text"], "for the phone", "{f}");
    assert_eq!(phone.wait(Duration::from_secs(10)), 0);
}

#[test]
fn human_output_of_a_get() {
    let n = Net::start(None);
    let (code, _, err) = run(&["dht", "put", "--proxy", &n.proxy, "k6", "plain words"]);
    assert_eq!(code, 0, "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_node-client"))
        .args(["dht", "get", "--proxy", &n.proxy, "k6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("value "), "{text}");
    assert!(text.contains("\"text\":\"plain words\""), "{text}");
    assert!(text.contains("done count=1"), "{text}");
}
