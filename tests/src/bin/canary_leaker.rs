//! A deliberately small UDP server that exists to test the test tooling.
//!
//! - With `--leak none` it behaves like a logless server: it answers every datagram with `ok`,
//!   counts it, and logs only allow-listed fields.
//! - With `--leak log`, `--leak file` or `--leak field` it leaks the sender's address through a
//!   log message, a file in its data directory, or a non-allow-listed log field. The privacy canary
//!   must catch the first two and the logging policy must drop the third.
//!
//! It also exercises the shared configuration layering (`--dump-config` prints the resolved
//! configuration), so the foundation's tests run a real process with real flags, environment and
//! files.

#![allow(clippy::print_stdout, clippy::disallowed_macros)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use waypost_net::config::{self, AdminAddr};
use waypost_net::listen::{SocketOptions, bind_tcp, bind_udp};
use waypost_net::shutdown::Shutdown;

waypost_net::layered_config! {
    /// The leaker's configuration.
    pub struct LeakerConfig / LeakerLayer {
        /// UDP address to listen on.
        #[arg(long, env = "WAYPOST_LEAKER_LISTEN")]
        pub listen: SocketAddr = "127.0.0.1:4999".parse().expect("valid default"),
        /// Data directory.
        #[arg(long, env = "WAYPOST_LEAKER_DATA_DIR")]
        pub data_dir: PathBuf = PathBuf::from("./data"),
        /// How to leak: none, log, file, field.
        #[arg(long, env = "WAYPOST_LEAKER_LEAK")]
        pub leak: String = "none".to_owned(),
        /// Largest datagram accepted (must be 1..=65535).
        #[arg(long, env = "WAYPOST_LEAKER_MAX_DATAGRAM")]
        pub max_datagram: u32 = 1500,
        /// A label used only to show precedence in tests.
        #[arg(long, env = "WAYPOST_LEAKER_GREETING")]
        pub greeting: String = "default".to_owned(),
        /// Admin listener (`off` or an address).
        #[arg(long, env = "WAYPOST_LEAKER_ADMIN_LISTEN")]
        pub admin_listen: AdminAddr = AdminAddr::Off,
        /// Print the resolved configuration and exit.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        pub dump_config: bool = false,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Leak {
    None,
    Log,
    File,
    Field,
}

fn validate(c: LeakerConfig) -> Result<(LeakerConfig, Leak), String> {
    let leak = match c.leak.as_str() {
        "none" => Leak::None,
        "log" => Leak::Log,
        "file" => Leak::File,
        "field" => Leak::Field,
        _ => return Err("leak must be one of none, log, file, field".into()),
    };
    if c.max_datagram == 0 || c.max_datagram > 65_535 {
        return Err("max-datagram must be between 1 and 65535".into());
    }
    config::check_admin_addr(c.admin_listen, false).map_err(|e| e.to_string())?;
    Ok((c, leak))
}

fn main() {
    let ((cfg, leak), level) =
        config::load_or_exit::<LeakerConfig, LeakerLayer, _, _>("canary-leaker", validate);
    if cfg.dump_config {
        println!("listen={}", cfg.listen);
        println!("greeting={}", cfg.greeting);
        println!("max-datagram={}", cfg.max_datagram);
        return;
    }
    waypost_net::logging::init(level.unwrap_or_default());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => config::exit_invalid("canary-leaker", &e),
    };
    let code = rt.block_on(run(cfg, leak));
    std::process::exit(code);
}

async fn run(cfg: LeakerConfig, leak: Leak) -> i32 {
    let sock = match bind_udp(cfg.listen, &SocketOptions::new("udp")) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return waypost_net::EX_SOFTWARE;
        }
    };
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    if let Some(addr) = cfg.admin_listen.addr() {
        let admin =
            waypost_net::admin::Admin::new(prometheus_client::registry::Registry::default());
        admin.set_ready(true);
        match bind_tcp(addr, &SocketOptions::new("admin")) {
            Ok(l) => {
                shutdown.spawn(admin.serve(l, shutdown.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return waypost_net::EX_SOFTWARE;
            }
        }
    }
    let _ = std::fs::create_dir_all(&cfg.data_dir);
    let mut buf = vec![0u8; cfg.max_datagram as usize];
    let mut count = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            got = sock.recv_from(&mut buf) => {
                let Ok((_, from)) = got else { continue };
                count += 1;
                match leak {
                    Leak::None => tracing::debug!(count, "datagram"),
                    Leak::Log => tracing::warn!("datagram from {from}"),
                    Leak::Field => tracing::warn!(peer = %from, count, "datagram"),
                    Leak::File => {
                        let _ = std::fs::write(cfg.data_dir.join("last-peer"), from.to_string());
                    }
                }
                let _ = sock.send_to(b"ok", from).await;
            }
        }
    }
    tracing::info!(count, "stopping");
    shutdown.drain(Duration::from_secs(2)).await;
    0
}
