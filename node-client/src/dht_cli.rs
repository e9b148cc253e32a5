//! `node-client dht ...`, `node-client push ...` and `node-client identity ...`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value as Json, json};
use waypost_protocol::dht::{InfoHash, Query};
use waypost_protocol::identity::KeyBits;

use crate::cli::{EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK};
use crate::dht::{NewValue, UdpNode, parse_key, value_json, with_text};
use crate::output;
use crate::proxy::{ProxyClient, Subscription};
use crate::push::PushReceiver;

/// Errors of these commands (no keys, tokens or addresses in messages).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhtCliError {
    /// Proxy client error.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyClientError),
    /// Node error.
    #[error(transparent)]
    Node(#[from] waypost_dht_node::NodeError),
    /// Identity error.
    #[error(transparent)]
    Identity(#[from] crate::name::NameClientError),
    /// Local I/O.
    #[error("i/o: {0:?}")]
    Io(std::io::ErrorKind),
    /// Bad arguments.
    #[error("{0}")]
    Usage(&'static str),
    /// Nothing happened in time.
    #[error("timeout")]
    Timeout,
}

impl From<std::io::Error> for DhtCliError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.kind())
    }
}

/// Which DHT to use: a proxy over HTTP, or our own UDP node.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// DHT proxy URL (`http(s)://host:port` or `host:port`), as in Jami's proxy settings.
    #[arg(long, env = "WAYPOST_DHT_PROXY", conflicts_with = "bootstrap")]
    pub proxy: Option<String>,
    /// Run a UDP DHT node and bootstrap it from HOST:PORT (repeatable).
    #[arg(long, env = "WAYPOST_DHT_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// UDP address of our node (with --bootstrap).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub bind: SocketAddr,
    /// DHT network id.
    #[arg(long, default_value_t = 0)]
    pub network: u32,
    /// Local IP address to connect to the proxy from.
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<std::net::IpAddr>,
}

enum Conn {
    Proxy(ProxyClient),
    Node(UdpNode),
}

async fn connect(t: &Target) -> Result<Conn, DhtCliError> {
    if let Some(p) = &t.proxy {
        return Ok(Conn::Proxy(ProxyClient::with_source(p, t.source_ip)?));
    }
    if t.bootstrap.is_empty() {
        return Err(DhtCliError::Usage(
            "give --proxy URL or --bootstrap HOST:PORT",
        ));
    }
    output::progress("joining the DHT");
    let (node, ok) =
        UdpNode::start(t.bind, &t.bootstrap, t.network, Duration::from_secs(10)).await?;
    if !ok {
        output::progress("no DHT node answered yet; continuing");
    }
    Ok(Conn::Node(node))
}

/// Value to put.
#[derive(Debug, Clone, Args)]
pub struct ValueArgs {
    /// Text data.
    pub text: Option<String>,
    /// Data from a file instead.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    pub data_file: Option<PathBuf>,
    /// User type, e.g. text/plain.
    #[arg(long, default_value = "")]
    pub utype: String,
    /// Put an opaque encrypted-looking value with this many random cypher bytes (like a Jami
    /// trust request encrypted to the recipient).
    #[arg(long, value_name = "BYTES")]
    pub cypher_random: Option<usize>,
    /// Priority (0 urgent, 1 not urgent).
    #[arg(long, default_value_t = 0)]
    pub prio: u64,
}

/// `node-client dht ...`
#[derive(Debug, Subcommand)]
pub enum DhtCommand {
    /// Get every value stored at KEY (40 hex, or any text hashed with SHA-1).
    Get {
        #[command(flatten)]
        target: Target,
        /// The key: 40 hex digits, or any text hashed with SHA-1 (e.g. `inbox:<Jami ID>`).
        key: String,
    },
    /// Put a value at KEY.
    Put {
        #[command(flatten)]
        target: Target,
        /// The key: 40 hex digits, or any text hashed with SHA-1 (e.g. `inbox:<Jami ID>`).
        key: String,
        #[command(flatten)]
        value: ValueArgs,
        /// Permanent put: the proxy keeps it announced (a --bootstrap node stops with the command).
        #[arg(long)]
        permanent: bool,
    },
    /// Listen to KEY: print current values, then new ones and expirations.
    Listen {
        #[command(flatten)]
        target: Target,
        /// The key: 40 hex digits, or any text hashed with SHA-1 (e.g. `inbox:<Jami ID>`).
        key: String,
        /// Stop after this many values.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Proxy node info (`GET /`).
    Info {
        /// DHT proxy URL.
        #[arg(long, env = "WAYPOST_DHT_PROXY")]
        proxy: String,
    },
    /// Low level: SUBSCRIBE a push token to KEY on a proxy.
    Subscribe {
        /// DHT proxy URL.
        #[arg(long, env = "WAYPOST_DHT_PROXY")]
        proxy: String,
        /// The key: 40 hex digits, or any text hashed with SHA-1 (e.g. `inbox:<Jami ID>`).
        key: String,
        #[command(flatten)]
        sub: SubArgs,
        /// Refresh an existing subscription.
        #[arg(long)]
        refresh: bool,
    },
    /// Low level: UNSUBSCRIBE a push token from KEY on a proxy.
    Unsubscribe {
        /// DHT proxy URL.
        #[arg(long, env = "WAYPOST_DHT_PROXY")]
        proxy: String,
        /// The key: 40 hex digits, or any text hashed with SHA-1 (e.g. `inbox:<Jami ID>`).
        key: String,
        /// Push token.
        #[arg(long)]
        token: String,
        /// Client id.
        #[arg(long)]
        client_id: String,
    },
}

/// Push subscription fields.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    /// Push token (device token or UnifiedPush endpoint URL).
    #[arg(long)]
    pub token: String,
    /// Client id (Jami: the account id).
    #[arg(long)]
    pub client_id: String,
    /// Session id (random if omitted).
    #[arg(long)]
    pub session_id: Option<String>,
    /// Platform: android, ios, unifiedpush.
    #[arg(long, default_value = "android")]
    pub platform: String,
    /// Topic (iOS bundle id).
    #[arg(long, default_value = "")]
    pub topic: String,
}

/// `node-client push ...`
#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Act as a phone: start a local push receiver, SUBSCRIBE to KEYs through the proxy with
    /// it as the push endpoint, print each notification (and fetch the values with --fetch).
    Listen {
        /// DHT proxy URL.
        #[arg(long, env = "WAYPOST_DHT_PROXY")]
        proxy: String,
        /// Keys to subscribe to.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Client id (Jami: the account id).
        #[arg(long, default_value = "node-client")]
        client_id: String,
        /// Where the receiver listens. The proxy must reach it.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Platform: unifiedpush (the receiver's URL is the token) or android/ios (the proxy's
        /// push server must point at --listen; give --token).
        #[arg(long, default_value = "unifiedpush")]
        platform: String,
        /// Device token for android/ios.
        #[arg(long)]
        token: Option<String>,
        /// After a value notification, GET the key through the proxy and print the values.
        #[arg(long)]
        fetch: bool,
        /// Stop after this many value notifications.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Local IP address to connect to the proxy from.
        #[arg(long, value_name = "IP")]
        source_ip: Option<std::net::IpAddr>,
    },
    /// Only run the push receiver (gorush `/api/push` and UnifiedPush), printing what arrives.
    Receive {
        /// Where to listen (point the proxy's push server here).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Stop after this many notifications.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
}

/// `node-client identity ...`
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Create an RSA identity (PEM private key, mode 0600) and print its Jami ID.
    New {
        /// PEM file to create.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
        /// Key size: 2048, 3072 or 4096 (Jami: 4096).
        #[arg(long, default_value_t = 4096)]
        bits: u32,
    },
    /// Print an identity's Jami ID, key size and DHT keys.
    Show {
        /// PEM file.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
    },
}

fn session_id() -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%*";
    let mut rng = rand::rngs::StdRng::from_os_rng();
    (0..8)
        .map(|_| char::from(SET[rng.random_range(0..SET.len())]))
        .collect()
}

fn deadline(timeout: Option<u64>) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(timeout.unwrap_or(86_400 * 365))
}

fn new_value(v: &ValueArgs) -> Result<NewValue, DhtCliError> {
    let data = match (&v.text, &v.data_file) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(f)) => std::fs::read(f)?,
        (None, None) => Vec::new(),
    };
    let mut cypher = Vec::new();
    if let Some(n) = v.cypher_random {
        cypher = vec![0u8; n.max(1)];
        rand::rngs::StdRng::from_os_rng().fill_bytes(&mut cypher);
    } else if data.is_empty() {
        return Err(DhtCliError::Usage(
            "give TEXT, --data-file or --cypher-random",
        ));
    }
    Ok(NewValue {
        data,
        utype: v.utype.clone(),
        cypher,
        prio: v.prio,
    })
}

/// Runs a `dht` command.
pub async fn run_dht(cmd: DhtCommand) -> Result<i32, DhtCliError> {
    match cmd {
        DhtCommand::Get { target, key } => {
            let k = parse_key(&key);
            let values: Vec<Json> = match connect(&target).await? {
                Conn::Proxy(p) => p.get(&k.to_hex()).await?,
                Conn::Node(n) => n
                    .handle
                    .get_all(k, Query::all())
                    .await?
                    .iter()
                    .map(|v| value_json(v))
                    .collect(),
            };
            for v in &values {
                output::result(
                    &json!({"event": "value", "key": k.to_hex(), "value": with_text(v.clone())}),
                );
            }
            output::result(&json!({"event": "done", "key": k.to_hex(), "count": values.len()}));
            Ok(if values.is_empty() {
                EXIT_NOT_FOUND
            } else {
                EXIT_OK
            })
        }
        DhtCommand::Put {
            target,
            key,
            value,
            permanent,
        } => {
            let k = parse_key(&key);
            let nv = new_value(&value)?;
            let (stored, v) = match connect(&target).await? {
                Conn::Proxy(p) => (true, p.put(&k.to_hex(), &nv.to_json(permanent)).await?),
                Conn::Node(n) => {
                    let mut val = nv.to_value();
                    let out = n.handle.put(k, val.clone(), permanent).await?;
                    val.id = out.id;
                    (out.stored, value_json(&val))
                }
            };
            output::result(&json!({
                "event": "stored",
                "key": k.to_hex(),
                "acknowledged": stored,
                "id": v.get("id").cloned().unwrap_or(Json::Null),
                "value": v,
            }));
            Ok(if stored { EXIT_OK } else { EXIT_ERROR })
        }
        DhtCommand::Listen {
            target,
            key,
            count,
            timeout,
        } => {
            let k = parse_key(&key);
            let end = deadline(timeout);
            let max = count.unwrap_or(usize::MAX);
            let mut seen = 0usize;
            let conn = connect(&target).await?;
            output::result(&json!({"event": "listening", "key": k.to_hex()}));
            let fut = async {
                match &conn {
                    Conn::Proxy(p) => {
                        p.listen(&k.to_hex(), &mut |v| {
                            let expired = v.get("expired").and_then(Json::as_bool).unwrap_or(false);
                            output::result(&json!({"event": if expired {"expired"} else {"value"}, "key": k.to_hex(), "value": with_text(v)}));
                            seen += 1;
                            seen < max
                        })
                        .await?;
                    }
                    Conn::Node(n) => {
                        let mut l = n.handle.listen(k, Query::all())?;
                        while let Some(ev) = l.events.recv().await {
                            for v in ev.values {
                                output::result(
                                    &json!({"event": if ev.expired {"expired"} else {"value"}, "key": k.to_hex(), "value": with_text(value_json(&v))}),
                                );
                                seen += 1;
                                if seen >= max {
                                    return Ok::<(), DhtCliError>(());
                                }
                            }
                        }
                    }
                }
                Ok(())
            };
            match tokio::time::timeout_at(end, fut).await {
                Ok(r) => r?,
                Err(_) => {
                    if count.is_some() {
                        return Err(DhtCliError::Timeout);
                    }
                }
            }
            Ok(EXIT_OK)
        }
        DhtCommand::Info { proxy } => {
            let info = ProxyClient::new(&proxy)?.info().await?;
            let good = ["ipv4", "ipv6"]
                .iter()
                .map(|f| info[f]["good"].as_u64().unwrap_or(0))
                .sum::<u64>();
            output::result(&json!({
                "node_id": info["node_id"],
                "connected": good > 0,
                "good_nodes": good,
                "public_ip": info["public_ip"],
            }));
            Ok(EXIT_OK)
        }
        DhtCommand::Subscribe {
            proxy,
            key,
            sub,
            refresh,
        } => {
            let k = parse_key(&key);
            let s = Subscription {
                token: sub.token,
                client_id: sub.client_id,
                session_id: sub.session_id.unwrap_or_else(session_id),
                platform: sub.platform,
                topic: sub.topic,
            };
            let lines = ProxyClient::new(&proxy)?
                .subscribe(&k.to_hex(), &s, refresh)
                .await?;
            output::result(
                &json!({"event": "subscribed", "key": k.to_hex(), "session_id": s.session_id, "values": lines}),
            );
            Ok(EXIT_OK)
        }
        DhtCommand::Unsubscribe {
            proxy,
            key,
            token,
            client_id,
        } => {
            let k = parse_key(&key);
            ProxyClient::new(&proxy)?
                .unsubscribe(&k.to_hex(), &token, &client_id)
                .await?;
            output::result(&json!({"event": "unsubscribed", "key": k.to_hex()}));
            Ok(EXIT_OK)
        }
    }
}

/// Runs a `push` command.
pub async fn run_push(cmd: PushCommand) -> Result<i32, DhtCliError> {
    match cmd {
        PushCommand::Listen {
            proxy,
            keys,
            client_id,
            listen,
            platform,
            token,
            fetch,
            count,
            timeout,
            source_ip,
        } => {
            let client = ProxyClient::with_source(&proxy, source_ip)?;
            let mut rx = PushReceiver::start(listen).await?;
            let sid = session_id();
            let mut path = [0u8; 8];
            rand::rngs::StdRng::from_os_rng().fill_bytes(&mut path);
            let token = match (platform.as_str(), token) {
                (_, Some(t)) => t,
                ("unifiedpush", None) => rx.endpoint(&format!("up/{}", hex::encode(path))),
                _ => return Err(DhtCliError::Usage("--token is required for android/ios")),
            };
            let sub = Subscription {
                token: token.clone(),
                client_id: client_id.clone(),
                session_id: sid.clone(),
                platform,
                topic: String::new(),
            };
            let hashes: Vec<InfoHash> = keys.iter().map(|k| parse_key(k)).collect();
            for h in &hashes {
                client.subscribe(&h.to_hex(), &sub, false).await?;
            }
            output::result(&json!({
                "event": "subscribed",
                "keys": hashes.iter().map(InfoHash::to_hex).collect::<Vec<_>>(),
                "receiver": rx.addr.to_string(),
                "token": token,
                "session_id": sid,
            }));
            let end = deadline(timeout);
            let max = count.unwrap_or(usize::MAX);
            let mut seen = 0usize;
            let outcome = loop {
                let push = match tokio::time::timeout_at(end, rx.next()).await {
                    Ok(Some(p)) => p,
                    Ok(None) => break Err(DhtCliError::Io(std::io::ErrorKind::BrokenPipe)),
                    Err(_) => {
                        break if count.is_some() {
                            Err(DhtCliError::Timeout)
                        } else {
                            Ok(())
                        };
                    }
                };
                let d = &push.data;
                if d.get("s").and_then(Json::as_str).is_some_and(|s| s != sid) {
                    continue; // another session's push, like the reference client
                }
                output::result(
                    &json!({"event": "push", "via": push.via, "priority": push.priority, "data": d}),
                );
                let Some(key) = d.get("key").and_then(Json::as_str) else {
                    continue;
                };
                seen += 1;
                if fetch && d.get("exp").is_none() {
                    let values = client.get(key).await?;
                    output::result(&json!({
                        "event": "fetched",
                        "key": key,
                        "count": values.len(),
                        "values": values.into_iter().map(with_text).collect::<Vec<_>>(),
                    }));
                }
                if seen >= max {
                    break Ok(());
                }
            };
            for h in &hashes {
                let _ = client.unsubscribe(&h.to_hex(), &token, &client_id).await;
            }
            outcome?;
            Ok(EXIT_OK)
        }
        PushCommand::Receive {
            listen,
            count,
            timeout,
        } => {
            let mut rx = PushReceiver::start(listen).await?;
            output::result(&json!({"event": "receiving", "receiver": rx.addr.to_string()}));
            let end = deadline(timeout);
            let max = count.unwrap_or(usize::MAX);
            let mut seen = 0;
            while seen < max {
                match tokio::time::timeout_at(end, rx.next()).await {
                    Ok(Some(p)) => {
                        output::result(
                            &json!({"event": "push", "via": p.via, "tokens": p.tokens, "priority": p.priority, "data": p.data}),
                        );
                        seen += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        if count.is_some() {
                            return Err(DhtCliError::Timeout);
                        }
                        break;
                    }
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// Runs an `identity` command.
pub async fn run_identity(cmd: IdentityCommand) -> Result<i32, DhtCliError> {
    let (path, bits, must_create) = match cmd {
        IdentityCommand::New { identity, bits } => (identity, bits, true),
        IdentityCommand::Show { identity } => (identity, 4096, false),
    };
    let bits = match bits {
        2048 => KeyBits::Rsa2048,
        3072 => KeyBits::Rsa3072,
        4096 => KeyBits::Rsa4096,
        _ => return Err(DhtCliError::Usage("--bits must be 2048, 3072 or 4096")),
    };
    if must_create && path.exists() {
        return Err(DhtCliError::Usage("the identity file already exists"));
    }
    if !must_create && !path.exists() {
        return Err(DhtCliError::Usage("the identity file does not exist"));
    }
    if must_create {
        output::progress("generating the RSA key (RSA-4096 takes a few seconds)");
    }
    let (id, generated) = crate::name::load_or_generate_identity(&path, bits)?;
    let hex_id = id.id().to_hex();
    output::result(&json!({
        "jami_id": hex_id,
        "bits": id.public_key().bits(),
        "generated": generated,
        "inbox_key": InfoHash::get(format!("inbox:{hex_id}")).to_hex(),
        "account_key": hex_id,
    }));
    Ok(EXIT_OK)
}
