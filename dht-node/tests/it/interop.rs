//! Our node with `dhtnode` 2.4.12 and python3-opendht (spec Part E scenarios 1–9, 11).

use std::time::{Duration, Instant};

use waypost_protocol::dht::value::parse_fields;
use waypost_protocol::dht::{Args, Body, Field, InfoHash, Message, Query, QueryKind, Value};

use crate::common::{RefNode, eventually, require, start_ours};

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstraps_from_dhtnode_and_is_counted_good_and_values_flow_both_ways() {
    let mut a = RefNode::spawn(&[]);
    let r = start_ours(0, vec![a.addr()], 0);
    assert!(
        r.node.wait_connected(T).await,
        "our node connects to dhtnode"
    );
    // dhtnode counts our node as good (scenario 1).
    let mut good = 0;
    for _ in 0..40 {
        good = a.good_ipv4().await;
        if good >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        good >= 1,
        "dhtnode must count our node as good:\n{}",
        a.output()
    );

    // Scenario 2: put from the reference, get from ours.
    let m = a.mark();
    a.cmd("p testkey hello");
    assert!(
        a.wait_after(m, "Put: success", T).await.is_some(),
        "{}",
        a.output()
    );
    let key = InfoHash::get("testkey");
    let vals = r.node.get_all(key, Query::all()).await.unwrap();
    let v = vals
        .iter()
        .find(|v| v.data == b"hello")
        .expect("our get finds the reference's value");
    assert_eq!(v.user_type, "text/plain");

    // Scenario 3: put from ours, get from the reference.
    let mut mine = Value::new(b"fromR".to_vec());
    mine.user_type = "text/plain".into();
    let out = r.node.put(key, mine, false).await.unwrap();
    assert!(out.stored, "dhtnode acknowledged our put");
    let m = a.mark();
    a.cmd("g testkey");
    let tail = a
        .wait_after(m, "Get: completed", T)
        .await
        .expect("get completes");
    assert!(tail.contains("data(text/plain):\"fromR\""), "{tail}");

    // Scenario 4: the reference's paginated get (ids, then one get per id) against our storage:
    // our node holds both values, and a fresh reference node that only knows us sees both.
    let mut b = RefNode::spawn(&["-b", &r.addr.to_string()]);
    let m = b.mark();
    b.cmd("g testkey");
    let tail = b
        .wait_after(m, "Get: completed", T)
        .await
        .expect("get completes");
    assert!(
        tail.contains("\"hello\"") && tail.contains("\"fromR\""),
        "{tail}"
    );
    b.cmd("q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhtnode_bootstraps_from_ours() {
    let r = start_ours(0, vec![], 0);
    let mut b = RefNode::spawn(&["-b", &r.addr.to_string()]);
    let mut good = 0;
    for _ in 0..40 {
        good = b.good_ipv4().await;
        if good >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        good >= 1,
        "dhtnode bootstrapped from our node:\n{}",
        b.output()
    );
    assert!(
        r.node.wait_connected(T).await,
        "and our node knows it as good"
    );
    let m = b.mark();
    b.cmd("p bootkey viaours");
    assert!(
        b.wait_after(m, "Put: success", T).await.is_some(),
        "{}",
        b.output()
    );
    assert!(
        eventually(T, || r.node.status().stored_values >= 1).await,
        "our node stored the value dhtnode put"
    );
    // Field projection and where filters against values our node holds (scenario 4).
    let mut v = Value::new(b"fromR".to_vec());
    v.user_type = "text/plain".into();
    let id = r
        .node
        .put(InfoHash::get("qkey"), v, false)
        .await
        .unwrap()
        .id;
    let m = b.mark();
    b.cmd("q qkey SELECT id,seq");
    let tail = b
        .wait_after(m, "Query: completed", T)
        .await
        .expect("query completes");
    assert!(tail.contains(&format!("Index[Id:{id:x},Seq:0]")), "{tail}");
    let m = b.mark();
    b.cmd("g qkey WHERE user_type=\"text/plain\"");
    let tail = b
        .wait_after(m, "Get: completed", T)
        .await
        .expect("get completes");
    assert!(tail.contains("\"fromR\""), "{tail}");
    let m = b.mark();
    b.cmd("g qkey WHERE user_type=\"image/png\"");
    let tail = b
        .wait_after(m, "Get: completed", T)
        .await
        .expect("get completes");
    assert!(!tail.contains("\"fromR\""), "where filter applied: {tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_signed_and_encrypted_values_from_dhtnode() {
    let a = RefNode::spawn(&[]);
    let r = start_ours(0, vec![a.addr()], 0);
    assert!(r.node.wait_connected(T).await);
    let mut e = RefNode::spawn(&["-i", "-b", &r.addr.to_string()]);
    // 3000-byte value (fragmented on the wire: header + 3 parts).
    let big: String = std::iter::repeat_n('a', 3000).collect();
    let m = e.mark();
    e.cmd(&format!("p bigkey {big}"));
    assert!(
        e.wait_after(m, "Put: success", T).await.is_some(),
        "{}",
        e.output()
    );
    let vals = r
        .node
        .get_all(InfoHash::get("bigkey"), Query::all())
        .await
        .unwrap();
    assert!(
        vals.iter().any(|v| v.data.len() == 3000),
        "3000-byte value retrieved"
    );

    // Signed value: verified with RSA-SHA512 by our storage.
    let m = e.mark();
    e.cmd("s signkey signed-hello");
    assert!(
        e.wait_after(m, "Put signed: success", T).await.is_some(),
        "{}",
        e.output()
    );
    let vals = r
        .node
        .get_all(InfoHash::get("signkey"), Query::all())
        .await
        .unwrap();
    let s = vals
        .iter()
        .find(|v| v.data == b"signed-hello")
        .expect("signed value retrieved");
    assert!(s.is_signed() && s.verify_signature(), "signature verifies");
    let key_id = e
        .output()
        .split("Public key ID ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .map(str::to_owned)
        .expect("dhtnode -i prints its key id");
    assert_eq!(
        s.owner_id().to_hex(),
        key_id,
        "owner key id = SHA-1 of the DER public key"
    );

    // Encrypted value: carried opaque.
    let m = e.mark();
    e.cmd(&format!("e enckey {key_id} secret"));
    assert!(
        e.wait_after(m, "Put encrypted: success", T).await.is_some(),
        "{}",
        e.output()
    );
    let vals = r
        .node
        .get_all(InfoHash::get("enckey"), Query::all())
        .await
        .unwrap();
    assert!(
        vals.iter()
            .any(|v| v.is_encrypted() && v.cypher.len() >= 512),
        "encrypted value retrieved"
    );

    // A value over 64 KiB is refused up front.
    assert!(matches!(
        r.node
            .put(InfoHash::get("huge"), Value::new(vec![0; 70_000]), false)
            .await,
        Err(waypost_dht_node::NodeError::ValueTooLarge)
    ));

    // Our 3000-byte value read back by the reference.
    let out = r
        .node
        .put(
            InfoHash::get("bigkey2"),
            Value::new(vec![b'z'; 3000]),
            false,
        )
        .await
        .unwrap();
    assert!(out.stored);
    let m = e.mark();
    e.cmd("g bigkey2");
    let tail = e
        .wait_after(m, "Get: completed", T)
        .await
        .expect("get completes");
    assert!(tail.contains("3000 bytes"), "{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_in_both_directions() {
    let mut a = RefNode::spawn(&[]);
    let r = start_ours(0, vec![a.addr()], 0);
    assert!(r.node.wait_connected(T).await);
    let key = InfoHash::get("lkey");
    // Ours listens, the reference puts (scenario 6).
    let mut l = r.node.listen(key, Query::all()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = a.mark();
    a.cmd("p lkey fromA");
    a.wait_after(m, "Put: success", T).await.expect("put");
    let t0 = Instant::now();
    let ev = tokio::time::timeout(T, l.events.recv())
        .await
        .expect("update in time")
        .expect("event");
    assert!(!ev.expired && ev.values.iter().any(|v| v.data == b"fromA"));
    assert!(t0.elapsed() < Duration::from_secs(2), "delivered promptly");
    // The reference listens, ours puts (scenario 5).
    let m = a.mark();
    a.cmd("l lkey2");
    a.wait_after(m, "Listening", T).await.expect("listening");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = a.mark();
    let mut v = Value::new(b"fromR".to_vec());
    v.user_type = "text/plain".into();
    assert!(
        r.node
            .put(InfoHash::get("lkey2"), v, false)
            .await
            .unwrap()
            .stored
    );
    let tail = a
        .wait_after(m, "Listen: found", T)
        .await
        .expect("dhtnode listen fired");
    assert!(a.wait_after(m, "\"fromR\"", T).await.is_some(), "{tail}");
    drop(l);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_opendht_puts_and_gets_through_our_node() {
    let py = require("/usr/bin/python3");
    let r = start_ours(0, vec![], 0);
    let mine = r.node.clone();
    let key = InfoHash::get("pykey");
    let port = crate::common::free_udp_port();
    let script = format!(
        r#"
import opendht, time, sys
d = opendht.DhtRunner(); d.run(port={port})
d.bootstrap("127.0.0.1", "{rport}")
time.sleep(2)
k = opendht.InfoHash.get("pykey")
def on_value(v, expired):
    print("LISTEN", bytes(v.data).decode(), expired, flush=True)
    return True
tok = d.listen(k, on_value)
print("PUT", d.put(k, opendht.Value(b"from-python")), flush=True)
time.sleep(3)
vals = d.get(k)
print("GOT", sorted(bytes(v.data).decode() for v in vals), flush=True)
d.join()
"#,
        rport = r.addr.port()
    );
    let child = tokio::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    // While python waits, our node puts its own value.
    let ours = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        mine.put(key, Value::new(b"from-rust".to_vec()), false)
            .await
    });
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("python finished")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("PUT True"), "{text}");
    assert!(text.contains("from-rust"), "python got our value: {text}");
    assert!(
        text.contains("LISTEN from-rust False"),
        "python's listen saw our value: {text}"
    );
    assert!(ours.await.unwrap().unwrap().stored);
    // Python's node is gone now, so the search waits for nodes (up to the op timeout); the
    // value python put on our node comes in the first batch (our own storage).
    let mut s = r.node.get(key, Query::all()).unwrap();
    let first = tokio::time::timeout(T, s.next())
        .await
        .expect("first batch")
        .unwrap_or_default();
    assert!(
        first.iter().any(|v| v.data == b"from-python"),
        "we got python's value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_network_ids_do_not_interact() {
    let mut n5 = RefNode::spawn(&["-n", "5"]);
    let r0 = start_ours(0, vec![n5.addr()], 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        r0.node.status().ipv4.good,
        0,
        "net 0 node must not connect to net 5"
    );
    assert_eq!(n5.good_ipv4().await, 0);
    let r5 = start_ours(0, vec![n5.addr()], 5);
    assert!(
        r5.node.wait_connected(T).await,
        "net 5 node connects to net 5 dhtnode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_node_talks_ipv4_and_ipv6() {
    let a = RefNode::spawn(&[]);
    let v4: std::net::SocketAddr = format!("127.0.0.1:{}", a.port).parse().unwrap();
    let v6: std::net::SocketAddr = format!("[::1]:{}", a.port).parse().unwrap();
    let sockets = waypost_dht_node::bind_sockets(&[
        "127.0.0.1:0".parse().unwrap(),
        "[::1]:0".parse().unwrap(),
    ])
    .expect("bind both families");
    assert_eq!(sockets.len(), 2);
    let shutdown = waypost_net::shutdown::Shutdown::new();
    let opts = waypost_dht_node::NodeOptions {
        bootstrap: vec![v4, v6],
        ..Default::default()
    };
    let node = waypost_dht_node::spawn(opts, sockets, &shutdown, None).unwrap();
    assert!(
        eventually(T, || {
            let s = node.status();
            s.ipv4.good >= 1 && s.ipv6.good >= 1
        })
        .await,
        "good nodes in both routing tables: {:?}",
        node.status()
    );
    let out = node
        .put(
            InfoHash::get("dualkey"),
            Value::new(b"both".to_vec()),
            false,
        )
        .await
        .unwrap();
    assert!(out.stored, "put acknowledged over both families");
    let vals = node
        .get_all(InfoHash::get("dualkey"), Query::all())
        .await
        .unwrap();
    assert!(vals.iter().any(|v| v.data == b"both"));
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_put_replaced_and_cancelled_through_the_handle() {
    let a = start_ours(0, vec![], 0);
    let b = start_ours(0, vec![a.addr], 0);
    assert!(b.node.wait_connected(T).await);
    let key = InfoHash::get("permkey");
    let mut v = Value::new(b"perm".to_vec());
    v.id = 42;
    let (r1, r2) = tokio::join!(b.node.put(key, v.clone(), true), b.node.put(key, v, true));
    assert_eq!(
        r1.unwrap(),
        waypost_dht_node::PutOutcome {
            id: 42,
            stored: true
        }
    );
    assert!(r2.unwrap().stored);
    assert!(
        eventually(T, || b.node.status().ops == 1).await,
        "one announce kept: {:?}",
        b.node.status()
    );
    b.node.cancel_put(key, 42).unwrap();
    assert!(
        eventually(T, || b.node.status().ops == 0).await,
        "cancelled"
    );
    let got = a.node.get_all(key, Query::all()).await.unwrap();
    assert!(got.iter().any(|v| v.id == 42 && v.data == b"perm"));
}

/// A transparent UDP relay between one of our nodes and one dhtnode, recording every datagram
/// (decoded) that passes: `(from_ours, message)`.
struct Relay {
    /// The address our node uses for the dhtnode.
    addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<(bool, Message)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Self {
        use std::sync::{Arc, Mutex};
        use tokio::net::UdpSocket;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let task = tokio::spawn(async move {
            let mut ours: Option<std::net::SocketAddr> = None;
            let (mut b1, mut b2) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = front.recv_from(&mut b1) => {
                        let Ok((n, from)) = r else { return };
                        ours = Some(from);
                        if let Ok(m) = Message::decode(&b1[..n]) {
                            l.lock().unwrap().push((true, m));
                        }
                        let _ = back.send_to(&b1[..n], to).await;
                    }
                    r = back.recv_from(&mut b2) => {
                        let Ok((n, _)) = r else { return };
                        if let Ok(m) = Message::decode(&b2[..n]) {
                            l.lock().unwrap().push((false, m));
                        }
                        if let Some(o) = ours {
                            let _ = front.send_to(&b2[..n], o).await;
                        }
                    }
                }
            }
        });
        Self { addr, log, task }
    }

    /// Queries of `kind` on key `h` our node sent, with their tids.
    fn sent(&self, kind: QueryKind, h: InfoHash) -> Vec<(u32, Args)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(ours, m)| match &m.body {
                Body::Query(k, a) if *ours && *k == kind && a.h == Some(h) => {
                    Some((m.tid, a.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// dhtnode's answers to tid `t`.
    fn answers(&self, t: u32) -> Vec<Body> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(ours, m)| !*ours && m.tid == t)
            .map(|(_, m)| m.body.clone())
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Spec A.14 / Part E scenario 8, our side: a permanent put made by our node is kept alive on
/// dhtnode by probe + `refresh` past its type's lifetime. Type 5 (ICE candidates) lives 1 min
/// on dhtnode, so the test waits 75 s instead of 10+ min; a plain put of the same type made
/// at the same time shows that dhtnode really drops such values after a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_permanent_put_outlives_its_lifetime_on_dhtnode_through_refresh() {
    let mut a = RefNode::spawn(&[]);
    // Our node reaches dhtnode through a recording relay, to see what goes over the wire.
    let relay = Relay::start(a.addr()).await;
    let r = start_ours(0, vec![relay.addr], 0);
    assert!(r.node.wait_connected(T).await);
    let ice = |data: &[u8]| {
        let mut v = Value::new(data.to_vec());
        v.vtype = 5;
        v.user_type = "text/plain".into();
        v
    };
    let start = Instant::now();
    let (perm, plain) = tokio::join!(
        r.node.put(InfoHash::get("icekey-perm"), ice(b"kept"), true),
        r.node
            .put(InfoHash::get("icekey-plain"), ice(b"dropped"), false),
    );
    let perm = perm.unwrap();
    assert!(perm.stored && plain.unwrap().stored, "dhtnode acked both");
    // One lifetime (60 s) and a margin: our refresh goes out at ~50 s.
    tokio::time::sleep((start + Duration::from_secs(75)).saturating_duration_since(Instant::now()))
        .await;
    // On the wire: one full put, then a probe get (id + seq of our value, restricted to its
    // id) answered with `fileds`, then a `refresh` that dhtnode acknowledged with the value id.
    let kp = InfoHash::get("icekey-perm");
    assert_eq!(
        relay.sent(QueryKind::Put, kp).len(),
        1,
        "no second full put"
    );
    let probes = relay.sent(QueryKind::Get, kp);
    let probe_answered = probes.iter().any(|(t, a)| {
        a.query
            .as_ref()
            .is_some_and(|q| q.select == vec![Field::Id, Field::SeqNum])
            && relay.answers(*t).iter().any(|b| {
                matches!(b, Body::Reply(r) if r.fields.as_ref().and_then(parse_fields)
                    .is_some_and(|rows| rows.iter().any(|row| row.id == Some(perm.id))))
            })
    });
    assert!(probe_answered, "probe sent and answered: {probes:?}");
    let refreshes = relay.sent(QueryKind::Refresh, kp);
    assert!(!refreshes.is_empty(), "refresh sent");
    for (t, a) in &refreshes {
        assert_eq!(a.vid, Some(perm.id));
        let answers = relay.answers(*t);
        assert!(
            answers
                .iter()
                .any(|b| matches!(b, Body::Reply(r) if r.vid == Some(perm.id))),
            "dhtnode accepted our refresh: {answers:?}"
        );
        assert!(!answers.iter().any(|b| matches!(b, Body::Error { .. })));
    }
    let m = a.mark();
    a.cmd("g icekey-perm");
    let tail = a
        .wait_after(m, "Get: completed", T)
        .await
        .expect("get completes");
    assert!(
        tail.contains("data(text/plain):\"kept\""),
        "the permanent value is still on dhtnode after 75 s: {tail}"
    );
    let m = a.mark();
    a.cmd("g icekey-plain");
    let tail = a
        .wait_after(m, "Get: completed", T)
        .await
        .expect("get completes");
    assert!(
        !tail.contains("\"dropped\""),
        "the plain one expired after its 1-minute lifetime: {tail}"
    );
}
