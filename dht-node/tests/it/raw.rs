//! Raw UDP peers against our node: errors (scenario 10), token rule (12), garbage robustness.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use waypost_protocol::dht::msg::WireValues;
use waypost_protocol::dht::value::parse_fields;
use waypost_protocol::dht::{
    Args, Body, Field, FieldValue, InfoHash, Message, Query, QueryKind, Value,
};

use crate::common::{RefNode, start_ours};

struct Raw {
    sock: UdpSocket,
    to: SocketAddr,
    id: InfoHash,
    tid: u32,
}

impl Raw {
    async fn new(to: SocketAddr) -> Self {
        Self {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            to,
            id: InfoHash::get("raw peer"),
            tid: 100,
        }
    }

    async fn ask(
        &mut self,
        kind: QueryKind,
        f: impl FnOnce(&mut Args),
        network: u32,
    ) -> Option<Message> {
        self.tid += 1;
        let mut a = Args::new(self.id);
        f(&mut a);
        let m = Message {
            tid: self.tid,
            network,
            is_client: false,
            body: Body::Query(kind, a),
        };
        self.sock.send_to(&m.encode(false), self.to).await.unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let r =
                tokio::time::timeout(Duration::from_millis(1500), self.sock.recv_from(&mut buf))
                    .await;
            let Ok(Ok((n, _))) = r else { return None };
            let m = Message::decode(&buf[..n]).unwrap();
            if m.tid == self.tid {
                return Some(m);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_tokens_and_network_filter() {
    let r = start_ours(0, vec![], 0);
    let mut p = Raw::new(r.addr).await;
    let me = r.node.node_id();
    let key = InfoHash::get("rawkey");
    // Bad token → 401 with r.id.
    let e = p
        .ask(
            QueryKind::Put,
            |a| {
                a.h = Some(key);
                a.token = Some(vec![b'x'; 32]);
                a.values = Some(WireValues::Values(vec![Value {
                    id: 9,
                    ..Value::new(b"x".to_vec())
                }]));
            },
            0,
        )
        .await
        .expect("error reply");
    assert!(
        matches!(e.body, Body::Error { code: 401, id, .. } if id == me),
        "{e:?}"
    );
    // Refresh on unknown storage → 404.
    let f = p
        .ask(QueryKind::Find, |a| a.target = Some(key), 0)
        .await
        .expect("find reply");
    let Body::Reply(fa) = f.body else { panic!() };
    let token = fa.token.expect("find reply always carries a token");
    let e = p
        .ask(
            QueryKind::Refresh,
            |a| {
                a.h = Some(key);
                a.vid = Some(1);
                a.token = Some(token.clone());
            },
            0,
        )
        .await
        .expect("error reply");
    assert!(matches!(e.body, Body::Error { code: 404, .. }), "{e:?}");
    // Get replies always carry a token (scenario 12).
    let g = p
        .ask(QueryKind::Get, |a| a.h = Some(key), 0)
        .await
        .expect("get reply");
    assert!(matches!(&g.body, Body::Reply(a) if a.token.as_ref().is_some_and(|t| t.len() == 32)));
    // Other network: silence.
    assert!(p.ask(QueryKind::Ping, |_| {}, 5).await.is_none());
    // Still answering on our own network.
    assert!(p.ask(QueryKind::Ping, |_| {}, 0).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_signed_value_is_refused_by_our_storage() {
    let a = RefNode::spawn(&[]);
    let r = start_ours(0, vec![a.addr()], 0);
    assert!(r.node.wait_connected(Duration::from_secs(15)).await);
    let mut e = RefNode::spawn(&["-i", "-b", &r.addr.to_string()]);
    let m = e.mark();
    e.cmd("s tamperkey original");
    assert!(
        e.wait_after(m, "Put signed: success", Duration::from_secs(15))
            .await
            .is_some()
    );
    let key = InfoHash::get("tamperkey");
    let vals = r.node.get_all(key, Query::all()).await.unwrap();
    let orig = vals
        .iter()
        .find(|v| v.data == b"original")
        .expect("signed value")
        .as_ref()
        .clone();
    // A raw peer re-puts it with changed data (same id, same signature), then with a new id.
    let mut p = Raw::new(r.addr).await;
    let f = p
        .ask(QueryKind::Find, |a| a.target = Some(key), 0)
        .await
        .expect("find");
    let Body::Reply(fa) = f.body else { panic!() };
    let token = fa.token.unwrap();
    let mut t1 = orig.clone();
    t1.data = b"tampered".to_vec();
    let mut t2 = t1.clone();
    t2.id ^= 1;
    for t in [t1, t2] {
        let ack = p
            .ask(
                QueryKind::Put,
                |a| {
                    a.h = Some(key);
                    a.token = Some(token.clone());
                    a.values = Some(WireValues::Values(vec![t]));
                },
                0,
            )
            .await;
        assert!(ack.is_some(), "puts are acknowledged even when refused");
    }
    // Only our node received the tampered copies; the reference never did.
    let stored = r.node.get_all(key, Query::all()).await.unwrap();
    assert!(
        stored.iter().all(|v| v.data == b"original"),
        "tampered copies refused"
    );
    assert!(stored.iter().any(|v| v.data == b"original"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_garbage_datagrams_do_not_stop_the_node() {
    use rand::{Rng, RngCore, SeedableRng};
    let a = RefNode::spawn(&[]);
    let r = start_ours(0, vec![a.addr()], 0);
    assert!(r.node.wait_connected(Duration::from_secs(15)).await);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let valid = Message {
        tid: 1,
        network: 0,
        is_client: false,
        body: Body::Query(QueryKind::Ping, Args::new(InfoHash::get("g"))),
    }
    .encode(false);
    for i in 0..10_000u32 {
        let mut b: Vec<u8> = if i % 2 == 0 {
            let mut v = vec![0u8; rng.random_range(0..600)];
            rng.fill_bytes(&mut v);
            v
        } else {
            // Mutations of a valid datagram reach deeper into the decoder.
            let mut v = valid.clone();
            for _ in 0..rng.random_range(1..6) {
                let j = rng.random_range(0..v.len());
                v[j] = rng.random();
            }
            v
        };
        if i % 7 == 0 {
            b.truncate(b.len() / 2);
        }
        let _ = sock.send_to(&b, r.addr).await;
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Half of the garbage were valid-looking pings: let the per-IP rate window (1 s) pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut p = Raw::new(r.addr).await;
    assert!(
        p.ask(QueryKind::Ping, |_| {}, 0).await.is_some(),
        "still answering"
    );
    let out = r
        .node
        .put(
            InfoHash::get("after-garbage"),
            Value::new(b"ok".to_vec()),
            false,
        )
        .await
        .unwrap();
    assert!(out.stored, "still working with dhtnode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_of_a_dhtnode_identity_passes_our_type_8_policy() {
    let r = start_ours(0, vec![], 0);
    let e = RefNode::spawn(&["-i", "-b", &r.addr.to_string()]);
    let key_id = e
        .output()
        .split("Public key ID ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .and_then(InfoHash::from_hex)
        .expect("dhtnode -i prints its key id");
    // SecureDht nodes put their certificate (type 8, id 1) at their key id on connect; our node is
    // the only other node, so it must be in our own storage.
    let mut p = Raw::new(r.addr).await;
    let mut sizes = None;
    for _ in 0..40 {
        if let Some(Message {
            body: Body::Reply(a),
            ..
        }) = p.ask(QueryKind::Get, |a| a.h = Some(key_id), 0).await
            && a.values.is_some()
        {
            sizes = a.values;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        matches!(sizes, Some(WireValues::Sizes(ref s)) if !s.is_empty()),
        "our storage holds the certificate (sent fragmented): {sizes:?}"
    );
    let vals = r.node.get_all(key_id, Query::all()).await.unwrap();
    let cert = vals.iter().find(|v| v.vtype == 8).expect("type-8 value");
    assert_eq!(cert.id, 1);
    assert_eq!(
        waypost_protocol::dht::storage::certificate_key_id(&cert.data),
        Some(key_id)
    );
}

/// What a storing node answers to the same raw requests: type-2 announcements (address
/// rewrite, A.12) and the keep-alive exchange of permanent puts (probe `get` with field
/// projection, `refresh`, A.6/A.14). Returned as comparable strings.
async fn storing_node_transcript(to: SocketAddr) -> Vec<String> {
    let mut p = Raw::new(to).await;
    let mut out = Vec::new();
    let svc = InfoHash::get("ip service");
    let f = p
        .ask(QueryKind::Find, |a| a.target = Some(svc), 0)
        .await
        .expect("find reply");
    let Body::Reply(fa) = f.body else {
        panic!("find reply")
    };
    let token = fa.token.expect("token");
    let sockaddr = |family: u16, port: u16, addr: &[u8]| {
        let mut sa = family.to_le_bytes().to_vec();
        sa.extend(port.to_be_bytes());
        sa.extend(addr);
        let mut data = vec![0xc4, sa.len() as u8];
        data.extend(sa);
        data
    };
    let mut six = vec![9u8; 4];
    six.extend([0u8; 15]);
    six.extend([1, 0, 0, 0, 0]);
    let announcements = [
        (77, sockaddr(2, 5555, &[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0])),
        (78, sockaddr(2, 0, &[1, 2, 3, 4])),
        (80, sockaddr(10, 6666, &six)),
        (81, sockaddr(2, 4444, &[1, 2, 3, 4])),
        (83, sockaddr(0, 5555, &[1, 2, 3, 4])),
    ];
    for (id, data) in announcements {
        let mut v = Value::new(data);
        v.id = id;
        v.vtype = 2;
        v.user_type = "svc".into();
        let ack = p
            .ask(
                QueryKind::Put,
                |a| {
                    a.h = Some(svc);
                    a.token = Some(token.clone());
                    a.values = Some(WireValues::Values(vec![v]));
                },
                0,
            )
            .await;
        out.push(format!(
            "put {id}: {:?}",
            ack.map(|m| matches!(m.body, Body::Reply(a) if a.vid == Some(id)))
        ));
    }
    let g = p
        .ask(QueryKind::Get, |a| a.h = Some(svc), 0)
        .await
        .expect("get reply");
    let Body::Reply(ga) = g.body else {
        panic!("get reply")
    };
    let mut stored: Vec<String> = match ga.values {
        Some(WireValues::Values(vs)) => vs
            .iter()
            .map(|v| {
                let hex: String = v.data.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "stored {} type {} utype {:?} data {hex}",
                    v.id, v.vtype, v.user_type
                )
            })
            .collect(),
        other => vec![format!("no values: {other:?}")],
    };
    stored.sort();
    out.extend(stored);

    // Keep-alive of a permanent put.
    let key = InfoHash::get("kept alive");
    let mut v = Value::new(b"k".to_vec());
    v.id = 1_234_567;
    let ack = p
        .ask(
            QueryKind::Put,
            |a| {
                a.h = Some(key);
                a.token = Some(token.clone());
                a.values = Some(WireValues::Values(vec![v]));
            },
            0,
        )
        .await;
    out.push(format!("put: {}", ack.is_some()));
    for id in [1_234_567u64, 999] {
        let probe = p
            .ask(
                QueryKind::Get,
                |a| {
                    a.h = Some(key);
                    a.query = Some(Query {
                        select: vec![Field::Id, Field::SeqNum],
                        filters: vec![(Field::Id, FieldValue::Int(id))],
                    });
                },
                0,
            )
            .await
            .expect("probe reply");
        let Body::Reply(pa) = probe.body else {
            panic!("probe reply")
        };
        out.push(format!(
            "probe {id}: fields {:?} values {} token {}",
            pa.fields.as_ref().and_then(parse_fields),
            pa.values.is_some(),
            pa.token.is_some_and(|t| t.len() == 32)
        ));
    }
    let refreshes = [
        ("known", key, 1_234_567u64, token.clone()),
        ("unknown vid", key, 5, token.clone()),
        ("unknown key", InfoHash::get("nothing"), 1, token.clone()),
        ("bad token", key, 1_234_567, vec![b'x'; 32]),
    ];
    for (label, h, vid, t) in refreshes {
        let r = p
            .ask(
                QueryKind::Refresh,
                |a| {
                    a.h = Some(h);
                    a.vid = Some(vid);
                    a.token = Some(t);
                },
                0,
            )
            .await
            .expect("refresh answer");
        out.push(match r.body {
            Body::Reply(a) => format!("refresh {label}: vid {:?}", a.vid),
            Body::Error { code, message, .. } => format!("refresh {label}: {code} {message}"),
            other => format!("refresh {label}: {other:?}"),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_type2_rewrite_probe_and_refresh_answers_match_dhtnode() {
    let a = RefNode::spawn(&[]);
    let r = start_ours(0, vec![], 0);
    let theirs = storing_node_transcript(a.addr()).await;
    let ours = storing_node_transcript(r.addr).await;
    // Sanity: the transcript shows the rewrite and a successful refresh at all.
    assert!(
        theirs
            .iter()
            .any(|l| l.contains("stored 77 type 2 utype \"\" data c410020015b37f000001")),
        "{theirs:#?}"
    );
    assert!(theirs.contains(&"refresh known: vid Some(1234567)".to_owned()));
    assert_eq!(
        ours, theirs,
        "our storing node answers exactly as dhtnode 2.4.12"
    );
}
