//! The only place the client prints: one JSON line per result on standard output.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_macros)]

use serde_json::Value;

/// Prints one JSON object on standard output.
pub fn result(v: &Value) {
    println!("{v}");
}

/// Prints one error line on standard error.
pub fn error(program: &str, msg: &dyn std::fmt::Display) {
    eprintln!("{program}: {msg}");
}
