//! The backend the shared conformance suite (`conformance.rs`) runs against at the crate root:
//! the embedded in-memory store. `interop_eth` includes the same suite with a chain backend.

use std::sync::Arc;

use waypost_nameserver::{MemoryStore, Settings};

use crate::common::TestServer;

/// A server with default test settings and an empty store.
pub(crate) fn server() -> TestServer {
    TestServer::memory()
}

/// A server with `settings` and an empty store.
pub(crate) fn server_with(settings: Settings) -> TestServer {
    TestServer::start(settings, Arc::new(MemoryStore::new()))
}
