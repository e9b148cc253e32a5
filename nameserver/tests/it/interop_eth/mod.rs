//! The Ethereum backend against a real local chain: anvil 1.7.1 from the npm package
//! `@foundry-rs/anvil` (installed by `npm ci` at the repository root), started on loopback with
//! an ephemeral port and `--hardfork petersburg` (no base fee: legacy transactions only, like
//! the Jami chain), with the project's registrar contract deployed by the tests.
//!
//! - `conformance`: the shared API suite (`../conformance.rs`), each test on its own chain;
//! - `chain`: outages, restarts, names taken directly on chain, EIP-1559 chains, deployment;
//! - `contract`: the committed ABI and bytecode match a fresh solc-js build.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use waypost_nameserver::Settings;
use waypost_nameserver::config::{EthSettings, KeySource, StoreKind};
use waypost_nameserver::eth::{Chain, EthStore, parse_key};

use crate::common::TestServer;

mod canary;
mod chain;
// The shared suite, compiled a second time against this module's `backend` (intended).
#[allow(clippy::duplicate_mod)]
#[path = "../conformance.rs"]
mod conformance;
mod contract;

/// anvil's deterministic dev account 0 (the server's sender in these tests).
pub(crate) const DEV_KEY_0: &str =
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// anvil's deterministic dev account 1 ("another account" writing directly on chain).
pub(crate) const DEV_KEY_1: &str =
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// The Jami chain id.
pub(crate) const CHAIN_ID: u64 = 1551;

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn npm_ci_hint(what: &str) -> String {
    format!(
        "{what} not found under node_modules: run `npm ci` in the repository root (it installs \
         the pinned @foundry-rs/anvil and solc from package-lock.json)"
    )
}

/// The anvil binary: the native one inside the platform package (so that the PID we hold is
/// anvil itself), else the npm shim. Fails with a clear message when `npm ci` was not run.
fn anvil_bin() -> PathBuf {
    let os = if cfg!(target_os = "macos") {
        "darwin"
    } else {
        "linux"
    };
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let root = repo_root().join("node_modules");
    let native = root.join(format!("@foundry-rs/anvil-{os}-{arch}/bin/anvil"));
    if native.is_file() {
        return native;
    }
    let shim = root.join(".bin/anvil");
    if shim.is_file() {
        return shim;
    }
    panic!("{}", npm_ci_hint("anvil"));
}

/// How to start anvil.
#[derive(Clone)]
pub(crate) struct AnvilOpts {
    /// Fixed port (for a restart on the same address); `None` = ephemeral.
    pub(crate) port: Option<u16>,
    /// `--state FILE`: load at start, dump at SIGTERM.
    pub(crate) state: Option<PathBuf>,
    /// `--hardfork`; `None` = anvil's default (with EIP-1559).
    pub(crate) hardfork: Option<&'static str>,
    /// `--block-time SECONDS` (interval mining); `None` = a block per transaction.
    pub(crate) block_time: Option<u64>,
}

impl Default for AnvilOpts {
    fn default() -> Self {
        Self {
            port: None,
            state: None,
            hardfork: Some("petersburg"),
            block_time: None,
        }
    }
}

/// A running anvil on 127.0.0.1, stopped (by its PID) on drop.
pub(crate) struct Anvil {
    child: Option<Child>,
    pub(crate) port: u16,
}

impl Anvil {
    pub(crate) fn start(opts: &AnvilOpts) -> Self {
        let mut cmd = Command::new(anvil_bin());
        cmd.args(["--host", "127.0.0.1", "--chain-id", "1551"])
            .args(["--port", &opts.port.unwrap_or(0).to_string()])
            .args(["--gas-limit", "4700000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(h) = opts.hardfork {
            cmd.args(["--hardfork", h]);
        }
        if let Some(t) = opts.block_time {
            cmd.args(["--block-time", &t.to_string()]);
        }
        if let Some(s) = &opts.state {
            cmd.arg("--state").arg(s);
        }
        let mut child = cmd.spawn().expect("spawn anvil");
        let stdout = child.stdout.take().expect("anvil stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the listening line, then keeps draining anvil's output so it never blocks.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.trim().strip_prefix("Listening on ") {
                    let port = rest.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(port);
                    sent = true;
                }
            }
        });
        let Ok(Some(port)) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("anvil did not report its listening address");
        };
        Self {
            child: Some(child),
            port,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops anvil with SIGTERM (so `--state` is dumped), SIGKILL after 10 s.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A chain with the registrar deployed, plus a runtime for chain clients and a key file.
pub(crate) struct ChainEnv {
    pub(crate) anvil: Anvil,
    pub(crate) contract: [u8; 20],
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) dir: tempfile::TempDir,
}

impl ChainEnv {
    pub(crate) fn start() -> Self {
        Self::start_with(&AnvilOpts::default())
    }

    pub(crate) fn start_with(opts: &AnvilOpts) -> Self {
        let anvil = Anvil::start(opts);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sender.key"), format!("0x{DEV_KEY_0}\n")).unwrap();
        let chain = client(&anvil.url(), DEV_KEY_0);
        let contract = rt
            .block_on(chain.deploy_registrar(Instant::now() + Duration::from_secs(30)))
            .expect("deploy the registrar")
            .into_array();
        Self {
            anvil,
            contract,
            rt,
            dir,
        }
    }

    /// `base` switched to this chain: store = ethereum, sender = dev account 0.
    pub(crate) fn settings(&self, base: Settings) -> Settings {
        eth_settings(base, &self.anvil.url(), self.contract, self.dir.path())
    }

    /// A chain client signing with `key` (hex).
    pub(crate) fn client(&self, key: &str) -> Chain {
        client(&self.anvil.url(), key)
    }

    /// Runs `f` on the helper runtime.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

pub(crate) fn client(url: &str, key: &str) -> Chain {
    Chain::new(
        url,
        parse_key(key).unwrap(),
        CHAIN_ID,
        Duration::from_secs(5),
    )
    .unwrap()
}

/// `base` with the Ethereum backend on `url` and `contract`; the key file is in `dir`.
pub(crate) fn eth_settings(
    mut base: Settings,
    url: &str,
    contract: [u8; 20],
    dir: &Path,
) -> Settings {
    base.store = StoreKind::Ethereum;
    base.eth = Some(EthSettings {
        rpc_url: url.to_owned(),
        contract,
        chain_id: CHAIN_ID,
        key: KeySource::File(dir.join("sender.key")),
        confirmations: 1,
        tx_timeout: Duration::from_secs(8),
        rpc_timeout: Duration::from_secs(2),
        negative_ttl: Duration::from_millis(300),
        cache_entries: 1024,
    });
    base
}

/// The server on `settings` (already switched to ethereum), its chain runtime from `env`.
pub(crate) fn start_server(env: &ChainEnv, settings: Settings) -> TestServer {
    let store = EthStore::open(&settings, env.rt.handle().clone()).expect("open the eth store");
    TestServer::start(settings, Arc::new(store))
}

/// The backend of the shared suite: a fresh chain per server.
pub(crate) mod backend {
    use waypost_nameserver::Settings;

    use super::{ChainEnv, start_server};
    use crate::common::TestServer;

    pub(crate) fn server() -> TestServer {
        server_with(Settings::for_tests())
    }

    pub(crate) fn server_with(settings: Settings) -> TestServer {
        let env = ChainEnv::start();
        let settings = env.settings(settings);
        start_server(&env, settings).with_guard(env)
    }
}
