//! The `turn-server` binary: parse → resolve → validate (exit 64) → log → bind → run.

#![allow(clippy::print_stderr, clippy::disallowed_macros)]

use clap::Parser;
use prometheus_client::registry::Registry;
use waypost_net::admin::Admin;
use waypost_net::config::{Cli, exit_config_ok, exit_invalid, resolve};
use waypost_net::shutdown::Shutdown;
use waypost_turn_server::{Listeners, TurnConfig, TurnLayer};

const PROGRAM: &str = "turn-server";

fn main() {
    let cli = Cli::<TurnLayer>::parse();
    let cfg: TurnConfig = match resolve(cli.config.as_deref(), cli.layer) {
        Ok(c) => c,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    let settings = match cfg.validate() {
        Ok(s) => s,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    if cli.check_config {
        exit_config_ok(PROGRAM);
    }
    waypost_net::logging::init(cli.log_level.unwrap_or_default());
    // The control plane (accept loops, admin, expiry) runs here; the data plane runs on one
    // current-thread runtime per shard (see `run`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot start the runtime: {}", e.kind());
            std::process::exit(waypost_net::EX_SOFTWARE);
        }
    };
    let code = rt.block_on(async move {
        let listeners = match Listeners::bind(&settings) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{PROGRAM}: {e}");
                return waypost_net::EX_SOFTWARE;
            }
        };
        let shutdown = Shutdown::new();
        tokio::spawn(shutdown.clone().on_signals());
        let admin = Admin::new(Registry::with_prefix("waypost"));
        match waypost_turn_server::run(settings, listeners, admin, shutdown).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{PROGRAM}: {e}");
                waypost_net::EX_SOFTWARE
            }
        }
    });
    std::process::exit(code);
}
