//! The `dht-node` binary: parse → resolve → validate (exit 64) → log → bind → run.

#![allow(clippy::print_stderr, clippy::disallowed_macros)]

use std::time::Duration;

use clap::Parser as _;
use prometheus_client::registry::Registry;
use waypost_dht_node::metrics::Metrics;
use waypost_dht_node::{NodeConfig, NodeLayer};
use waypost_net::admin::Admin;
use waypost_net::config::{Cli, exit_config_ok, exit_invalid, resolve};
use waypost_net::shutdown::Shutdown;

mod console;

const PROGRAM: &str = "dht-node";

fn main() {
    let cli = match Cli::<NodeLayer>::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let msg = e.to_string();
            exit_invalid(PROGRAM, &msg.lines().next().unwrap_or("invalid arguments"))
        }
    };
    let cfg: NodeConfig = match resolve(cli.config.as_deref(), cli.layer) {
        Ok(c) => c,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    let rt_cfg = match waypost_dht_node::validate(&cfg) {
        Ok(s) => s,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    if cli.check_config {
        exit_config_ok(PROGRAM);
    }
    waypost_net::logging::init(cli.log_level.unwrap_or_default());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot start the runtime: {}", e.kind());
            std::process::exit(waypost_net::EX_SOFTWARE);
        }
    };
    let code = rt.block_on(async move {
        let sockets = match waypost_dht_node::bind_sockets(&rt_cfg.bind) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{PROGRAM}: {e}");
                return waypost_net::EX_SOFTWARE;
            }
        };
        let shutdown = Shutdown::new();
        tokio::spawn(shutdown.clone().on_signals());
        let mut registry = Registry::with_prefix("waypost");
        let metrics = Metrics::register(&mut registry);
        let admin = Admin::new(registry);
        if let Some(addr) = rt_cfg.admin.addr() {
            match waypost_net::listen::bind_tcp(
                addr,
                &waypost_net::listen::SocketOptions::new("admin"),
            ) {
                Ok(l) => {
                    shutdown.spawn(admin.clone().serve(l, shutdown.clone()));
                }
                Err(e) => {
                    eprintln!("{PROGRAM}: {e}");
                    return waypost_net::EX_SOFTWARE;
                }
            }
        }
        let interactive = rt_cfg.interactive;
        let node =
            match waypost_dht_node::run(rt_cfg, sockets, shutdown.clone(), Some(metrics)).await {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("{PROGRAM}: {e}");
                    return waypost_net::EX_SOFTWARE;
                }
            };
        admin.set_ready(true);
        if interactive {
            console::run(node.clone(), shutdown.clone()).await;
            shutdown.trigger();
        } else {
            shutdown.cancelled().await;
        }
        drop(node);
        shutdown.drain(Duration::from_secs(5)).await;
        0
    });
    std::process::exit(code);
}
