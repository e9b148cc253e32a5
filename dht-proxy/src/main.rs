//! The `dht-proxy` binary: parse CLI → resolve config → validate (exit 64) → init logging →
//! bind → start the DHT node → serve the proxy.

#![allow(clippy::print_stderr, clippy::disallowed_macros)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use prometheus_client::registry::Registry;
use waypost_dht_proxy::metrics::Metrics;
use waypost_dht_proxy::node::NodeBackend;
use waypost_dht_proxy::{Listeners, Proxy, ProxyConfig, ProxyLayer, ProxyOptions};
use waypost_net::admin::Admin;
use waypost_net::config::{AdminAddr, Cli, exit_config_ok, exit_invalid, resolve};
use waypost_net::listen::{SocketOptions, bind_tcp};
use waypost_net::shutdown::Shutdown;
use waypost_net::tls::ReloadableTls;

const PROGRAM: &str = "dht-proxy";

fn fail(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("{PROGRAM}: {e}");
    waypost_net::EX_SOFTWARE
}

fn main() {
    let cli = match Cli::<ProxyLayer>::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            exit_invalid(PROGRAM, &first.trim_start_matches("error: "))
        }
    };
    let cfg: ProxyConfig = match resolve(cli.config.as_deref(), cli.layer) {
        Ok(c) => c,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    let opts = match ProxyOptions::from_config(&cfg) {
        Ok(o) => o,
        Err(e) => exit_invalid(PROGRAM, &e),
    };
    // TLS material is part of the configuration: unreadable files are a configuration error.
    let tls = match cfg.tls_listen {
        AdminAddr::Off => None,
        AdminAddr::At(_) => match ReloadableTls::load(&cfg.cert, &cfg.key, &[b"http/1.1"]) {
            Ok(t) => Some(t),
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
    let code = runtime.block_on(run(cfg, opts, tls));
    std::process::exit(code);
}

async fn run(cfg: ProxyConfig, opts: ProxyOptions, tls: Option<ReloadableTls>) -> i32 {
    let tcp_opts = |label| SocketOptions {
        buffer: 0,
        ..SocketOptions::new(label)
    };
    let http = match bind_tcp(cfg.listen, &tcp_opts("http")) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let tls = match (cfg.tls_listen, tls) {
        (AdminAddr::At(addr), Some(tls)) => match bind_tcp(addr, &tcp_opts("https")) {
            Ok(l) => Some((l, tls)),
            Err(e) => return fail(&e),
        },
        _ => None,
    };
    let admin_listener = match cfg.admin_listen.addr() {
        Some(a) => match bind_tcp(a, &tcp_opts("admin")) {
            Ok(l) => Some(l),
            Err(e) => return fail(&e),
        },
        None => None,
    };
    let ips = if cfg.dht_bind.is_empty() {
        vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    } else {
        cfg.dht_bind.clone()
    };
    let udp_addrs: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, cfg.port))
        .collect();
    let sockets = match waypost_dht_node::bind_sockets(&udp_addrs) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };

    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    let mut registry = Registry::with_prefix("waypost_dht_proxy");
    let metrics = Metrics::default();
    metrics.register(&mut registry);
    let node_metrics =
        waypost_dht_node::metrics::Metrics::register(registry.sub_registry_with_prefix("node"));
    let admin = Admin::new(registry);
    if let Some(l) = admin_listener {
        shutdown.spawn(admin.clone().serve(l, shutdown.clone()));
    }
    #[cfg(unix)]
    if let Some((_, t)) = &tls {
        tokio::spawn(t.clone().reload_on_sighup(shutdown.clone()));
    }

    let bootstrap = match waypost_dht_node::resolve_bootstrap(&cfg.bootstrap).await {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    let node_opts = waypost_dht_node::NodeOptions {
        network: cfg.network,
        bootstrap,
        ..waypost_dht_node::NodeOptions::default()
    };
    let node = match waypost_dht_node::spawn(node_opts, sockets, &shutdown, Some(node_metrics)) {
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    let proxy = match Proxy::new(Arc::new(NodeBackend::new(node)), opts, metrics, &shutdown) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    admin.set_ready(true);
    tracing::info!("dht proxy started");
    let res = waypost_dht_proxy::serve(
        proxy,
        Listeners {
            http: Some(http),
            tls,
        },
        shutdown.clone(),
    )
    .await;
    shutdown.trigger();
    shutdown.drain(Duration::from_secs(5)).await;
    match res {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}
