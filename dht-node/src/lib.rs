//! OpenDHT-compatible DHT node and bootstrap node.
//!
//! Not implemented yet: see the project's open issues.
