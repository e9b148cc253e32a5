//! The `dht-proxy` binary (not implemented yet).

#![allow(clippy::print_stderr, clippy::disallowed_macros)]

fn main() {
    eprintln!("not implemented yet");
    std::process::exit(70);
}
