//! The client API of a running node: [`NodeHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};
use waypost_protocol::dht::{InfoHash, Query, Value};

use crate::NodeError;

/// The node's state (routing tables, storage), refreshed about once a second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Our node id.
    pub node_id: InfoHash,
    /// IPv4 routing table.
    pub ipv4: FamilyStatus,
    /// IPv6 routing table.
    pub ipv6: FamilyStatus,
    /// Running client operations (gets, puts, listens).
    pub ops: u64,
    /// Values stored by this node.
    pub stored_values: u64,
    /// Bytes stored by this node.
    pub stored_bytes: u64,
    /// Remote listeners registered on this node.
    pub remote_listeners: u64,
    /// Our IPv4 address as last reported by a peer, if any.
    pub public_ipv4: Option<std::net::IpAddr>,
    /// Our IPv6 address as last reported by a peer, if any.
    pub public_ipv6: Option<std::net::IpAddr>,
}

/// Routing-table counters of one family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyStatus {
    /// Good nodes.
    pub good: u64,
    /// Dubious nodes (not heard from recently).
    pub dubious: u64,
    /// Expired nodes still in the table.
    pub expired: u64,
    /// Routing table depth (network size estimate is 8 × 2^depth).
    pub table_depth: u32,
}

/// One notification of a listen.
#[derive(Clone, Debug)]
pub struct ListenEvent {
    /// Values concerned.
    pub values: Vec<Arc<Value>>,
    /// `true` when these values expired (or were removed).
    pub expired: bool,
}

/// Result of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// The value id (assigned if the value had id 0).
    pub id: u64,
    /// At least one remote node acknowledged the put.
    pub stored: bool,
}

pub(crate) enum Command {
    Get {
        key: InfoHash,
        query: Query,
        tx: mpsc::UnboundedSender<GetItem>,
    },
    Put {
        key: InfoHash,
        value: Value,
        permanent: bool,
        tx: oneshot::Sender<PutOutcome>,
    },
    CancelPut {
        key: InfoHash,
        id: u64,
    },
    Listen {
        token: u64,
        key: InfoHash,
        query: Query,
        tx: mpsc::UnboundedSender<ListenEvent>,
    },
    CancelListen {
        token: u64,
    },
    Bootstrap {
        addrs: Vec<std::net::SocketAddr>,
    },
}

pub(crate) enum GetItem {
    Values(Vec<Arc<Value>>),
    Done(bool),
}

/// A cloneable handle on a running node; every method talks to the node's driver task over a
/// channel. Methods fail with [`NodeError::Stopped`] once the node has shut down.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) tx: mpsc::UnboundedSender<Command>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    pub(crate) next_token: Arc<AtomicU64>,
    pub(crate) node_id: InfoHash,
}

impl NodeHandle {
    /// Our node id.
    pub fn node_id(&self) -> InfoHash {
        self.node_id
    }

    /// The latest status snapshot (cheap, never blocks).
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Waits until at least one routing table has a good node, or `timeout`.
    pub async fn wait_connected(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.status.clone();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.ipv4.good + s.ipv6.good > 0 {
                        return true;
                    }
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.unwrap_or(false)
    }

    /// Starts a one-shot get. Batches of values arrive on the stream until the search ends.
    pub fn get(&self, key: InfoHash, query: Query) -> Result<GetStream, NodeError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx
            .send(Command::Get { key, query, tx })
            .map_err(|_| NodeError::Stopped)?;
        Ok(GetStream { rx, ok: None })
    }

    /// Gets every value at `key` (matching `query`), waiting for the search to end.
    pub async fn get_all(&self, key: InfoHash, query: Query) -> Result<Vec<Arc<Value>>, NodeError> {
        let mut s = self.get(key, query)?;
        let mut out = Vec::new();
        while let Some(batch) = s.next().await {
            out.extend(batch);
        }
        Ok(out)
    }

    /// Puts a value (id 0 ⇒ a random id is assigned). Resolves when the put completed. A
    /// permanent put is kept alive (refreshed before expiry) until [`Self::cancel_put`].
    pub async fn put(
        &self,
        key: InfoHash,
        value: Value,
        permanent: bool,
    ) -> Result<PutOutcome, NodeError> {
        if value.size() > waypost_protocol::dht::value::MAX_VALUE_SIZE {
            return Err(NodeError::ValueTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Put {
                key,
                value,
                permanent,
                tx,
            })
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Stops refreshing a permanent put.
    pub fn cancel_put(&self, key: InfoHash, id: u64) -> Result<(), NodeError> {
        self.tx
            .send(Command::CancelPut { key, id })
            .map_err(|_| NodeError::Stopped)
    }

    /// Starts a listen: current values first, then changes and expirations. Dropping the
    /// returned [`Listen`] cancels it.
    pub fn listen(&self, key: InfoHash, query: Query) -> Result<Listen, NodeError> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx
            .send(Command::Listen {
                token,
                key,
                query,
                tx,
            })
            .map_err(|_| NodeError::Stopped)?;
        Ok(Listen {
            events: rx,
            guard: ListenGuard {
                token,
                tx: self.tx.clone(),
            },
        })
    }

    /// Adds bootstrap nodes at run time.
    pub fn bootstrap(&self, addrs: Vec<std::net::SocketAddr>) -> Result<(), NodeError> {
        self.tx
            .send(Command::Bootstrap { addrs })
            .map_err(|_| NodeError::Stopped)
    }
}

/// Values of a one-shot get.
pub struct GetStream {
    rx: mpsc::UnboundedReceiver<GetItem>,
    ok: Option<bool>,
}

impl GetStream {
    /// The next batch, or `None` when the get is over.
    pub async fn next(&mut self) -> Option<Vec<Arc<Value>>> {
        if self.ok.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(GetItem::Values(v)) => Some(v),
            Some(GetItem::Done(ok)) => {
                self.ok = Some(ok);
                None
            }
            None => {
                self.ok = Some(false);
                None
            }
        }
    }

    /// After the end: whether the search reached any node.
    pub fn succeeded(&self) -> Option<bool> {
        self.ok
    }
}

/// A running listen.
pub struct Listen {
    /// Notifications.
    pub events: mpsc::UnboundedReceiver<ListenEvent>,
    /// Cancels the listen when dropped.
    pub guard: ListenGuard,
}

/// Cancels its listen on drop.
pub struct ListenGuard {
    token: u64,
    tx: mpsc::UnboundedSender<Command>,
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::CancelListen { token: self.token });
    }
}
