//! The `node-client` binary.

#![allow(clippy::print_stderr, clippy::disallowed_macros)]

use clap::Parser as _;
use waypost_node_client::cli::{Cli, EXIT_ERROR, run};

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("node-client: cannot start the runtime: {:?}", e.kind());
            std::process::exit(EXIT_ERROR);
        }
    };
    let code = runtime.block_on(run(cli));
    std::process::exit(code);
}
