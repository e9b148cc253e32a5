//! A deterministic in-memory network of [`Dht`] engines (no sockets, virtual time), for tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::RngCore;

use super::engine::{Config, Dht, Event};
use super::msg::Message;

/// A simulated network.
pub struct Sim {
    /// The engines.
    pub nodes: Vec<Dht>,
    /// Their addresses.
    pub addrs: Vec<SocketAddr>,
    index: HashMap<SocketAddr, usize>,
    /// Virtual now.
    pub now: Instant,
    queue: BTreeMap<(Instant, u64), (SocketAddr, usize, Vec<u8>)>,
    seq: u64,
    /// Nodes that are down (drop everything to and from them).
    pub down: HashSet<usize>,
    /// One-way latency.
    pub latency: Duration,
    /// Events per node, in order.
    pub events: Vec<Vec<Event>>,
    rng: SplitMix,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Last delivery time scheduled per (from, to): datagrams on one path keep their order,
    /// as on loopback (fragments are accepted in order only, A.10).
    last_on_path: HashMap<(usize, usize), Instant>,
    /// Record every delivered datagram in [`Self::trace`] (off by default).
    pub tracing: bool,
    /// Delivered datagrams (from, to, decoded message) while [`Self::tracing`] is on.
    pub trace: Vec<(usize, usize, Message)>,
}

/// Address of simulated node `i`.
pub fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        4222,
    )
}

impl Sim {
    /// `n` IPv4-only nodes starting at virtual time `now` with seed `seed`; none bootstrapped yet.
    pub fn new(n: usize, seed: u64, cfg: &Config, now: Instant) -> Self {
        let mut rng = SplitMix::new(seed);
        let mut s = Self {
            nodes: Vec::new(),
            addrs: Vec::new(),
            index: HashMap::new(),
            now,
            queue: BTreeMap::new(),
            seq: 0,
            down: HashSet::new(),
            latency: Duration::from_millis(10),
            events: Vec::new(),
            rng: SplitMix::new(seed ^ 0x5eed),
            delivered: 0,
            last_on_path: HashMap::new(),
            tracing: false,
            trace: Vec::new(),
        };
        for _ in 0..n {
            s.add_node(cfg, rng.next_u64());
        }
        s
    }

    /// Adds a node; returns its index.
    pub fn add_node(&mut self, cfg: &Config, seed: u64) -> usize {
        let i = self.nodes.len();
        let mut c = cfg.clone();
        c.ipv6 = false;
        let rng = Box::new(SplitMix::new(seed));
        self.nodes.push(Dht::new(c, self.now, 1_800_000_000, rng));
        self.addrs.push(sim_addr(i));
        self.index.insert(sim_addr(i), i);
        self.events.push(Vec::new());
        i
    }

    fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(t) = self.nodes[i].poll_transmit() {
                if self.down.contains(&i) {
                    continue;
                }
                let Some(&to) = self.index.get(&t.destination) else {
                    continue;
                };
                let jitter = Duration::from_micros(self.rng.next_u64() % 2000);
                let last = self.last_on_path.entry((i, to)).or_insert(self.now);
                let at = (self.now + self.latency + jitter).max(*last);
                *last = at;
                self.seq += 1;
                self.queue
                    .insert((at, self.seq), (self.addrs[i], to, t.contents));
            }
            while let Some(e) = self.nodes[i].poll_event() {
                self.events[i].push(e);
            }
        }
    }

    /// Runs the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.pump();
            let next_msg = self.queue.keys().next().map(|k| k.0);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.down.contains(i))
                .filter_map(|(_, n)| n.poll_timeout())
                .min();
            let next = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(end),
            };
            if next > end {
                self.now = end;
                break;
            }
            self.now = self.now.max(next);
            // Deliver due messages.
            while let Some((&k, _)) = self.queue.iter().next() {
                if k.0 > self.now {
                    break;
                }
                let Some((from, to, bytes)) = self.queue.remove(&k) else {
                    break;
                };
                if self.down.contains(&to) {
                    continue;
                }
                self.delivered += 1;
                if self.tracing {
                    if let (Some(&src), Ok(m)) = (self.index.get(&from), Message::decode(&bytes)) {
                        self.trace.push((src, to, m));
                    }
                }
                self.nodes[to].handle_datagram(self.now, from, &bytes);
            }
            for i in 0..self.nodes.len() {
                if self.down.contains(&i) {
                    continue;
                }
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    self.nodes[i].handle_timeout(self.now);
                }
            }
        }
        self.pump();
    }

    /// Restarts node `i`: same id and address, empty storage and routing table (it knows
    /// nothing until someone contacts it).
    pub fn restart_node(&mut self, i: usize, cfg: &Config) {
        let mut c = cfg.clone();
        c.ipv6 = false;
        c.node_id = Some(self.nodes[i].node_id());
        let unix = self.nodes[i].unix(self.now);
        let rng = Box::new(SplitMix::new(self.rng.next_u64()));
        self.nodes[i] = Dht::new(c, self.now, unix, rng);
    }

    /// Takes node `i`'s events so far.
    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        self.pump();
        std::mem::take(&mut self.events[i])
    }
}

/// A small deterministic generator (SplitMix64) for simulations. Not for secrets.
#[derive(Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl RngCore for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
