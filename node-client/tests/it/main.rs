//! Integration tests of every `node-client` subcommand, against our real servers started
//! in-process on loopback.

#![allow(unreachable_pub)]

mod common;
mod dht;
mod name;
mod turn;
