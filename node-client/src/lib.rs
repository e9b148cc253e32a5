//! Reference peer client for the Waypost suite.
//!
//! A library with one module per service, plus the clap command line in [`cli`] that the
//! `node-client` binary runs. Other services add a module and a subcommand.
//!
//! - [`name`]: the Jami name server client (register, lookup, reverse lookup).

pub mod cli;
pub mod dht;
pub mod dht_cli;
pub mod name;
pub mod output;
pub mod proxy;
pub mod push;
pub mod transfer;
pub mod turn;
pub mod turn_cli;
