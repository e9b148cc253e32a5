//! The msgpack envelope (A.2) and message arguments.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rmpv::Value as Mp;

use super::infohash::InfoHash;
#[cfg(test)]
use super::value::encode;
use super::value::{Query, Value, blob, get, hash};

/// User agent sent in `v` (2.4 nodes send "RNG1").
pub const USER_AGENT: &str = "RNG1";
/// `w` number for IPv4 (Linux AF_INET).
pub const AF_INET: u64 = 2;
/// `w` number for IPv6 (Linux AF_INET6).
pub const AF_INET6: u64 = 10;

/// Query names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `ping`.
    Ping,
    /// `find`.
    Find,
    /// `get`.
    Get,
    /// `put` (announce).
    Put,
    /// `listen`.
    Listen,
    /// `refresh`.
    Refresh,
    /// `update` (server → listener).
    Update,
}

impl QueryKind {
    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Find => "find",
            Self::Get => "get",
            Self::Put => "put",
            Self::Listen => "listen",
            Self::Refresh => "refresh",
            Self::Update => "update",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "ping" => Self::Ping,
            "find" => Self::Find,
            "get" => Self::Get,
            "put" => Self::Put,
            "listen" => Self::Listen,
            "refresh" => Self::Refresh,
            "update" => Self::Update,
            _ => return None,
        })
    }
}

/// The `values` entry of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireValues {
    /// Inline values (undecodable entries are skipped).
    Values(Vec<Value>),
    /// Header of a fragmented message: packed sizes of the values that follow.
    Sizes(Vec<u64>),
}

/// Arguments of a query, reply or update (`a`/`r`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// Sender id.
    pub id: InfoHash,
    /// Key.
    pub h: Option<InfoHash>,
    /// Find target.
    pub target: Option<InfoHash>,
    /// Query (get/listen).
    pub query: Option<Query>,
    /// Wanted families (2/10).
    pub want: Option<Vec<u64>>,
    /// Write token.
    pub token: Option<Vec<u8>>,
    /// Value id (refresh, put reply).
    pub vid: Option<u64>,
    /// Packed IPv4 nodes.
    pub n4: Option<Vec<u8>>,
    /// Packed IPv6 nodes.
    pub n6: Option<Vec<u8>>,
    /// Requester address as seen by the replier.
    pub sa: Option<IpAddr>,
    /// Creation time (unix s).
    pub created: Option<u64>,
    /// Values or sizes.
    pub values: Option<WireValues>,
    /// Field projection reply (`fileds`).
    pub fields: Option<Mp>,
    /// Listen socket id.
    pub sid: Option<u32>,
    /// Listen protocol version.
    pub ve: Option<u64>,
    /// Expired value ids.
    pub exp: Option<Vec<u64>>,
    /// Refreshed value ids.
    pub re: Option<Vec<u64>>,
}

/// One value-data fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Value index in the header.
    pub index: u32,
    /// Byte offset.
    pub offset: u32,
    /// Bytes.
    pub data: Vec<u8>,
}

/// Message body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A query.
    Query(QueryKind, Args),
    /// A reply.
    Reply(Args),
    /// An error (`r.id` is the sender).
    Error {
        /// Code (203, 401, 404...).
        code: u16,
        /// Message text.
        message: String,
        /// Sender id.
        id: InfoHash,
    },
    /// Value-data fragments.
    Fragments(Vec<Fragment>),
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Transaction id.
    pub tid: u32,
    /// Network id (0 when absent).
    pub network: u32,
    /// The sender says it is a client (never enters routing tables).
    pub is_client: bool,
    /// Body.
    pub body: Body,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not msgpack or not a map.
    #[error("datagram is not a msgpack map")]
    NotMap,
    /// Missing or invalid transaction id.
    #[error("missing transaction id")]
    Tid,
    /// Unknown query or kind.
    #[error("unknown message kind")]
    Kind,
    /// Missing or invalid sender id.
    #[error("missing sender id")]
    Id,
    /// An argument has the wrong type.
    #[error("malformed argument")]
    Arg,
}

fn uint_list(v: &Mp) -> Option<Vec<u64>> {
    v.as_array()?.iter().map(Mp::as_u64).collect()
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn opt_hash(m: &[(Mp, Mp)], k: &str) -> Result<Option<InfoHash>, DecodeError> {
    match get(m, k) {
        None => Ok(None),
        Some(v) => hash(v).map(Some).ok_or(DecodeError::Arg),
    }
}

impl Args {
    /// Arguments with only the sender id.
    pub fn new(id: InfoHash) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    fn parse(v: &Mp) -> Result<Self, DecodeError> {
        let m = v.as_map().ok_or(DecodeError::Arg)?;
        let id = get(m, "id").and_then(hash).ok_or(DecodeError::Id)?;
        if id.is_zero() {
            return Err(DecodeError::Id);
        }
        let mut a = Self::new(id);
        a.h = opt_hash(m, "h")?;
        a.target = opt_hash(m, "target")?;
        if let Some(q) = get(m, "q") {
            a.query = Some(Query::from_msgpack(q).ok_or(DecodeError::Arg)?);
        }
        if let Some(w) = get(m, "w") {
            a.want = Some(uint_list(w).ok_or(DecodeError::Arg)?);
        }
        a.token = get(m, "token").and_then(blob);
        a.vid = get(m, "vid").and_then(Mp::as_u64);
        a.n4 = get(m, "n4").and_then(blob);
        a.n6 = get(m, "n6").and_then(blob);
        a.sa = get(m, "sa").and_then(blob).and_then(|b| ip_from(&b));
        a.created = get(m, "c").and_then(Mp::as_u64);
        a.sid = get(m, "sid")
            .and_then(Mp::as_u64)
            .and_then(|x| u32::try_from(x).ok());
        a.ve = get(m, "ve").and_then(Mp::as_u64);
        if let Some(e) = get(m, "exp") {
            a.exp = Some(uint_list(e).ok_or(DecodeError::Arg)?);
        }
        if let Some(e) = get(m, "re") {
            a.re = Some(uint_list(e).ok_or(DecodeError::Arg)?);
        }
        if let Some(f) = get(m, "fileds") {
            a.fields = Some(f.clone());
        }
        if let Some(vs) = get(m, "values") {
            let arr = vs.as_array().ok_or(DecodeError::Arg)?;
            if arr.iter().any(Mp::is_u64) {
                a.values = Some(WireValues::Sizes(
                    arr.iter().filter_map(Mp::as_u64).collect(),
                ));
            } else {
                a.values = Some(WireValues::Values(
                    arr.iter()
                        .filter_map(|x| Value::from_msgpack(x).ok())
                        .collect(),
                ));
            }
        }
        Ok(a)
    }

    /// Writes the arguments map: the same bytes as encoding [`Self::to_msgpack`]'s tree, without
    /// building it (one buffer instead of an allocation per key and field).
    fn write(&self, o: &mut Vec<u8>, packed_sizes: bool) {
        let n = 1
            + usize::from(self.ve.is_some())
            + usize::from(self.h.is_some())
            + usize::from(self.target.is_some())
            + usize::from(self.query.is_some())
            + usize::from(self.want.is_some())
            + usize::from(self.vid.is_some())
            + usize::from(self.sid.is_some())
            + usize::from(self.values.is_some())
            + usize::from(self.fields.is_some())
            + usize::from(self.exp.is_some())
            + usize::from(self.re.is_some())
            + usize::from(self.created.is_some())
            + usize::from(self.sa.is_some())
            + usize::from(self.n4.is_some())
            + usize::from(self.n6.is_some())
            + usize::from(self.token.is_some());
        wr::map(o, n);
        wr::str(o, "id");
        wr::bin(o, &self.id.0);
        if let Some(ve) = self.ve {
            wr::str(o, "ve");
            wr::uint(o, ve);
        }
        if let Some(h) = &self.h {
            wr::str(o, "h");
            wr::bin(o, &h.0);
        }
        if let Some(t) = &self.target {
            wr::str(o, "target");
            wr::bin(o, &t.0);
        }
        if let Some(q) = &self.query {
            wr::str(o, "q");
            wr::value(o, &q.to_msgpack());
        }
        if let Some(w) = &self.want {
            wr::str(o, "w");
            wr::uints(o, w);
        }
        if let Some(v) = self.vid {
            wr::str(o, "vid");
            wr::uint(o, v);
        }
        if let Some(sid) = self.sid {
            wr::str(o, "sid");
            wr::uint(o, u64::from(sid));
        }
        match &self.values {
            Some(WireValues::Values(vs)) if packed_sizes => {
                wr::str(o, "values");
                wr::array(o, vs.len());
                for v in vs {
                    wr::uint(o, v.pack().len() as u64);
                }
            }
            Some(WireValues::Values(vs)) => {
                wr::str(o, "values");
                wr::array(o, vs.len());
                for v in vs {
                    wr::value(o, &v.to_msgpack());
                }
            }
            Some(WireValues::Sizes(sz)) => {
                wr::str(o, "values");
                wr::uints(o, sz);
            }
            None => {}
        }
        if let Some(f) = &self.fields {
            wr::str(o, "fileds");
            wr::value(o, f);
        }
        if let Some(e) = &self.exp {
            wr::str(o, "exp");
            wr::uints(o, e);
        }
        if let Some(e) = &self.re {
            wr::str(o, "re");
            wr::uints(o, e);
        }
        if let Some(c) = self.created {
            wr::str(o, "c");
            wr::uint(o, c);
        }
        if let Some(sa) = self.sa {
            wr::str(o, "sa");
            match sa {
                IpAddr::V4(a) => wr::bin(o, &a.octets()),
                IpAddr::V6(a) => wr::bin(o, &a.octets()),
            }
        }
        if let Some(n) = &self.n4 {
            wr::str(o, "n4");
            wr::bin(o, n);
        }
        if let Some(n) = &self.n6 {
            wr::str(o, "n6");
            wr::bin(o, n);
        }
        if let Some(t) = &self.token {
            wr::str(o, "token");
            wr::bin(o, t);
        }
    }

    /// The arguments as a msgpack tree (reference for [`Self::write`] in tests).
    #[cfg(test)]
    fn to_msgpack(&self, packed_sizes: bool) -> Mp {
        let mut m: Vec<(Mp, Mp)> = Vec::with_capacity(8);
        let k = Mp::from;
        m.push((k("id"), Mp::Binary(self.id.0.to_vec())));
        if let Some(ve) = self.ve {
            m.push((k("ve"), Mp::from(ve)));
        }
        if let Some(h) = &self.h {
            m.push((k("h"), Mp::Binary(h.0.to_vec())));
        }
        if let Some(t) = &self.target {
            m.push((k("target"), Mp::Binary(t.0.to_vec())));
        }
        if let Some(q) = &self.query {
            m.push((k("q"), q.to_msgpack()));
        }
        if let Some(w) = &self.want {
            m.push((k("w"), Mp::Array(w.iter().map(|x| Mp::from(*x)).collect())));
        }
        if let Some(v) = self.vid {
            m.push((k("vid"), Mp::from(v)));
        }
        if let Some(sid) = self.sid {
            m.push((k("sid"), Mp::from(sid)));
        }
        match &self.values {
            Some(WireValues::Values(vs)) if packed_sizes => {
                let sizes = vs.iter().map(|v| Mp::from(v.pack().len() as u64)).collect();
                m.push((k("values"), Mp::Array(sizes)));
            }
            Some(WireValues::Values(vs)) => {
                m.push((
                    k("values"),
                    Mp::Array(vs.iter().map(Value::to_msgpack).collect()),
                ));
            }
            Some(WireValues::Sizes(s)) => {
                m.push((
                    k("values"),
                    Mp::Array(s.iter().map(|x| Mp::from(*x)).collect()),
                ));
            }
            None => {}
        }
        if let Some(f) = &self.fields {
            m.push((k("fileds"), f.clone()));
        }
        if let Some(e) = &self.exp {
            m.push((
                k("exp"),
                Mp::Array(e.iter().map(|x| Mp::from(*x)).collect()),
            ));
        }
        if let Some(e) = &self.re {
            m.push((k("re"), Mp::Array(e.iter().map(|x| Mp::from(*x)).collect())));
        }
        if let Some(c) = self.created {
            m.push((k("c"), Mp::from(c)));
        }
        if let Some(sa) = self.sa {
            let b = match sa {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            m.push((k("sa"), Mp::Binary(b)));
        }
        if let Some(n) = &self.n4 {
            m.push((k("n4"), Mp::Binary(n.clone())));
        }
        if let Some(n) = &self.n6 {
            m.push((k("n6"), Mp::Binary(n.clone())));
        }
        if let Some(t) = &self.token {
            m.push((k("token"), Mp::Binary(t.clone())));
        }
        Mp::Map(m)
    }
}

/// Largest total packed size of inline values (A.10).
pub const INLINE_LIMIT: usize = 600;
/// Largest fragment payload.
pub const FRAGMENT_SIZE: usize = 1280;

/// Whether the values must go as header + fragments.
pub fn needs_fragments(values: &[Value]) -> bool {
    if values.len() >= 50 {
        return true;
    }
    values.iter().map(|v| v.pack().len()).sum::<usize>() >= INLINE_LIMIT
}

impl Message {
    /// Decodes a datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut rd = bytes;
        let v = rmpv::decode::read_value_with_max_depth(&mut rd, 24)
            .map_err(|_| DecodeError::NotMap)?;
        let m = v.as_map().ok_or(DecodeError::NotMap)?;
        let tid = match get(m, "t") {
            Some(Mp::Binary(b)) if b.len() == 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            Some(x) => x
                .as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or(DecodeError::Tid)?,
            None => return Err(DecodeError::Tid),
        };
        let network = match get(m, "n") {
            None => 0,
            Some(x) => x
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(DecodeError::Arg)?,
        };
        let is_client = get(m, "s").and_then(Mp::as_bool).unwrap_or(false);
        let body = if let Some(e) = get(m, "e") {
            let arr = e.as_array().ok_or(DecodeError::Arg)?;
            let code = arr
                .first()
                .and_then(Mp::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .ok_or(DecodeError::Arg)?;
            let message = arr.get(1).and_then(Mp::as_str).unwrap_or("").to_owned();
            let r = get(m, "r").and_then(Mp::as_map).ok_or(DecodeError::Id)?;
            let id = get(r, "id").and_then(hash).ok_or(DecodeError::Id)?;
            if id.is_zero() {
                return Err(DecodeError::Id);
            }
            Body::Error { code, message, id }
        } else if let Some(r) = get(m, "r") {
            Body::Reply(Args::parse(r)?)
        } else if let Some(p) = get(m, "p") {
            let pm = p.as_map().ok_or(DecodeError::Arg)?;
            let mut frags = Vec::with_capacity(pm.len());
            for (k, v) in pm {
                let index = k
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or(DecodeError::Arg)?;
                let fm = v.as_map().ok_or(DecodeError::Arg)?;
                let offset = get(fm, "o")
                    .and_then(Mp::as_u64)
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or(DecodeError::Arg)?;
                let data = get(fm, "d").and_then(blob).ok_or(DecodeError::Arg)?;
                frags.push(Fragment {
                    index,
                    offset,
                    data,
                });
            }
            Body::Fragments(frags)
        } else if get(m, "u").is_some() {
            // Legacy (listen version 0) pushes: not used by 1.x+ peers.
            return Err(DecodeError::Kind);
        } else {
            if let Some(y) = get(m, "y") {
                if y.as_str() != Some("q") {
                    return Err(DecodeError::Kind);
                }
            }
            let q = get(m, "q")
                .and_then(Mp::as_str)
                .and_then(QueryKind::from_name);
            let q = q.ok_or(DecodeError::Kind)?;
            let a = get(m, "a").ok_or(DecodeError::Id)?;
            Body::Query(q, Args::parse(a)?)
        };
        Ok(Self {
            tid,
            network,
            is_client,
            body,
        })
    }

    /// Encodes the message. With `fragmented`, inline values are replaced by their packed sizes
    /// (the caller sends [`fragments`] right after).
    pub fn encode(&self, fragmented: bool) -> Vec<u8> {
        let mut o = Vec::with_capacity(256);
        let extra =
            usize::from(!matches!(self.body, Body::Fragments(_))) + usize::from(self.network != 0);
        match &self.body {
            Body::Query(q, a) => {
                wr::map(&mut o, 4 + extra);
                wr::str(&mut o, "a");
                a.write(&mut o, fragmented);
                wr::str(&mut o, "q");
                wr::str(&mut o, q.name());
                wr::str(&mut o, "t");
                wr::uint(&mut o, u64::from(self.tid));
                wr::str(&mut o, "y");
                wr::str(&mut o, "q");
            }
            Body::Reply(a) => {
                wr::map(&mut o, 3 + extra);
                wr::str(&mut o, "r");
                a.write(&mut o, fragmented);
                wr::str(&mut o, "t");
                wr::uint(&mut o, u64::from(self.tid));
                wr::str(&mut o, "y");
                wr::str(&mut o, "r");
            }
            Body::Error { code, message, id } => {
                wr::map(&mut o, 4 + extra);
                wr::str(&mut o, "e");
                wr::array(&mut o, 2);
                wr::uint(&mut o, u64::from(*code));
                wr::str(&mut o, message);
                wr::str(&mut o, "r");
                wr::map(&mut o, 1);
                wr::str(&mut o, "id");
                wr::bin(&mut o, &id.0);
                wr::str(&mut o, "t");
                wr::uint(&mut o, u64::from(self.tid));
                wr::str(&mut o, "y");
                wr::str(&mut o, "e");
            }
            Body::Fragments(fr) => {
                wr::map(&mut o, 3 + extra);
                wr::str(&mut o, "y");
                wr::str(&mut o, "p");
                wr::str(&mut o, "t");
                wr::uint(&mut o, u64::from(self.tid));
                wr::str(&mut o, "p");
                wr::map(&mut o, fr.len());
                for f in fr {
                    wr::uint(&mut o, u64::from(f.index));
                    wr::map(&mut o, 2);
                    wr::str(&mut o, "o");
                    wr::uint(&mut o, u64::from(f.offset));
                    wr::str(&mut o, "d");
                    wr::bin(&mut o, &f.data);
                }
            }
        }
        if !matches!(self.body, Body::Fragments(_)) {
            wr::str(&mut o, "v");
            wr::str(&mut o, USER_AGENT);
        }
        if self.network != 0 {
            wr::str(&mut o, "n");
            wr::uint(&mut o, u64::from(self.network));
        }
        o
    }

    /// [`Self::encode`] through an rmpv tree (the reference it must match byte for byte).
    #[cfg(test)]
    fn encode_tree(&self, fragmented: bool) -> Vec<u8> {
        let k = Mp::from;
        let mut m: Vec<(Mp, Mp)> = Vec::with_capacity(6);
        match &self.body {
            Body::Query(q, a) => {
                m.push((k("a"), a.to_msgpack(fragmented)));
                m.push((k("q"), k(q.name())));
                m.push((k("t"), Mp::from(self.tid)));
                m.push((k("y"), k("q")));
            }
            Body::Reply(a) => {
                m.push((k("r"), a.to_msgpack(fragmented)));
                m.push((k("t"), Mp::from(self.tid)));
                m.push((k("y"), k("r")));
            }
            Body::Error { code, message, id } => {
                m.push((
                    k("e"),
                    Mp::Array(vec![Mp::from(*code), k(message.as_str())]),
                ));
                m.push((k("r"), Mp::Map(vec![(k("id"), Mp::Binary(id.0.to_vec()))])));
                m.push((k("t"), Mp::from(self.tid)));
                m.push((k("y"), k("e")));
            }
            Body::Fragments(fr) => {
                m.push((k("y"), k("p")));
                m.push((k("t"), Mp::from(self.tid)));
                let p = fr
                    .iter()
                    .map(|f| {
                        (
                            Mp::from(f.index),
                            Mp::Map(vec![
                                (k("o"), Mp::from(f.offset)),
                                (k("d"), Mp::Binary(f.data.clone())),
                            ]),
                        )
                    })
                    .collect();
                m.push((k("p"), Mp::Map(p)));
            }
        }
        if !matches!(self.body, Body::Fragments(_)) {
            m.push((k("v"), k(USER_AGENT)));
        }
        if self.network != 0 {
            m.push((k("n"), Mp::from(self.network)));
        }
        encode(&Mp::Map(m))
    }

    /// The values carried by a query or reply, if any.
    pub fn values(&self) -> Option<&[Value]> {
        match &self.body {
            Body::Query(_, a) | Body::Reply(a) => match &a.values {
                Some(WireValues::Values(v)) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The fragment datagrams for `values` (one per ≤1280-byte chunk, in order).
pub fn fragments(tid: u32, network: u32, values: &[Value]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let packed = v.pack();
        for (n, chunk) in packed.chunks(FRAGMENT_SIZE).enumerate() {
            let msg = Message {
                tid,
                network,
                is_client: false,
                body: Body::Fragments(vec![Fragment {
                    index: i as u32,
                    offset: (n * FRAGMENT_SIZE) as u32,
                    data: chunk.to_vec(),
                }]),
            };
            out.push(msg.encode(false));
        }
    }
    out
}

/// Packs nodes (A.5).
pub fn pack_nodes(nodes: &[(InfoHash, std::net::SocketAddr)], v6: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * if v6 { 38 } else { 26 });
    for (id, addr) in nodes {
        match (addr, v6) {
            (std::net::SocketAddr::V4(a), false) => {
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            (std::net::SocketAddr::V6(a), true) => {
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            _ => {}
        }
    }
    out
}

/// Unpacks nodes; `None` when the length is not a multiple of the entry size (error 423).
pub fn unpack_nodes(b: &[u8], v6: bool) -> Option<Vec<(InfoHash, std::net::SocketAddr)>> {
    let sz = if v6 { 38 } else { 26 };
    if !b.len().is_multiple_of(sz) {
        return None;
    }
    Some(
        b.chunks(sz)
            .filter_map(|c| {
                let id = InfoHash::from_slice(&c[..20])?;
                let ip = ip_from(&c[20..sz - 2])?;
                let port = u16::from_be_bytes([c[sz - 2], c[sz - 1]]);
                Some((id, std::net::SocketAddr::new(ip, port)))
            })
            .collect(),
    )
}

/// Msgpack writer giving the bytes `rmpv::encode::write_value` gives for the same tree: the
/// shortest form of every integer, string, binary, array and map header.
mod wr {
    use rmpv::Value as Mp;

    pub(super) fn uint(o: &mut Vec<u8>, v: u64) {
        if v < 0x80 {
            o.push(v as u8);
        } else if let Ok(v) = u8::try_from(v) {
            o.extend_from_slice(&[0xcc, v]);
        } else if let Ok(v) = u16::try_from(v) {
            o.push(0xcd);
            o.extend_from_slice(&v.to_be_bytes());
        } else if let Ok(v) = u32::try_from(v) {
            o.push(0xce);
            o.extend_from_slice(&v.to_be_bytes());
        } else {
            o.push(0xcf);
            o.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// A length header: `fix` form below `fix_max`, then the 8 (if any), 16 and 32-bit forms.
    fn len(o: &mut Vec<u8>, n: usize, fix: Option<(u8, usize)>, m8: Option<u8>, m16: u8, m32: u8) {
        if let Some((base, max)) = fix
            && n < max
        {
            o.push(base | n as u8);
        } else if let (Some(m), Ok(n)) = (m8, u8::try_from(n)) {
            o.extend_from_slice(&[m, n]);
        } else if let Ok(n) = u16::try_from(n) {
            o.push(m16);
            o.extend_from_slice(&n.to_be_bytes());
        } else {
            o.push(m32);
            o.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    pub(super) fn str(o: &mut Vec<u8>, s: &str) {
        len(o, s.len(), Some((0xa0, 32)), Some(0xd9), 0xda, 0xdb);
        o.extend_from_slice(s.as_bytes());
    }

    pub(super) fn bin(o: &mut Vec<u8>, b: &[u8]) {
        len(o, b.len(), None, Some(0xc4), 0xc5, 0xc6);
        o.extend_from_slice(b);
    }

    pub(super) fn map(o: &mut Vec<u8>, n: usize) {
        len(o, n, Some((0x80, 16)), None, 0xde, 0xdf);
    }

    pub(super) fn array(o: &mut Vec<u8>, n: usize) {
        len(o, n, Some((0x90, 16)), None, 0xdc, 0xdd);
    }

    pub(super) fn uints(o: &mut Vec<u8>, v: &[u64]) {
        array(o, v.len());
        for x in v {
            uint(o, *x);
        }
    }

    pub(super) fn value(o: &mut Vec<u8>, v: &Mp) {
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(o, v);
    }
}

#[cfg(test)]
mod tests {
    use super::super::value::{Field, FieldValue};
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    const PING: &str = "85a16181a26964c4141047e2d8a026af8c3dbda9bea4da3393da398b14a171a470696e67a174ceea61f530a179a171a176a4524e4731";
    const PONG: &str = "84a17282a26964c414701b2d879ca1a371639bafcbb621ded11a94e508a27361c4047f000001a174ceea61f530a179a172a176a4524e4731";
    const PUT: &str = "85a16185a26964c414701b2d879ca1a371639bafcbb621ded11a94e508a168c414913a73b565c8e2c8ed94497580f619397709b8b6
           a676616c7565739182a26964cf23068878ce4b7f6da364617481a4626f647983a47479706500a464617461c40b68656c6c6f
           20776f726c64a57574797065aa746578742f706c61696ea163ce6b068f31a5746f6b656ec420a282056cc23c7d7404c24bfce6
           0e1294303e313caf74f16ac7d7a717077598d5a171a3707574a174ce48577299a179a171a176a4524e4731";
    const PUT_REPLY: &str = "84a17283a26964c4141047e2d8a026af8c3dbda9bea4da3393da398b14a3766964cf23068878ce4b7f6da27361c4047f000001
           a174ce48577299a179a172a176a4524e4731";

    #[test]
    fn transcript_vectors_decode_and_reencode_byte_exact() {
        for (hexs, kind) in [
            (PING, "ping"),
            (PONG, "pong"),
            (PUT, "put"),
            (PUT_REPLY, "putr"),
        ] {
            let bytes = h(hexs);
            let m = Message::decode(&bytes).unwrap();
            match (&m.body, kind) {
                (Body::Query(QueryKind::Ping, a), "ping") => {
                    assert_eq!(m.tid, 3932288304);
                    assert_eq!(a.id.to_hex(), "1047e2d8a026af8c3dbda9bea4da3393da398b14");
                }
                (Body::Reply(a), "pong") => {
                    assert_eq!(a.sa, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
                }
                (Body::Query(QueryKind::Put, a), "put") => {
                    assert_eq!(a.h, Some(InfoHash::get("testkey")));
                    assert_eq!(a.token.as_ref().unwrap().len(), 32);
                    assert_eq!(a.created, Some(1795591985));
                    let v = &m.values().unwrap()[0];
                    assert_eq!(v.data, b"hello world");
                }
                (Body::Reply(a), "putr") => assert_eq!(a.vid, Some(2523854693626249069)),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(m.encode(false), bytes, "{kind} re-encodes byte exact");
        }
    }

    #[test]
    fn bin4_tid_network_and_unknown_query() {
        let mut m = Message::decode(&h(PING)).unwrap();
        m.network = 5;
        let enc = m.encode(false);
        assert_eq!(Message::decode(&enc).unwrap().network, 5);
        // t as bin4.
        let v = rmpv::decode::read_value(&mut &h(PING)[..]).unwrap();
        let mut map = v.as_map().unwrap().clone();
        for (k, val) in map.iter_mut() {
            if k.as_str() == Some("t") {
                *val = Mp::Binary(vec![0, 0, 0, 7]);
            }
            if k.as_str() == Some("q") {
                *val = Mp::from("ping");
            }
        }
        let b = encode(&Mp::Map(map.clone()));
        assert_eq!(Message::decode(&b).unwrap().tid, 7);
        for (k, val) in map.iter_mut() {
            if k.as_str() == Some("q") {
                *val = Mp::from("bogus");
            }
        }
        assert_eq!(
            Message::decode(&encode(&Mp::Map(map))),
            Err(DecodeError::Kind)
        );
    }

    #[test]
    fn node_packing_round_trip_and_bad_length() {
        let a: std::net::SocketAddr = "127.0.0.1:14222".parse().unwrap();
        let b: std::net::SocketAddr = "[::1]:14222".parse().unwrap();
        let id = InfoHash::get("x");
        let p4 = pack_nodes(&[(id, a), (id, b)], false);
        assert_eq!(p4.len(), 26);
        assert_eq!(unpack_nodes(&p4, false).unwrap(), vec![(id, a)]);
        let p6 = pack_nodes(&[(id, b)], true);
        assert_eq!(unpack_nodes(&p6, true).unwrap(), vec![(id, b)]);
        assert!(unpack_nodes(&p4[..25], false).is_none());
    }

    #[test]
    fn fragments_match_transcript_shape() {
        let mut v = Value::new(vec![7u8; 3000]);
        v.id = 1;
        assert!(needs_fragments(std::slice::from_ref(&v)));
        let fr = fragments(9, 0, std::slice::from_ref(&v));
        assert_eq!(fr.len(), 3);
        let m = Message::decode(&fr[1]).unwrap();
        let Body::Fragments(f) = m.body else { panic!() };
        assert_eq!((f[0].index, f[0].offset, f[0].data.len()), (0, 1280, 1280));
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        (
            any::<u64>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..700),
            "[a-z/]{0,12}",
            proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 1..40))),
            proptest::collection::vec(any::<u8>(), 0..3),
            any::<u8>(),
        )
            .prop_map(|(id, vtype, data, utype, owner, cypher, prio)| {
                let mut v = Value {
                    id: id | 1,
                    vtype,
                    data,
                    user_type: utype,
                    priority: u64::from(prio % 3),
                    ..Value::default()
                };
                if let Some((seq, key)) = owner {
                    v.seq = seq;
                    v.owner = Some(key);
                    v.signature = vec![9; 16];
                }
                if !cypher.is_empty() {
                    v = Value {
                        id: v.id,
                        cypher,
                        priority: v.priority,
                        ..Value::default()
                    };
                }
                v
            })
    }

    #[test]
    fn direct_encoding_matches_the_tree_with_every_field_set() {
        let mut a = Args::new(InfoHash::get("all"));
        a.ve = Some(1);
        a.h = Some(InfoHash::get("h"));
        a.target = Some(InfoHash::get("t"));
        a.query = Some(Query {
            select: vec![Field::Id],
            filters: vec![],
        });
        a.want = Some(vec![AF_INET, AF_INET6]);
        a.token = Some(vec![7; 300]);
        a.vid = Some(200);
        a.n4 = Some(vec![1; 26 * 8]);
        a.n6 = Some(vec![2; 38 * 8]);
        a.sa = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        a.created = Some(70_000);
        a.values = Some(WireValues::Values(vec![Value::new(vec![3; 1000])]));
        a.fields = Some(Mp::Array(vec![Mp::from(-5), Mp::Nil, Mp::from(1.5)]));
        a.sid = Some(u32::MAX);
        a.exp = Some((0..20).map(|i| i * 1000).collect());
        a.re = Some(vec![u64::MAX]);
        for body in [Body::Query(QueryKind::Put, a.clone()), Body::Reply(a)] {
            let m = Message {
                tid: 0x1234_5678,
                network: 70_000,
                is_client: false,
                body,
            };
            for frag in [false, true] {
                assert_eq!(m.encode(frag), m.encode_tree(frag));
            }
        }
    }

    /// Integers around every msgpack size boundary, and any.
    fn arb_int() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            0u64..300,
            60_000u64..70_000,
            Just(u64::from(u32::MAX)),
            any::<u64>()
        ]
    }

    fn prop_oneof_net() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::prelude::*;
        prop_oneof![Just(0u32), 1u32..300, Just(u32::MAX)]
    }

    proptest::proptest! {
        #[test]
        fn values_and_messages_round_trip(v in arb_value(), tid in 1u32.., net in 0u32..10, frag in proptest::bool::ANY) {
            proptest::prop_assert_eq!(&Value::unpack(&v.pack()).unwrap(), &v);
            let mut a = Args::new(InfoHash::get("rt"));
            a.h = Some(InfoHash::get("k"));
            a.token = Some(vec![1; 32]);
            a.values = Some(WireValues::Values(vec![v.clone()]));
            let m = Message { tid, network: net, is_client: false, body: Body::Query(QueryKind::Put, a) };
            let back = Message::decode(&m.encode(false)).unwrap();
            proptest::prop_assert_eq!(&back, &m);
            if frag {
                // Header + fragments carry the same value.
                let hdr = Message::decode(&m.encode(true)).unwrap();
                let Body::Query(_, ha) = hdr.body else { panic!() };
                let Some(WireValues::Sizes(sz)) = ha.values else { panic!() };
                let mut buf = Vec::new();
                for f in fragments(tid, net, std::slice::from_ref(&v)) {
                    let Body::Fragments(fr) = Message::decode(&f).unwrap().body else { panic!() };
                    proptest::prop_assert_eq!(fr[0].offset as usize, buf.len());
                    buf.extend_from_slice(&fr[0].data);
                }
                proptest::prop_assert_eq!(buf.len() as u64, sz[0]);
                proptest::prop_assert_eq!(Value::unpack(&buf).unwrap(), v);
            }
        }

        #[test]
        fn direct_encoding_matches_the_rmpv_tree_byte_for_byte(
            (ve, h, target, q, want, token, vid, n4, n6, sa) in (
                proptest::option::of(arb_int()),
                proptest::option::of(proptest::array::uniform20(proptest::num::u8::ANY)),
                proptest::option::of(proptest::array::uniform20(proptest::num::u8::ANY)),
                proptest::option::of(arb_int()),
                proptest::option::of(proptest::collection::vec(arb_int(), 0..20)),
                proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                proptest::option::of(arb_int()),
                proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                proptest::option::of(proptest::bool::ANY),
            ),
            (created, vals, sizes, fields, sid, exp, re) in (
                proptest::option::of(arb_int()),
                proptest::option::of(proptest::collection::vec(arb_value(), 0..3)),
                proptest::option::of(proptest::collection::vec(arb_int(), 0..70)),
                proptest::option::of(proptest::num::i64::ANY),
                proptest::option::of(proptest::strategy::Strategy::prop_map(arb_int(), |x| x as u32)),
                proptest::option::of(proptest::collection::vec(arb_int(), 0..18)),
                proptest::option::of(proptest::collection::vec(arb_int(), 0..3)),
            ),
            (tid, net, kind, frag, code, text) in (
                proptest::strategy::Strategy::prop_map(arb_int(), |x| x as u32),
                prop_oneof_net(),
                0u8..5,
                proptest::bool::ANY,
                proptest::strategy::Strategy::prop_map(arb_int(), |x| x as u16),
                "[a-z ]{0,300}",
            ),
            frags in proptest::collection::vec((proptest::strategy::Strategy::prop_map(arb_int(), |x| x as u32), proptest::strategy::Strategy::prop_map(arb_int(), |x| x as u32), proptest::collection::vec(proptest::num::u8::ANY, 0..1300)), 0..20),
        ) {
            let mut a = Args::new(InfoHash::get("direct"));
            a.ve = ve;
            a.h = h.map(InfoHash);
            a.target = target.map(InfoHash);
            a.query = q.map(|id| Query {
                select: vec![Field::Id, Field::SeqNum],
                filters: vec![(Field::Id, FieldValue::Int(id))],
            });
            a.want = want;
            a.token = token;
            a.vid = vid;
            a.n4 = n4;
            a.n6 = n6;
            a.sa = sa.map(|v6| if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)) });
            a.created = created;
            a.values = match (vals, sizes) {
                (Some(v), _) => Some(WireValues::Values(v)),
                (None, Some(s)) => Some(WireValues::Sizes(s)),
                (None, None) => None,
            };
            a.fields = fields.map(|x| Mp::Array(vec![Mp::from(x), Mp::from("f"), Mp::Binary(vec![1, 2])]));
            a.sid = sid;
            a.exp = exp;
            a.re = re;
            let body = match kind {
                0 => Body::Query(QueryKind::Put, a),
                1 => Body::Query(QueryKind::Listen, a),
                2 => Body::Reply(a),
                3 => Body::Error { code, message: text, id: InfoHash::get("err") },
                _ => Body::Fragments(frags.into_iter().map(|(index, offset, data)| Fragment { index, offset, data }).collect()),
            };
            let m = Message { tid, network: net, is_client: false, body };
            proptest::prop_assert_eq!(m.encode(frag), m.encode_tree(frag));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = Message::decode(&bytes);
            let _ = Value::unpack(&bytes);
        }
    }
}
