//! `deploy-registrar`: deploys the project's registrar contract (GlobalRegistrar ABI) to a chain
//! and prints its address. The sender key comes from `--key-file` or the environment variable
//! named by `--key-env` (default `WAYPOST_NS_ETH_KEY`); it is never printed.
//!
//! ```text
//! WAYPOST_NS_ETH_KEY=0x… deploy-registrar --rpc-url http://127.0.0.1:8545
//! 0x5fbdb2315678afecb367f032d93f642f64180aa3
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_macros)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use waypost_nameserver::config::KeySource;
use waypost_nameserver::eth::{Chain, load_key};

/// Deploys the name registrar contract and prints its address.
#[derive(Parser)]
#[command(name = "deploy-registrar")]
struct Args {
    /// JSON-RPC endpoint of the chain node (http or https).
    #[arg(long, value_name = "URL")]
    rpc_url: String,
    /// File holding the sender's hex private key.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Environment variable holding the sender's hex private key (when --key-file is not given).
    #[arg(long, value_name = "VAR", default_value = "WAYPOST_NS_ETH_KEY")]
    key_env: String,
    /// Chain id to sign for; by default the node's own.
    #[arg(long, value_name = "ID")]
    chain_id: Option<u64>,
    /// Longest wait for the deployment to be mined, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    timeout: u64,
}

fn fail(msg: &str) -> ! {
    eprintln!("deploy-registrar: {msg}");
    std::process::exit(1)
}

fn main() {
    let args = Args::parse();
    let source = match args.key_file {
        Some(p) => KeySource::File(p),
        None => KeySource::Env(args.key_env),
    };
    let key = load_key(&source).unwrap_or_else(|e| fail(&e.to_string()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|_| fail("cannot start the runtime"));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let result = runtime.block_on(async move {
        let mut chain = Chain::new(&args.rpc_url, key, 0, Duration::from_secs(10))?;
        let id = match args.chain_id {
            Some(id) => id,
            None => chain.node_chain_id(deadline).await?,
        };
        chain.set_chain_id(id);
        chain.deploy_registrar(deadline).await
    });
    match result {
        Ok(addr) => println!("0x{}", hex::encode(addr)),
        Err(e) => fail(&e.to_string()),
    }
}
