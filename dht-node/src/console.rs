//! Line commands on standard input, like `dhtnode`'s: the operator's own output channel.
//!
//! - `g KEY` get, `p KEY TEXT` put (text/plain), `pp KEY TEXT` permanent put, `l KEY` listen,
//!   `ll` node status, `q` quit. A KEY of 40 hex digits is used as is, anything else is hashed.

#![allow(clippy::print_stdout, clippy::disallowed_macros)]

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use waypost_dht_node::NodeHandle;
use waypost_net::shutdown::Shutdown;
use waypost_protocol::dht::{InfoHash, Query, Value};

fn show(v: &Value) -> String {
    if v.is_encrypted() {
        return format!("Value[id:{:x} encrypted {} bytes]", v.id, v.cypher.len());
    }
    let data = match std::str::from_utf8(&v.data) {
        Ok(s) if v.data.len() <= 256 => format!("\"{s}\""),
        _ => format!("{} bytes", v.data.len()),
    };
    let signed = if v.is_signed() { " signed" } else { "" };
    format!(
        "Value[id:{:x} type:{}{signed} data({}):{data}]",
        v.id, v.vtype, v.user_type
    )
}

pub(crate) async fn run(node: NodeHandle, shutdown: Shutdown) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    println!("node id {}", node.node_id().to_hex());
    let mut listens = Vec::new();
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = lines.next_line() => match l {
                Ok(Some(l)) => l,
                _ => {
                    // Standard input closed: keep serving until a signal.
                    shutdown.cancelled().await;
                    return;
                }
            },
        };
        let mut parts = line.trim().splitn(3, ' ');
        let cmd = parts.next().unwrap_or("");
        let key = parts.next().map(InfoHash::from_user_key);
        let rest = parts.next().unwrap_or("");
        let t0 = std::time::Instant::now();
        match (cmd, key) {
            ("q" | "x", _) => return,
            ("ll", _) => {
                let s = node.status();
                println!(
                    "IPv4 good {} dubious {} | IPv6 good {} dubious {} | values {} bytes {}",
                    s.ipv4.good,
                    s.ipv4.dubious,
                    s.ipv6.good,
                    s.ipv6.dubious,
                    s.stored_values,
                    s.stored_bytes
                );
            }
            ("g", Some(k)) => match node.get_all(k, Query::all()).await {
                Ok(vs) => {
                    for v in &vs {
                        println!("Get: found {}", show(v));
                    }
                    println!(
                        "Get: done, {} values, took {:.2} ms",
                        vs.len(),
                        t0.elapsed().as_secs_f64() * 1000.0
                    );
                }
                Err(e) => println!("Get: {e}"),
            },
            ("p" | "pp", Some(k)) => {
                let mut v = Value::new(rest.as_bytes().to_vec());
                v.user_type = "text/plain".into();
                match node.put(k, v, cmd == "pp").await {
                    Ok(o) => println!(
                        "Put: {} (id {:x})",
                        if o.stored { "success" } else { "failure" },
                        o.id
                    ),
                    Err(e) => println!("Put: {e}"),
                }
            }
            ("l", Some(k)) => match node.listen(k, Query::all()) {
                Ok(l) => {
                    let waypost_dht_node::Listen { mut events, guard } = l;
                    listens.push(guard);
                    tokio::spawn(async move {
                        while let Some(ev) = events.recv().await {
                            for v in &ev.values {
                                println!(
                                    "Listen: {} {}",
                                    if ev.expired { "expired" } else { "found" },
                                    show(v)
                                );
                            }
                        }
                    });
                }
                Err(e) => println!("Listen: {e}"),
            },
            ("", _) => {}
            _ => println!("commands: g KEY | p KEY TEXT | pp KEY TEXT | l KEY | ll | q"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
