//! The only place the client prints. Results go to standard output: human-readable `key: value`
//! lines by default, one JSON object per line with `--json`. Progress and errors go to standard
//! error (progress only in human mode).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_macros)]

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

static JSON: AtomicBool = AtomicBool::new(false);

/// Selects JSON output (`--json`).
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Whether JSON output is selected.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Renders one result for humans.
pub fn human(v: &Value) -> String {
    let Value::Object(m) = v else {
        return scalar(v);
    };
    if let Some(ev) = m.get("event") {
        let mut line = scalar(ev);
        for (k, v) in m.iter().filter(|(k, _)| *k != "event") {
            line.push_str(&format!(" {k}={}", scalar(v)));
        }
        return line;
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {}", scalar(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints one result (an object) on standard output.
pub fn result(v: &Value) {
    if is_json() {
        println!("{v}");
    } else {
        println!("{}", human(v));
    }
}

/// Prints a progress line on standard error (human mode only).
pub fn progress(msg: &str) {
    if !is_json() {
        eprintln!("… {msg}");
    }
}

/// A progress reporter for byte transfers: prints at every 25 %.
pub fn bytes_progress(label: &'static str) -> impl FnMut(u64, u64) {
    let mut last = 0u64;
    move |done, total| {
        if total == 0 {
            return;
        }
        let pct = (done.min(total) * 100 / total) / 25 * 25;
        if pct > last {
            last = pct;
            progress(&format!("{label}: {pct}% of {total} bytes"));
        }
    }
}

/// Prints one error line on standard error.
pub fn error(program: &str, msg: &dyn std::fmt::Display) {
    eprintln!("{program}: {msg}");
}
