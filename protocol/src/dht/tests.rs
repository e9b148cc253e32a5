//! Engine tests: raw-peer server behaviour and in-memory networks.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::InfoHash;
use super::engine::{Config, Dht, Event, OpId};
use super::msg::{Args, Body, Message, QueryKind, WireValues};
use super::sim::{Sim, SplitMix};
use super::value::{Field, FieldValue, Query, Value, parse_fields};

fn peer() -> SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

struct Raw {
    dht: Dht,
    now: Instant,
    id: InfoHash,
    tid: u32,
}

impl Raw {
    fn new(network: u32) -> Self {
        let now = Instant::now();
        let cfg = Config {
            network,
            ..Config::default()
        };
        Self {
            dht: Dht::new(cfg, now, 1_800_000_000, Box::new(SplitMix::new(7))),
            now,
            id: InfoHash::get("peer"),
            tid: 10,
        }
    }

    fn send(&mut self, kind: QueryKind, f: impl FnOnce(&mut Args), network: u32) -> Vec<Message> {
        self.tid += 1;
        let mut a = Args::new(self.id);
        f(&mut a);
        let m = Message {
            tid: self.tid,
            network,
            is_client: false,
            body: Body::Query(kind, a),
        };
        let bytes = m.encode(false);
        self.dht.handle_datagram(self.now, peer(), &bytes);
        let mut out = Vec::new();
        while let Some(t) = self.dht.poll_transmit() {
            let m = Message::decode(&t.contents).unwrap();
            if t.destination == peer() && !matches!(m.body, Body::Query(QueryKind::Ping, _)) {
                out.push(m);
            }
        }
        out
    }

    fn token(&mut self) -> Vec<u8> {
        let r = self.send(QueryKind::Find, |a| a.target = Some(InfoHash::get("t")), 0);
        let Body::Reply(a) = &r[0].body else {
            panic!("find reply")
        };
        a.token.clone().unwrap()
    }
}

fn reply(m: &[Message]) -> &Args {
    match &m[0].body {
        Body::Reply(a) => a,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn err_code(m: &[Message]) -> (u16, InfoHash) {
    match &m[0].body {
        Body::Error { code, id, .. } => (*code, *id),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn server_answers_ping_find_get_put_with_tokens_and_errors() {
    let mut r = Raw::new(0);
    let me = r.dht.node_id();
    let p = r.send(QueryKind::Ping, |_| {}, 0);
    assert_eq!(reply(&p).id, me);
    assert_eq!(reply(&p).sa, Some(peer().ip()));
    assert_eq!(p[0].tid, r.tid, "reply echoes tid");

    let tok = r.token();
    assert_eq!(tok.len(), 32);
    let key = InfoHash::get("testkey");

    // Bad token → 401 carrying r.id.
    let e = r.send(
        QueryKind::Put,
        |a| {
            a.h = Some(key);
            a.token = Some(vec![b'x'; 32]);
            a.values = Some(WireValues::Values(vec![Value {
                id: 5,
                ..Value::new(b"v".to_vec())
            }]));
        },
        0,
    );
    assert_eq!(err_code(&e), (401, me));
    // Value id 0 → 203.
    let e = r.send(
        QueryKind::Put,
        |a| {
            a.h = Some(key);
            a.token = Some(tok.clone());
            a.values = Some(WireValues::Values(vec![Value::new(b"v".to_vec())]));
        },
        0,
    );
    assert_eq!(err_code(&e).0, 203);
    // Get without h → 203.
    assert_eq!(err_code(&r.send(QueryKind::Get, |_| {}, 0)).0, 203);
    // Good put → vid.
    let mut v = Value::new(b"hello world".to_vec());
    v.id = 2523854693626249069;
    v.user_type = "text/plain".into();
    let ok = r.send(
        QueryKind::Put,
        |a| {
            a.h = Some(key);
            a.token = Some(tok.clone());
            a.values = Some(WireValues::Values(vec![v.clone()]));
        },
        0,
    );
    assert_eq!(reply(&ok).vid, Some(v.id));
    // Get full values, with nodes + token.
    let g = r.send(QueryKind::Get, |a| a.h = Some(key), 0);
    let ga = reply(&g);
    assert!(ga.token.is_some(), "never a get reply without token");
    assert_eq!(ga.values, Some(WireValues::Values(vec![v.clone()])));
    // Pagination: ids only.
    let g = r.send(
        QueryKind::Get,
        |a| {
            a.h = Some(key);
            a.query = Some(Query {
                select: vec![Field::Id],
                filters: vec![],
            });
        },
        0,
    );
    let rows = parse_fields(reply(&g).fields.as_ref().unwrap()).unwrap();
    assert_eq!(rows[0].id, Some(v.id));
    assert!(reply(&g).values.is_none());
    // Refresh on unknown key → 404; on known key with unknown vid → OK (2.4 quirk).
    let e = r.send(
        QueryKind::Refresh,
        |a| {
            a.h = Some(InfoHash::get("nothing"));
            a.vid = Some(1);
            a.token = Some(tok.clone());
        },
        0,
    );
    assert_eq!(err_code(&e).0, 404);
    let ok = r.send(
        QueryKind::Refresh,
        |a| {
            a.h = Some(key);
            a.vid = Some(99);
            a.token = Some(tok.clone());
        },
        0,
    );
    assert_eq!(reply(&ok).vid, Some(99));
    // Listen with a bad token → 401; good → reply then an update with the current value.
    let e = r.send(
        QueryKind::Listen,
        |a| {
            a.h = Some(key);
            a.token = Some(b"bad".to_vec());
            a.sid = Some(3);
        },
        0,
    );
    assert_eq!(err_code(&e).0, 401);
    let l = r.send(
        QueryKind::Listen,
        |a| {
            a.h = Some(key);
            a.token = Some(tok.clone());
            a.sid = Some(3);
            a.ve = Some(1);
        },
        0,
    );
    assert!(matches!(l[0].body, Body::Reply(_)));
    let Body::Query(QueryKind::Update, u) = &l[1].body else {
        panic!("update expected")
    };
    assert_eq!(u.sid, Some(3));
    assert_eq!(u.values, Some(WireValues::Values(vec![v])));
}

#[test]
fn other_networks_and_garbage_are_ignored_and_service_continues() {
    let mut r = Raw::new(0);
    assert!(
        r.send(QueryKind::Ping, |_| {}, 5).is_empty(),
        "network 5 is dropped"
    );
    let mut rng = SplitMix::new(99);
    for i in 0..10_000u32 {
        let len = (rng.next_u32() % 300) as usize;
        let mut b = vec![0u8; len];
        rng.fill_bytes(&mut b);
        if i % 3 == 0 && !b.is_empty() {
            b[0] = 0x80 | (b[0] & 0x0f); // fixmap: deeper into the decoder
        }
        r.dht.handle_datagram(r.now, peer(), &b);
        r.dht.handle_timeout(r.now);
    }
    while r.dht.poll_transmit().is_some() {}
    assert_eq!(
        reply(&r.send(QueryKind::Ping, |_| {}, 0)).id,
        r.dht.node_id()
    );
    let mut n5 = Raw::new(5);
    let p = n5.send(QueryKind::Ping, |_| {}, 5);
    assert_eq!(p[0].network, 5, "a net-5 node answers net 5 with n=5");
}

fn bootstrap_all(sim: &mut Sim) {
    let first = sim.addrs[0];
    for i in 1..sim.nodes.len() {
        let now = sim.now;
        sim.nodes[i].bootstrap(now, &[first]);
    }
}

fn values_of(events: &[Event], op: OpId) -> Vec<Arc<Value>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Values { op: o, values } if *o == op => Some(values.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn done_of(events: &[Event], op: OpId) -> Option<bool> {
    events.iter().find_map(|e| match e {
        Event::Done { op: o, ok } if *o == op => Some(*ok),
        _ => None,
    })
}

#[test]
fn small_network_put_get_fragmented_values() {
    let mut sim = Sim::new(10, 1, &Config::default(), Instant::now());
    bootstrap_all(&mut sim);
    sim.run_for(Duration::from_secs(30));
    let key = InfoHash::get("big");
    let mut v = Value::new(vec![0xab; 3000]);
    v.user_type = "application/octet-stream".into();
    let now = sim.now;
    let (op, vid) = sim.nodes[3].put(now, key, v, false);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        done_of(&sim.take_events(3), op),
        Some(true),
        "put acknowledged"
    );
    let now = sim.now;
    let g = sim.nodes[7].get(now, key, Query::all());
    sim.run_for(Duration::from_secs(10));
    let ev = sim.take_events(7);
    let vals = values_of(&ev, g);
    assert_eq!(done_of(&ev, g), Some(true));
    assert_eq!(vals.len(), 1);
    assert_eq!(vals[0].id, vid);
    assert_eq!(vals[0].data.len(), 3000);
}

#[test]
fn network_of_200_converges_and_values_survive_churn() {
    let n = 200;
    let mut sim = Sim::new(n, 42, &Config::default(), Instant::now());
    bootstrap_all(&mut sim);
    sim.run_for(Duration::from_secs(120));
    let good: usize = sim.nodes.iter().map(|d| d.stats(sim.now).ipv4.good).sum();
    assert!(
        good / n >= 8,
        "each node knows at least a bucket of good nodes (avg {})",
        good / n
    );

    let mut rng = SplitMix::new(3);
    let mut puts = Vec::new();
    for k in 0..20 {
        let key = InfoHash::get(format!("key-{k}"));
        let from = (rng.next_u32() as usize) % n;
        let now = sim.now;
        let (op, vid) =
            sim.nodes[from].put(now, key, Value::new(format!("v{k}").into_bytes()), false);
        puts.push((key, from, op, vid));
    }
    sim.run_for(Duration::from_secs(20));
    let all: Vec<Vec<Event>> = (0..n).map(|i| sim.take_events(i)).collect();
    for (_, from, op, _) in &puts {
        assert_eq!(done_of(&all[*from], *op), Some(true), "put acknowledged");
    }
    // Lookups from other nodes converge on the stored values.
    let check = |sim: &mut Sim, rng: &mut SplitMix, label: &str| {
        let mut gets = Vec::new();
        for (key, _, _, vid) in &puts {
            let mut who = (rng.next_u32() as usize) % n;
            while sim.down.contains(&who) {
                who = (who + 1) % n;
            }
            let now = sim.now;
            let op = sim.nodes[who].get(now, *key, Query::all());
            gets.push((who, op, *vid));
        }
        sim.run_for(Duration::from_secs(20));
        let mut found = 0;
        for (who, op, vid) in gets {
            let ev = std::mem::take(&mut sim.events[who]);
            if values_of(&ev, op).iter().any(|v| v.id == vid) {
                found += 1;
            }
            // Put the other events back for later gets on the same node.
            sim.events[who].extend(ev);
        }
        assert_eq!(found, puts.len(), "{label}: every value found");
    };
    check(&mut sim, &mut rng, "before churn");
    // Churn: 25% of the nodes leave (never the first, the bootstrap node).
    for i in 1..n {
        if rng.next_u32().is_multiple_of(4) {
            sim.down.insert(i);
        }
    }
    sim.run_for(Duration::from_secs(60));
    check(&mut sim, &mut rng, "after churn");
}

#[test]
fn listen_is_refreshed_past_ten_minutes_and_gets_new_values_and_expiry() {
    let mut sim = Sim::new(12, 5, &Config::default(), Instant::now());
    bootstrap_all(&mut sim);
    sim.run_for(Duration::from_secs(30));
    let key = InfoHash::get("listened");
    let now = sim.now;
    let l = sim.nodes[2].listen(now, key, Query::all());
    // 15 minutes of virtual time: without refreshes the storing nodes drop the listener at 10.
    sim.run_for(Duration::from_secs(15 * 60));
    sim.take_events(2);
    let now = sim.now;
    let (_, vid) = sim.nodes[9].put(now, key, Value::new(b"late".to_vec()), false);
    sim.run_for(Duration::from_secs(1));
    let ev = sim.take_events(2);
    assert!(
        values_of(&ev, l).iter().any(|v| v.id == vid),
        "update delivered within 1 s"
    );
    // Expiry (10 min for type 0) reaches the listener.
    sim.run_for(Duration::from_secs(11 * 60));
    let ev = sim.take_events(2);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Expired { op, values } if *op == l && values.iter().any(|v| v.id == vid))),
        "expiry delivered"
    );
}

#[test]
fn permanent_puts_outlive_the_type_expiration_and_plain_puts_do_not() {
    let mut sim = Sim::new(20, 11, &Config::default(), Instant::now());
    bootstrap_all(&mut sim);
    sim.run_for(Duration::from_secs(30));
    let kp = InfoHash::get("permanent");
    let kt = InfoHash::get("transient");
    let now = sim.now;
    let (_, vp) = sim.nodes[4].put(now, kp, Value::new(b"p".to_vec()), true);
    let (_, vt) = sim.nodes[4].put(now, kt, Value::new(b"t".to_vec()), false);
    // 25 minutes: type 0 values live 10.
    sim.run_for(Duration::from_secs(25 * 60));
    sim.take_events(11);
    let now = sim.now;
    let gp = sim.nodes[11].get(now, kp, Query::all());
    let gt = sim.nodes[11].get(now, kt, Query::all());
    sim.run_for(Duration::from_secs(10));
    let ev = sim.take_events(11);
    assert!(
        values_of(&ev, gp).iter().any(|v| v.id == vp),
        "permanent value kept alive"
    );
    assert!(
        !values_of(&ev, gt).iter().any(|v| v.id == vt),
        "plain value expired"
    );
}

#[test]
fn fragmented_put_is_reassembled_and_oversized_put_gets_no_reply() {
    let mut r = Raw::new(0);
    let tok = r.token();
    let key = InfoHash::get("frag");
    let send_frag = |r: &mut Raw, v: Value, declared: Option<u64>| -> Vec<Message> {
        r.tid += 1;
        let mut a = Args::new(r.id);
        a.h = Some(key);
        a.token = Some(tok.clone());
        a.values = Some(match declared {
            Some(d) => WireValues::Sizes(vec![d]),
            None => WireValues::Values(vec![v.clone()]),
        });
        let m = Message {
            tid: r.tid,
            network: 0,
            is_client: false,
            body: Body::Query(QueryKind::Put, a),
        };
        let mut out = vec![m.encode(true)];
        out.extend(super::msg::fragments(r.tid, 0, std::slice::from_ref(&v)));
        let mut replies = Vec::new();
        for d in out {
            r.dht.handle_datagram(r.now, peer(), &d);
            while let Some(t) = r.dht.poll_transmit() {
                let m = Message::decode(&t.contents).unwrap();
                if !matches!(m.body, Body::Query(QueryKind::Ping, _)) {
                    replies.push(m);
                }
            }
        }
        replies
    };
    let mut v = Value::new(vec![5u8; 3000]);
    v.id = 3;
    let rep = send_frag(&mut r, v, None);
    assert_eq!(
        reply(&rep).vid,
        Some(3),
        "acknowledged after the last fragment"
    );
    assert_eq!(r.dht.storage().get(&key, &Query::all())[0].data.len(), 3000);
    let mut huge = Value::new(vec![6u8; 70_000]);
    huge.id = 4;
    let declared = huge.pack().len() as u64;
    assert!(
        send_frag(&mut r, huge, Some(declared)).is_empty(),
        "a 70 000-byte value gets no ack"
    );
    assert_eq!(r.dht.storage().value_count(), 1);
}

#[test]
fn per_ip_rate_limit_and_martian_sources() {
    let mut r = Raw::new(0);
    let mut answered = 0;
    for _ in 0..1100 {
        answered += r.send(QueryKind::Ping, |_| {}, 0).len();
    }
    assert_eq!(answered, 1024, "1024 requests per second per IP");
    r.now += Duration::from_millis(1001);
    assert_eq!(r.send(QueryKind::Ping, |_| {}, 0).len(), 1, "next window");
    // Martian sources get nothing.
    let ping = Message {
        tid: 1,
        network: 0,
        is_client: false,
        body: Body::Query(QueryKind::Ping, Args::new(r.id)),
    };
    for src in [
        "0.1.2.3:5",
        "224.0.0.1:5",
        "127.0.0.1:0",
        "[ff02::1]:5",
        "[::ffff:0.0.0.0]:5",
    ] {
        let from: SocketAddr = src.parse().unwrap();
        r.dht.handle_datagram(r.now, from, &ping.encode(false));
        assert!(r.dht.poll_transmit().is_none(), "{src} is martian");
    }
}

#[test]
fn a_token_less_find_reply_gets_its_sender_ignored() {
    let mut r = Raw::new(0);
    // Make the engine look up something through our raw peer.
    let now = r.now;
    r.dht.insert_node(now, peer());
    let t = r.dht.poll_transmit().unwrap();
    let ping = Message::decode(&t.contents).unwrap();
    let pong = Message {
        tid: ping.tid,
        network: 0,
        is_client: false,
        body: Body::Reply(Args {
            sa: Some(peer().ip()),
            ..Args::new(r.id)
        }),
    };
    r.dht.handle_datagram(now, peer(), &pong.encode(false));
    let op = r.dht.get(now, InfoHash::get("x"), Query::all());
    let mut replied = false;
    while let Some(t) = r.dht.poll_transmit() {
        let m = Message::decode(&t.contents).unwrap();
        if let Body::Query(QueryKind::Get, _) = m.body {
            let rep = Message {
                tid: m.tid,
                network: 0,
                is_client: false,
                body: Body::Reply(Args::new(r.id)),
            };
            r.dht.handle_datagram(now, peer(), &rep.encode(false));
            replied = true;
        }
    }
    assert!(replied);
    let _ = op;
    assert!(
        r.send(QueryKind::Ping, |_| {}, 0).is_empty(),
        "sender ignored after a token-less reply"
    );
}

#[test]
fn bootstrap_pings_back_off_and_requests_are_sent_three_times() {
    let t0 = Instant::now();
    let mut d = Dht::new(
        Config::default(),
        t0,
        1_800_000_000,
        Box::new(SplitMix::new(1)),
    );
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    d.bootstrap(t0, &[dead]);
    let mut sends: Vec<(u64, u32)> = Vec::new(); // (ms since start, tid)
    let mut now = t0;
    while now < t0 + Duration::from_secs(100) {
        if d.poll_timeout().is_some_and(|t| t <= now) {
            d.handle_timeout(now);
        }
        while let Some(t) = d.poll_transmit() {
            assert_eq!(t.destination, dead);
            let m = Message::decode(&t.contents).unwrap();
            sends.push((now.duration_since(t0).as_millis() as u64, m.tid));
        }
        now += Duration::from_millis(50);
    }
    let mut tids: Vec<u32> = sends.iter().map(|s| s.1).collect();
    tids.dedup();
    // Bootstrap rounds at 0, 10, 30, 70 s (period doubling from 10 s).
    assert_eq!(tids.len(), 4, "{sends:?}");
    let firsts: Vec<u64> = tids
        .iter()
        .map(|t| sends.iter().find(|s| s.1 == *t).unwrap().0 / 1000)
        .collect();
    assert_eq!(firsts, vec![0, 10, 30, 70]);
    // Each ping goes out three times: at 0, ~1–1.25 s and ~3–3.25 s.
    let first: Vec<u64> = sends
        .iter()
        .filter(|s| s.1 == tids[0])
        .map(|s| s.0)
        .collect();
    assert_eq!(first.len(), 3);
    assert!(
        (1000..=1300).contains(&first[1]) && (3000..=3300).contains(&first[2]),
        "{first:?}"
    );
}

/// Queries of `kind` for `key` in the trace, sent by `from`, as (to, args).
fn traced(sim: &Sim, from: usize, kind: QueryKind, key: InfoHash) -> Vec<(usize, Args)> {
    sim.trace
        .iter()
        .filter_map(|(src, to, m)| match &m.body {
            Body::Query(k, a) if *src == from && *k == kind && a.h == Some(key) => {
                Some((*to, a.clone()))
            }
            _ => None,
        })
        .collect()
}

fn holds(sim: &Sim, i: usize, key: InfoHash, vid: u64) -> bool {
    sim.nodes[i]
        .storage()
        .get(&key, &Query::all())
        .iter()
        .any(|v| v.id == vid)
}

#[test]
fn permanent_put_is_kept_alive_by_probe_and_refresh_and_a_node_that_lost_it_gets_it_again() {
    let mut sim = Sim::new(14, 21, &Config::default(), Instant::now());
    bootstrap_all(&mut sim);
    sim.run_for(Duration::from_secs(30));
    let key = InfoHash::get("kept alive");
    let putter = 5;
    let now = sim.now;
    let (op, vid) = sim.nodes[putter].put(now, key, Value::new(b"perm".to_vec()), true);
    sim.tracing = true;
    sim.run_for(Duration::from_secs(10));
    assert_eq!(done_of(&sim.take_events(putter), op), Some(true));
    let puts = traced(&sim, putter, QueryKind::Put, key);
    assert_eq!(puts.len(), 8, "the value went to the 8 closest nodes");
    let storing: Vec<usize> = puts.iter().map(|(to, _)| *to).collect();
    sim.trace.clear();

    // Three expiry periods of type 0 (10 min each): the storing nodes keep the value.
    for period in 1..=3 {
        sim.run_for(Duration::from_secs(10 * 60));
        for &j in &storing {
            assert!(
                holds(&sim, j, key, vid),
                "period {period}: node {j} still holds the value"
            );
        }
    }
    // Each storing node got a probe (get of id + seq, restricted to our value's id) then a
    // `refresh` with the value id and a token, never the whole value again.
    let probes = traced(&sim, putter, QueryKind::Get, key);
    let refreshes = traced(&sim, putter, QueryKind::Refresh, key);
    assert!(
        traced(&sim, putter, QueryKind::Put, key).is_empty(),
        "no full put while the nodes hold the value"
    );
    assert!(probes.len() >= 3 * 8, "{} probes", probes.len());
    for (_, a) in &probes {
        assert_eq!(
            a.query,
            Some(Query {
                select: vec![Field::Id, Field::SeqNum],
                filters: vec![(Field::Id, FieldValue::Int(vid))],
            })
        );
    }
    assert!(refreshes.len() >= 3 * 8, "{} refreshes", refreshes.len());
    for (to, a) in &refreshes {
        assert!(storing.contains(to));
        assert_eq!(a.vid, Some(vid));
        assert_eq!(a.token.as_ref().map(Vec::len), Some(32));
    }
    // Still there for a reader, 30 minutes after the put.
    let now = sim.now;
    let g = sim.nodes[12].get(now, key, Query::all());
    sim.run_for(Duration::from_secs(10));
    assert!(
        values_of(&sim.take_events(12), g)
            .iter()
            .any(|v| v.id == vid)
    );

    // A storing node restarts and loses the value: the next probe finds it missing and it
    // gets the whole value again; the others still only get `refresh`.
    let lost = storing[0];
    sim.restart_node(lost, &Config::default());
    assert!(!holds(&sim, lost, key, vid));
    sim.trace.clear();
    sim.run_for(Duration::from_secs(10 * 60));
    let puts = traced(&sim, putter, QueryKind::Put, key);
    assert!(
        puts.iter().any(|(to, _)| *to == lost),
        "the node that lost the value got a full put"
    );
    assert!(
        puts.iter().all(|(to, _)| !storing[1..].contains(to)),
        "nodes holding the value got no full put"
    );
    assert!(holds(&sim, lost, key, vid), "and stores it again");
    let refreshed: HashSet<usize> = traced(&sim, putter, QueryKind::Refresh, key)
        .iter()
        .map(|(to, _)| *to)
        .collect();
    assert!(storing[1..].iter().all(|j| refreshed.contains(j)));

    // Cancelled: no more refreshes, the value expires with its type.
    let now = sim.now;
    sim.nodes[putter].cancel(now, op);
    sim.run_for(Duration::from_secs(11 * 60));
    assert!(storing.iter().all(|&j| !holds(&sim, j, key, vid)));
}

#[test]
fn storage_refresh_extends_a_value_and_answers_like_dhtnode() {
    let mut r = Raw::new(0);
    let me = r.dht.node_id();
    let tok = r.token();
    let key = InfoHash::get("refreshed");
    let mut v = Value::new(b"r".to_vec());
    v.id = 42;
    let put = r.send(
        QueryKind::Put,
        |a| {
            a.h = Some(key);
            a.token = Some(tok.clone());
            a.values = Some(WireValues::Values(vec![v.clone()]));
        },
        0,
    );
    assert_eq!(reply(&put).vid, Some(42));
    let refresh = |r: &mut Raw, key: InfoHash, vid: u64, token: Vec<u8>| {
        r.send(
            QueryKind::Refresh,
            |a| {
                a.h = Some(key);
                a.vid = Some(vid);
                a.token = Some(token);
            },
            0,
        )
    };
    // 9 minutes later: refreshed, so it lives 10 more minutes from now.
    r.now += Duration::from_secs(9 * 60);
    r.dht.handle_timeout(r.now);
    let ok = refresh(&mut r, key, 42, tok.clone());
    assert_eq!(reply(&ok).vid, Some(42));
    assert_eq!(reply(&ok).sa, Some(peer().ip()));
    // dhtnode quirks (observed): unknown vid on a known key is answered OK, unknown key 404,
    // bad token 401 "Put with wrong token".
    assert_eq!(reply(&refresh(&mut r, key, 7, tok.clone())).vid, Some(7));
    let e = refresh(&mut r, InfoHash::get("nothing here"), 42, tok.clone());
    assert_eq!(err_code(&e), (404, me));
    let e = refresh(&mut r, key, 42, vec![b'x'; 32]);
    assert_eq!(err_code(&e), (401, me));
    assert!(matches!(&e[0].body, Body::Error { message, .. } if message == "Put with wrong token"));
    // At 15 min (past the original 10) it is still stored; at 20 min it is gone.
    r.now += Duration::from_secs(6 * 60);
    r.dht.handle_timeout(r.now);
    assert_eq!(r.dht.storage().get(&key, &Query::all()).len(), 1);
    r.now += Duration::from_secs(5 * 60);
    r.dht.handle_timeout(r.now);
    assert!(r.dht.storage().get(&key, &Query::all()).is_empty());
}

#[test]
fn ip_service_announcements_store_the_senders_address() {
    let now = Instant::now();
    let mut d = Dht::new(
        Config::default(),
        now,
        1_800_000_000,
        Box::new(SplitMix::new(3)),
    );
    let key = InfoHash::get("service");
    let peer_id = InfoHash::get("announcer");
    let mut tid = 1;
    let mut ask = |d: &mut Dht, from: SocketAddr, kind: QueryKind, f: &dyn Fn(&mut Args)| {
        tid += 2;
        let mut a = Args::new(peer_id);
        f(&mut a);
        let m = Message {
            tid,
            network: 0,
            is_client: false,
            body: Body::Query(kind, a),
        };
        d.handle_datagram(now, from, &m.encode(false));
        let mut out = None;
        while let Some(t) = d.poll_transmit() {
            let m = Message::decode(&t.contents).unwrap();
            if m.tid == tid {
                out = Some(m);
            }
        }
        out.unwrap()
    };
    let sockaddr = |family: u16, port: u16, addr: &[u8]| {
        let mut sa = family.to_le_bytes().to_vec();
        sa.extend(port.to_be_bytes());
        sa.extend(addr);
        let mut data = vec![0xc4, sa.len() as u8];
        data.extend(sa);
        data
    };
    let ann = |id: u64, data: Vec<u8>| {
        let mut v = Value::new(data);
        v.id = id;
        v.vtype = 2;
        v.user_type = "x".into();
        v
    };
    let mut put = |d: &mut Dht, from: SocketAddr, v: Value| {
        let Body::Reply(f) = ask(d, from, QueryKind::Find, &|a| a.target = Some(key)).body else {
            panic!("find reply")
        };
        let token = f.token.unwrap();
        let r = ask(d, from, QueryKind::Put, &|a| {
            a.h = Some(key);
            a.token = Some(token.clone());
            a.values = Some(WireValues::Values(vec![v.clone()]));
        });
        assert!(
            matches!(r.body, Body::Reply(ref a) if a.vid == Some(v.id)),
            "acked"
        );
    };
    let stored = |d: &Dht, id: u64| {
        d.storage()
            .get(&key, &Query::all())
            .into_iter()
            .find(|v| v.id == id)
    };
    let v4: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let v6: SocketAddr = "[::1]:5000".parse().unwrap();
    // IPv4 sender announcing 1.2.3.4:5555 → its own address with that port; utype dropped.
    put(
        &mut d,
        v4,
        ann(77, sockaddr(2, 5555, &[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0])),
    );
    let s = stored(&d, 77).expect("stored");
    assert_eq!(hex::encode(&s.data), "c410020015b37f0000010000000000000000");
    assert_eq!((s.vtype, s.user_type.as_str()), (2, ""));
    // An IPv6 sockaddr from an IPv4 sender becomes an IPv4 one (port kept).
    let mut six = vec![9, 9, 9, 9];
    six.extend([0u8; 15]);
    six.extend([1, 0, 0, 0, 0]);
    put(&mut d, v4, ann(80, sockaddr(10, 6666, &six)));
    assert_eq!(
        hex::encode(&stored(&d, 80).expect("stored").data),
        "c41002001a0a7f0000010000000000000000"
    );
    // An IPv6 sender: a 28-byte sockaddr_in6, flow info and scope 0.
    put(&mut d, v6, ann(91, sockaddr(10, 6666, &six)));
    assert_eq!(
        hex::encode(&stored(&d, 91).expect("stored").data),
        "c41c0a001a0a000000000000000000000000000000000000000100000000"
    );
    // Port 0, unknown family, data not a msgpack bin, too short: refused (still acked).
    put(&mut d, v4, ann(78, sockaddr(2, 0, &[1, 2, 3, 4])));
    put(&mut d, v4, ann(83, sockaddr(0, 5555, &[1, 2, 3, 4])));
    let mut raw = 2u16.to_le_bytes().to_vec();
    raw.extend(5555u16.to_be_bytes());
    put(&mut d, v4, ann(79, raw));
    put(&mut d, v4, ann(84, vec![0xc4, 3, 2, 0, 0x15]));
    for id in [78, 83, 79, 84] {
        assert!(stored(&d, id).is_none(), "{id} refused");
    }
    // Never editable: the same id from another address does not replace it.
    put(
        &mut d,
        "127.0.0.2:5000".parse().unwrap(),
        ann(77, sockaddr(2, 5555, &[0; 12])),
    );
    assert_eq!(
        hex::encode(&stored(&d, 77).expect("stored").data),
        "c410020015b37f0000010000000000000000"
    );
}

#[test]
fn ops_wait_while_no_node_is_reachable_and_complete_when_nodes_return() {
    let cfg = Config {
        op_timeout: Duration::from_secs(300),
        ..Config::default()
    };
    let mut sim = Sim::new(8, 33, &cfg, Instant::now());
    bootstrap_all(&mut sim);
    sim.run_for(Duration::from_secs(30));
    let me = 3;
    // Every other node goes away (as when our single peer rate-limits us).
    for i in 0..sim.nodes.len() {
        if i != me {
            sim.down.insert(i);
        }
    }
    let (kg, kp, kl) = (
        InfoHash::get("get me"),
        InfoHash::get("put me"),
        InfoHash::get("listen to me"),
    );
    let now = sim.now;
    let g = sim.nodes[me].get(now, kg, Query::all());
    let (p, vid) = sim.nodes[me].put(now, kp, Value::new(b"waited".to_vec()), false);
    let l = sim.nodes[me].listen(now, kl, Query::all());
    sim.run_for(Duration::from_secs(40));
    assert_eq!(
        sim.nodes[me].stats(sim.now).ipv4.good,
        0,
        "every node expired"
    );
    let ev = sim.take_events(me);
    assert_eq!(done_of(&ev, g), None, "the get waits for nodes");
    assert_eq!(done_of(&ev, p), None, "the put waits for nodes");
    assert_eq!(sim.nodes[me].op_count(), 3);

    // The nodes come back: the ops resume and complete.
    sim.down.clear();
    sim.run_for(Duration::from_secs(60));
    assert!(sim.nodes[me].stats(sim.now).ipv4.good > 0);
    let ev = sim.take_events(me);
    assert_eq!(done_of(&ev, g), Some(true), "the get completed");
    assert_eq!(done_of(&ev, p), Some(true), "the put was stored");
    let now = sim.now;
    let check = sim.nodes[6].get(now, kp, Query::all());
    let (_, lv) = sim.nodes[6].put(now, kl, Value::new(b"heard".to_vec()), false);
    sim.run_for(Duration::from_secs(10));
    assert!(
        values_of(&sim.take_events(6), check)
            .iter()
            .any(|v| v.id == vid)
    );
    assert!(
        values_of(&sim.take_events(me), l)
            .iter()
            .any(|v| v.id == lv),
        "the listen is in place again"
    );
}

#[test]
fn waiting_ops_fail_at_their_timeout_and_an_isolated_node_fails_at_once() {
    let cfg = Config {
        op_timeout: Duration::from_secs(45),
        ..Config::default()
    };
    let mut sim = Sim::new(4, 9, &cfg, Instant::now());
    bootstrap_all(&mut sim);
    sim.run_for(Duration::from_secs(30));
    for i in [0, 2, 3] {
        sim.down.insert(i);
    }
    let now = sim.now;
    let g = sim.nodes[1].get(now, InfoHash::get("g"), Query::all());
    let (p, _) = sim.nodes[1].put(now, InfoHash::get("p"), Value::new(b"x".to_vec()), false);
    sim.run_for(Duration::from_secs(44));
    let ev = sim.take_events(1);
    assert_eq!((done_of(&ev, g), done_of(&ev, p)), (None, None));
    sim.run_for(Duration::from_secs(2));
    let ev = sim.take_events(1);
    assert_eq!(
        (done_of(&ev, g), done_of(&ev, p)),
        (Some(false), Some(false))
    );
    assert_eq!(sim.nodes[1].op_count(), 0);

    // A node that knows no node and has no bootstrap node has nothing to wait for.
    let now = Instant::now();
    let mut alone = Dht::new(cfg, now, 1_800_000_000, Box::new(SplitMix::new(5)));
    let g = alone.get(now, InfoHash::get("g"), Query::all());
    let (p, _) = alone.put(now, InfoHash::get("p"), Value::new(b"x".to_vec()), false);
    let ev: Vec<Event> = std::iter::from_fn(|| alone.poll_event()).collect();
    assert_eq!(
        (done_of(&ev, g), done_of(&ev, p)),
        (Some(false), Some(false))
    );
}
