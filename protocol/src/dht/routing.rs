//! Routing table: K=8 buckets over the id space, splitting the bucket that holds our own id.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::infohash::InfoHash;

/// Bucket size.
pub const K: usize = 8;
/// A node is good if it replied within this time...
pub const NODE_GOOD_TIME: Duration = Duration::from_secs(2 * 3600);
/// ...and was heard within this time.
pub const NODE_EXPIRE_TIME: Duration = Duration::from_secs(600);
/// Maximum bucket depth (client/bootstrap split limit is 6, ours is the full id).
const MAX_DEPTH: usize = 159;

/// A known node.
#[derive(Clone)]
pub struct Node {
    /// Node id.
    pub id: InfoHash,
    /// Address.
    pub addr: SocketAddr,
    /// Last time we heard anything from it.
    pub time: Instant,
    /// Last time it replied to one of our requests.
    pub reply_time: Option<Instant>,
    /// Set when a request to it timed out or it sent too many auth errors.
    pub expired: bool,
    /// Consecutive 401 errors.
    pub auth_errors: u32,
    /// A ping is in flight.
    pub pinging: bool,
}

impl Node {
    /// Good: replied within 2 h and heard within 10 min.
    pub fn is_good(&self, now: Instant) -> bool {
        !self.expired
            && self
                .reply_time
                .is_some_and(|t| now.saturating_duration_since(t) < NODE_GOOD_TIME)
            && now.saturating_duration_since(self.time) < NODE_EXPIRE_TIME
    }
}

/// Node state for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Good nodes.
    pub good: usize,
    /// Neither good nor expired.
    pub dubious: usize,
    /// Expired.
    pub expired: usize,
}

struct Bucket {
    prefix: InfoHash,
    depth: usize,
    nodes: Vec<Node>,
    /// Last time a node in it was added or replied.
    time: Instant,
    /// Last time we looked for more nodes for it.
    refreshed: Option<Instant>,
}

impl Bucket {
    fn contains(&self, id: &InfoHash) -> bool {
        self.prefix.common_bits(id) >= self.depth
    }
}

/// One family's routing table.
pub struct RoutingTable {
    own: InfoHash,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// Empty table for node `own`.
    pub fn new(own: InfoHash, now: Instant) -> Self {
        Self {
            own,
            buckets: vec![Bucket {
                prefix: InfoHash::ZERO,
                depth: 0,
                nodes: vec![],
                time: now,
                refreshed: None,
            }],
        }
    }

    fn bucket_index(&self, id: &InfoHash) -> usize {
        self.buckets
            .iter()
            .position(|b| b.contains(id))
            .unwrap_or(0)
    }

    /// Number of buckets (the network-size estimate is 8 × 2^depth).
    pub fn depth(&self) -> usize {
        self.buckets.iter().map(|b| b.depth).max().unwrap_or(0)
    }

    /// Finds a node.
    pub fn get_mut(&mut self, id: &InfoHash) -> Option<&mut Node> {
        let i = self.bucket_index(id);
        self.buckets[i].nodes.iter_mut().find(|n| n.id == *id)
    }

    /// Finds a node.
    pub fn get(&self, id: &InfoHash) -> Option<&Node> {
        let i = self.bucket_index(id);
        self.buckets[i].nodes.iter().find(|n| n.id == *id)
    }

    /// Records that `id` at `addr` was heard; `replied` if this was a reply to our request.
    /// Returns `true` if the node is (now) in the table.
    pub fn heard(&mut self, id: InfoHash, addr: SocketAddr, now: Instant, replied: bool) -> bool {
        self.heard_new(id, addr, now, replied).is_some()
    }

    /// Like [`Self::heard`]; `Some(true)` when the node was just added.
    pub fn heard_new(
        &mut self,
        id: InfoHash,
        addr: SocketAddr,
        now: Instant,
        replied: bool,
    ) -> Option<bool> {
        if id == self.own || id.is_zero() {
            return None;
        }
        loop {
            let i = self.bucket_index(&id);
            let own_in = self.buckets[i].contains(&self.own);
            let b = &mut self.buckets[i];
            if let Some(n) = b.nodes.iter_mut().find(|n| n.id == id) {
                n.time = now;
                n.addr = addr;
                if replied {
                    n.reply_time = Some(now);
                    n.expired = false;
                    n.auth_errors = 0;
                    b.time = now;
                }
                return Some(false);
            }
            let node = Node {
                id,
                addr,
                time: now,
                reply_time: replied.then_some(now),
                expired: false,
                auth_errors: 0,
                pinging: false,
            };
            if b.nodes.len() < K {
                b.nodes.push(node);
                b.time = now;
                return Some(true);
            }
            // Replace an expired node first.
            if let Some(pos) = b.nodes.iter().position(|n| n.expired) {
                b.nodes[pos] = node;
                b.time = now;
                return Some(true);
            }
            if own_in && b.depth < MAX_DEPTH {
                self.split(i);
                continue;
            }
            // Full bucket of live nodes: a replying node may replace a never-replied one.
            if replied {
                if let Some(pos) = b.nodes.iter().position(|n| n.reply_time.is_none()) {
                    b.nodes[pos] = node;
                    return Some(true);
                }
            }
            return None;
        }
    }

    fn split(&mut self, i: usize) {
        let b = self.buckets.remove(i);
        let d = b.depth;
        let mut lo = Bucket {
            prefix: b.prefix.with_bit(d, false),
            depth: d + 1,
            nodes: vec![],
            time: b.time,
            refreshed: None,
        };
        let mut hi = Bucket {
            prefix: b.prefix.with_bit(d, true),
            depth: d + 1,
            nodes: vec![],
            time: b.time,
            refreshed: None,
        };
        for n in b.nodes {
            if n.id.bit(d) {
                hi.nodes.push(n)
            } else {
                lo.nodes.push(n)
            }
        }
        self.buckets.insert(i, hi);
        self.buckets.insert(i, lo);
    }

    /// Marks a node expired (request timed out).
    pub fn expire(&mut self, id: &InfoHash) {
        if let Some(n) = self.get_mut(id) {
            n.expired = true;
            n.pinging = false;
        }
    }

    /// The `count` closest good nodes to `target`.
    pub fn closest_good(
        &self,
        target: &InfoHash,
        count: usize,
        now: Instant,
    ) -> Vec<(InfoHash, SocketAddr)> {
        self.closest_filtered(target, count, |n| n.is_good(now))
    }

    /// The `count` closest good nodes, completed with dubious ones when there are not enough.
    pub fn closest_for_reply(
        &self,
        target: &InfoHash,
        count: usize,
        now: Instant,
    ) -> Vec<(InfoHash, SocketAddr)> {
        let mut v = self.closest_good(target, count, now);
        if v.len() < count {
            for n in self.closest_alive(target, count * 2) {
                if v.len() >= count {
                    break;
                }
                if !v.iter().any(|x| x.0 == n.0) {
                    v.push(n);
                }
            }
            v.sort_by(|a, b| target.xor_cmp(&a.0, &b.0));
        }
        v
    }

    /// The `count` closest non-expired nodes to `target` (good first is not required).
    pub fn closest_alive(&self, target: &InfoHash, count: usize) -> Vec<(InfoHash, SocketAddr)> {
        self.closest_filtered(target, count, |n| !n.expired)
    }

    fn closest_filtered(
        &self,
        target: &InfoHash,
        count: usize,
        f: impl Fn(&Node) -> bool,
    ) -> Vec<(InfoHash, SocketAddr)> {
        let mut all: Vec<(InfoHash, SocketAddr)> = self
            .buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|n| f(n))
            .map(|n| (n.id, n.addr))
            .collect();
        all.sort_by(|a, b| target.xor_cmp(&a.0, &b.0));
        all.truncate(count);
        all
    }

    /// Counts by state.
    pub fn counts(&self, now: Instant) -> NodeCounts {
        let mut c = NodeCounts::default();
        for n in self.buckets.iter().flat_map(|b| b.nodes.iter()) {
            if n.expired {
                c.expired += 1;
            } else if n.is_good(now) {
                c.good += 1;
            } else {
                c.dubious += 1;
            }
        }
        c
    }

    /// Nodes that need a liveness ping (heard long ago, none in flight).
    pub fn dubious_to_ping(&mut self, now: Instant, max: usize) -> Vec<(InfoHash, SocketAddr)> {
        let mut out = Vec::new();
        for n in self.buckets.iter_mut().flat_map(|b| b.nodes.iter_mut()) {
            if out.len() >= max {
                break;
            }
            if !n.expired && !n.pinging && now.saturating_duration_since(n.time) >= NODE_EXPIRE_TIME
            {
                n.pinging = true;
                out.push((n.id, n.addr));
            }
        }
        out
    }

    /// Up to `max` expired nodes to ping again (most recently heard first); marks them
    /// pinging. A reply makes them good again.
    pub fn expired_to_ping(&mut self, max: usize) -> Vec<(InfoHash, SocketAddr)> {
        let mut cands: Vec<&mut Node> = self
            .buckets
            .iter_mut()
            .flat_map(|b| b.nodes.iter_mut())
            .filter(|n| n.expired && !n.pinging)
            .collect();
        cands.sort_by_key(|n| std::cmp::Reverse(n.time));
        cands
            .into_iter()
            .take(max)
            .map(|n| {
                n.pinging = true;
                (n.id, n.addr)
            })
            .collect()
    }

    /// Random ids inside buckets idle for `idle`; marks them refreshed.
    pub fn stale_buckets(
        &mut self,
        now: Instant,
        idle: Duration,
        rng: &mut dyn rand::RngCore,
    ) -> Vec<InfoHash> {
        let mut out = Vec::new();
        for b in &mut self.buckets {
            if now.saturating_duration_since(b.time) >= idle {
                b.time = now;
                out.push(b.prefix.with_prefix_of(b.depth, &InfoHash::random(rng)));
            }
        }
        out
    }

    /// Random ids inside buckets holding fewer than K nodes, at most once per `period` each.
    pub fn sparse_buckets(
        &mut self,
        now: Instant,
        period: Duration,
        rng: &mut dyn rand::RngCore,
    ) -> Vec<InfoHash> {
        let mut out = Vec::new();
        for b in &mut self.buckets {
            if b.nodes.len() < K
                && b.refreshed
                    .is_none_or(|r| now.saturating_duration_since(r) >= period)
            {
                b.refreshed = Some(now);
                out.push(b.prefix.with_prefix_of(b.depth, &InfoHash::random(rng)));
            }
        }
        out
    }

    /// A random non-expired node.
    pub fn random_node(&self, rng: &mut dyn rand::RngCore) -> Option<(InfoHash, SocketAddr)> {
        let all: Vec<&Node> = self
            .buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|n| !n.expired)
            .collect();
        if all.is_empty() {
            return None;
        }
        let n = all[(rng.next_u64() % all.len() as u64) as usize];
        Some((n.id, n.addr))
    }

    /// Every node (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests anchor virtual time on the real clock
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn splits_own_bucket_and_keeps_far_buckets_at_k() {
        let now = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let own = InfoHash::random(&mut rng);
        let mut t = RoutingTable::new(own, now);
        for i in 0..500u16 {
            let id = InfoHash::random(&mut rng);
            t.heard(id, SocketAddr::from(([127, 0, 0, 1], i + 1)), now, true);
        }
        assert!(t.buckets.len() > 4, "split happened");
        assert!(t.buckets.iter().all(|b| b.nodes.len() <= K));
        assert!(t.len() > 8 * 4);
        let c = t.closest_good(&own, 8, now);
        assert_eq!(c.len(), 8);
        // Sorted by distance.
        for w in c.windows(2) {
            assert_ne!(own.xor_cmp(&w[0].0, &w[1].0), std::cmp::Ordering::Greater);
        }
        assert!(
            !t.heard(own, SocketAddr::from(([127, 0, 0, 1], 9)), now, true),
            "never ourselves"
        );
        assert_eq!(t.counts(now).good, t.len());
        assert_eq!(t.counts(now + NODE_EXPIRE_TIME).dubious, t.len());
    }
}
