//! The adapter from [`DhtBackend`] to our DHT node ([`waypost_dht_node::NodeHandle`]).

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use waypost_dht_node::NodeHandle;
use waypost_protocol::dht::{InfoHash, Query};

use crate::backend::{DhtBackend, FamilyStatus, Listen, ListenEvent, NodeStatus};
use crate::convert::{from_dht, to_dht};
use crate::value::{Key, Value};

/// A running DHT node as the proxy's backend.
#[derive(Clone)]
pub struct NodeBackend {
    node: NodeHandle,
}

impl NodeBackend {
    /// Wraps a node handle.
    pub fn new(node: NodeHandle) -> Self {
        Self { node }
    }

    /// The node handle.
    pub fn handle(&self) -> &NodeHandle {
        &self.node
    }
}

/// Aborts the forwarding task (and so drops, i.e. cancels, the node's listen).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DhtBackend for NodeBackend {
    fn get(&self, key: Key) -> BoxStream<'static, Vec<Value>> {
        match self.node.get(InfoHash(key), Query::all()) {
            Ok(s) => futures_util::stream::unfold(s, |mut s| async move {
                let batch = s.next().await?;
                Some((batch.iter().map(|v| from_dht(v)).collect::<Vec<_>>(), s))
            })
            .boxed(),
            Err(_) => futures_util::stream::empty().boxed(),
        }
    }

    fn put(&self, key: Key, value: Value, permanent: bool) -> BoxFuture<'static, bool> {
        let node = self.node.clone();
        let v = to_dht(value);
        async move {
            node.put(InfoHash(key), v, permanent)
                .await
                .is_ok_and(|o| o.stored)
        }
        .boxed()
    }

    fn cancel_put(&self, key: Key, id: u64) {
        let _ = self.node.cancel_put(InfoHash(key), id);
    }

    fn listen(&self, key: Key) -> BoxFuture<'static, Option<Listen>> {
        let node = self.node.clone();
        async move {
            let l = node.listen(InfoHash(key), Query::all()).ok()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                // Move the whole listen (not just `events`): its guard cancels it when dropped.
                let mut l = l;
                while let Some(ev) = l.events.recv().await {
                    let values = ev.values.iter().map(|v| from_dht(v)).collect();
                    if tx
                        .send(ListenEvent {
                            values,
                            expired: ev.expired,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Some(Listen {
                events: rx,
                guard: Box::new(AbortOnDrop(task)),
            })
        }
        .boxed()
    }

    fn status(&self) -> NodeStatus {
        let s = self.node.status();
        let fam = |f: &waypost_dht_node::FamilyStatus| FamilyStatus {
            good: f.good,
            dubious: f.dubious,
            incoming: 0,
            table_depth: f.table_depth,
        };
        NodeStatus {
            node_id: s.node_id.0,
            ipv4: fam(&s.ipv4),
            ipv6: fam(&s.ipv6),
            ops: s.ops,
        }
    }
}
