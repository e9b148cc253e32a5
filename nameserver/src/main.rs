//! The `nameserver` binary: parse CLI → resolve config → validate (exit 64) → init logging →
//! open store → bind → run.

#![allow(clippy::print_stderr, clippy::disallowed_macros)]

use clap::Parser as _;
use prometheus_client::registry::Registry;
use waypost_nameserver::{Metrics, NameserverConfig, NameserverLayer, open_store, run_with_tls};
use waypost_net::config::{Cli, exit_config_ok, exit_invalid, resolve};
use waypost_net::listen::{SocketOptions, bind_tcp};
use waypost_net::shutdown::Shutdown;
use waypost_net::tls::ReloadableTls;

const PROGRAM: &str = "nameserver";

fn main() {
    let cli = match Cli::<NameserverLayer>::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            exit_invalid(PROGRAM, &first.trim_start_matches("error: "))
        }
    };
    let cfg: NameserverConfig = match resolve(cli.config.as_deref(), cli.layer) {
        Ok(c) => c,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    let settings = match cfg.validate() {
        Ok(s) => s,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    // TLS files are part of the configuration: checked before anything is bound.
    let tls_files = match &settings.tls {
        None => None,
        Some(t) => match ReloadableTls::load(&t.cert, &t.key, &[b"http/1.1"]) {
            Ok(r) => Some(r),
            Err(e) => exit_invalid(PROGRAM, &e),
        },
    };
    if cli.check_config {
        exit_config_ok(PROGRAM);
    }
    waypost_net::logging::init(cli.log_level.unwrap_or_default());

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot start the runtime: {:?}", e.kind());
            std::process::exit(waypost_net::EX_SOFTWARE);
        }
    };
    let code = runtime.block_on(async move {
        let store = match open_store(&settings) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{PROGRAM}: {e}");
                return waypost_net::EX_SOFTWARE;
            }
        };
        let opts = SocketOptions {
            buffer: 0,
            ..SocketOptions::new("http")
        };
        let listener = match bind_tcp(settings.listen, &opts) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{PROGRAM}: {e}");
                return waypost_net::EX_SOFTWARE;
            }
        };
        let tls = match (&settings.tls, tls_files) {
            (Some(t), Some(reloadable)) => {
                let tls_opts = SocketOptions {
                    buffer: 0,
                    ..SocketOptions::new("https")
                };
                match bind_tcp(t.listen, &tls_opts) {
                    Ok(l) => Some((l, reloadable)),
                    Err(e) => {
                        eprintln!("{PROGRAM}: {e}");
                        return waypost_net::EX_SOFTWARE;
                    }
                }
            }
            _ => None,
        };
        let mut registry = Registry::with_prefix("waypost");
        let metrics = Metrics::register(&mut registry);
        let admin = waypost_net::admin::Admin::new(registry);
        let shutdown = Shutdown::new();
        if let Some(addr) = settings.admin_listen.addr() {
            let admin_opts = SocketOptions {
                buffer: 0,
                ..SocketOptions::new("admin")
            };
            match bind_tcp(addr, &admin_opts) {
                Ok(l) => {
                    shutdown.spawn(admin.clone().serve(l, shutdown.clone()));
                }
                Err(e) => {
                    eprintln!("{PROGRAM}: {e}");
                    return waypost_net::EX_SOFTWARE;
                }
            }
        }
        tokio::spawn(shutdown.clone().on_signals());
        #[cfg(unix)]
        if let Some((_, t)) = &tls {
            shutdown.spawn(t.clone().reload_on_sighup(shutdown.clone()));
        }
        admin.set_ready(true);
        tracing::info!("name server started");
        match run_with_tls(settings, listener, tls, store, metrics, shutdown).await {
            Ok(()) => {
                tracing::info!("name server stopped");
                0
            }
            Err(e) => {
                eprintln!("{PROGRAM}: {e}");
                waypost_net::EX_SOFTWARE
            }
        }
    });
    std::process::exit(code);
}
