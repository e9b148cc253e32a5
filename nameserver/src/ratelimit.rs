//! Per-source-IP token bucket for registrations.
//!
//! Held in memory only and never written anywhere: the map key is the source IP (IPv6 grouped
//! by /64), the value a token count and a timestamp. The map is bounded: when it is full, fully
//! refilled buckets are dropped; if that frees nothing, the whole map is reset (memory stays
//! bounded at the cost of briefly forgetting old buckets).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::RateSettings;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter. No `Debug`: it holds source addresses.
pub struct RateLimiter {
    settings: RateSettings,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

impl RateLimiter {
    /// A limiter with these settings.
    pub fn new(settings: RateSettings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.settings.per_minute) / 60.0
    }

    /// Takes one token for `ip` at `now`; `false` means the request must be refused.
    pub fn check(&self, ip: IpAddr, now: Instant) -> bool {
        let burst = f64::from(self.settings.burst);
        let rate = self.rate_per_sec();
        let mut map = self.buckets.lock();
        if map.len() >= self.settings.max_entries && !map.contains_key(&key(ip)) {
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if map.len() >= self.settings.max_entries {
                map.clear();
            }
        }
        let b = map.entry(key(ip)).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Number of tracked sources (tests).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(per_minute: u32, burst: u32, max_entries: usize) -> RateLimiter {
        RateLimiter::new(RateSettings {
            per_minute,
            burst,
            max_entries,
        })
    }

    #[test]
    fn burst_then_refill() {
        let l = limiter(60, 3, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.check(ip, t0) && l.check(ip, t0) && l.check(ip, t0));
        assert!(!l.check(ip, t0), "burst exhausted");
        assert!(
            l.check("192.0.2.2".parse().unwrap(), t0),
            "other source unaffected"
        );
        assert!(
            l.check(ip, t0 + Duration::from_millis(1100)),
            "one token per second"
        );
        assert!(!l.check(ip, t0 + Duration::from_millis(1200)));
    }

    #[test]
    fn ipv6_grouped_by_64_and_map_bounded() {
        let l = limiter(1, 1, 4);
        let t0 = Instant::now();
        assert!(l.check("2001:db8::1".parse().unwrap(), t0));
        assert!(!l.check("2001:db8::2".parse().unwrap(), t0), "same /64");
        for i in 0..100u8 {
            l.check(IpAddr::from([10, 0, 0, i]), t0);
            assert!(l.tracked() <= 4);
        }
    }
}
