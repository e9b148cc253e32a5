//! DHT access: keys, values in the proxy's JSON form (spec opendht.md A.8), and a UDP DHT node
//! of our own (the `waypost-dht-node` engine) joined to the network through bootstrap nodes.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value as Json, json};
use waypost_dht_node::{NodeError, NodeHandle, NodeOptions};
use waypost_net::shutdown::Shutdown;
use waypost_protocol::dht::{InfoHash, Value};

/// A DHT key as users type it: 40 hex digits are the key itself, anything else (for example
/// `inbox:<device id>`) is hashed with SHA-1, like dhtnode.
pub fn parse_key(s: &str) -> InfoHash {
    InfoHash::from_user_key(s)
}

/// What to put.
#[derive(Clone, Debug, Default)]
pub struct NewValue {
    /// Plain data (type 0).
    pub data: Vec<u8>,
    /// User type (`text/plain`, ...).
    pub utype: String,
    /// Encrypted body: when non-empty, the value is an opaque encrypted value.
    pub cypher: Vec<u8>,
    /// Priority (0 = urgent, Jami uses 1 for "not urgent").
    pub prio: u64,
}

impl NewValue {
    /// The proxy JSON for a POST (id 0: the proxy assigns one).
    pub fn to_json(&self, permanent: bool) -> Json {
        let mut m = Map::new();
        m.insert("id".into(), json!("0"));
        if self.cypher.is_empty() {
            m.insert("data".into(), json!(B64.encode(&self.data)));
            m.insert("type".into(), json!(0));
            if !self.utype.is_empty() {
                m.insert("utype".into(), json!(self.utype));
            }
        } else {
            m.insert("cypher".into(), json!(B64.encode(&self.cypher)));
        }
        if self.prio != 0 {
            m.insert("prio".into(), json!(self.prio));
        }
        if permanent {
            m.insert("permanent".into(), json!(true));
        }
        Json::Object(m)
    }

    /// The node's value (id 0: the node assigns one).
    pub fn to_value(&self) -> Value {
        let mut v = Value::new(self.data.clone());
        v.user_type.clone_from(&self.utype);
        v.cypher.clone_from(&self.cypher);
        v.priority = self.prio;
        if !v.cypher.is_empty() {
            v.data.clear();
            v.user_type.clear();
        }
        v
    }
}

/// A node value in the proxy's JSON form, so both paths print the same thing.
pub fn value_json(v: &Value) -> Json {
    let mut m = Map::new();
    m.insert("id".into(), json!(v.id.to_string()));
    if v.is_encrypted() {
        m.insert("cypher".into(), json!(B64.encode(&v.cypher)));
    } else {
        m.insert("data".into(), json!(B64.encode(&v.data)));
        m.insert("type".into(), json!(v.vtype));
        if !v.user_type.is_empty() {
            m.insert("utype".into(), json!(v.user_type));
        }
        if let Some(owner) = &v.owner {
            m.insert(
                "owner".into(),
                json!(waypost_protocol::identity::pem_encode("PUBLIC KEY", owner)),
            );
            m.insert("seq".into(), json!(v.seq));
            m.insert("sig".into(), json!(B64.encode(&v.signature)));
        }
    }
    if v.priority != 0 {
        m.insert("prio".into(), json!(v.priority));
    }
    Json::Object(m)
}

/// Adds a readable `text` field when the data is UTF-8, for human output.
pub fn with_text(mut v: Json) -> Json {
    let text = v
        .get("data")
        .and_then(Json::as_str)
        .and_then(|d| B64.decode(d).ok())
        .and_then(|d| String::from_utf8(d).ok());
    if let (Some(t), Some(m)) = (text, v.as_object_mut()) {
        m.insert("text".into(), json!(t));
    }
    v
}

/// A UDP DHT node of our own, stopped on drop.
pub struct UdpNode {
    /// The handle.
    pub handle: NodeHandle,
    shutdown: Shutdown,
}

impl Drop for UdpNode {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl UdpNode {
    /// Starts a node on `bind` (port 0: any), bootstraps it, and waits up to `timeout` for a
    /// first good node. Returns whether it connected.
    pub async fn start(
        bind: SocketAddr,
        bootstrap: &[String],
        network: u32,
        timeout: Duration,
    ) -> Result<(Self, bool), NodeError> {
        let sockets = waypost_dht_node::bind_sockets(&[bind])?;
        let opts = NodeOptions {
            network,
            bootstrap: waypost_dht_node::resolve_bootstrap(bootstrap).await?,
            ..NodeOptions::default()
        };
        let shutdown = Shutdown::new();
        let handle = waypost_dht_node::spawn(opts, sockets, &shutdown, None)?;
        let connected = handle.wait_connected(timeout).await;
        Ok((Self { handle, shutdown }, connected))
    }
}
