//! STUN/TURN relay over UDP, TCP and TLS with RFC 6062.
//!
//! Not implemented yet: see the project's open issues.
