//! The proxy's errors. Messages never carry addresses, keys or tokens.

/// An error of the DHT proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The persistent store failed.
    #[error("state store error: {0}")]
    Store(&'static str),
    /// Shared plumbing failed (bind, TLS material).
    #[error(transparent)]
    Net(#[from] waypost_net::NetError),
    /// The DHT node could not be started.
    #[error("dht node error: {0}")]
    Node(String),
}
