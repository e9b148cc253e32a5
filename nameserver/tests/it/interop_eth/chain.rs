//! Chain-specific behaviour of the Ethereum backend on a real anvil.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use waypost_nameserver::config::StoreKind;
use waypost_nameserver::eth::EthStore;
use waypost_nameserver::store::Record;
use waypost_nameserver::{NameserverConfig, Settings};
use waypost_protocol::identity::Identity;

use super::*;
use crate::common::*;

fn record_for(k: &Identity, name: &str) -> Record {
    let mut owner = [0u8; 20];
    hex::decode_to_slice(random_owner(), &mut owner).unwrap();
    Record {
        name: name.into(),
        addr: *k.id().as_bytes(),
        owner,
        publickey: pk(k),
        signature: sig(k, name),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn server_error_get() -> serde_json::Value {
    json!({"error": "server error"})
}

fn server_error_post() -> serde_json::Value {
    json!({"success": false, "error": "server error"})
}

#[test]
fn name_taken_directly_on_chain_by_another_account_is_reported_taken() {
    let env = ChainEnv::start();
    let s = start_server(&env, env.settings(Settings::for_tests()));
    s.get("/name/alice")
        .expect(404, json!({"error": "name not registered"}));

    // Another account (not the server's sender) registers A's record directly on chain.
    let other = env.client(DEV_KEY_1);
    let contract = env.contract.into();
    let won = env
        .block_on(other.reserve_for(contract, &record_for(key_a(), "alice"), 1, soon()))
        .unwrap();
    assert!(won, "PrimaryChanged emitted for the direct registration");

    // The "not registered" answer was cached only briefly (300 ms here).
    std::thread::sleep(Duration::from_millis(400));
    let a = key_a();
    s.get("/name/alice").expect(
        200,
        json!({
            "name": "alice",
            "addr": format!("0x{}", id(a)),
            "publickey": pk(a),
            "signature": sig(a, "alice"),
        }),
    );
    s.get(&format!("/addr/{}", id(a)))
        .expect(200, json!({"name": "alice"}));
    s.post("/name/alice", &reg(key_b(), "alice")).expect(
        409,
        json!({"success": false, "error": "name already taken"}),
    );
    s.post("/name/alice", &reg(a, "alice"))
        .expect(200, json!({"success": true}));
    s.post("/name/alice2", &reg(a, "alice2")).expect(
        403,
        json!({"success": false, "name": "alice", "addr": format!("0x{}", id(a))}),
    );

    // reserveFor on a taken name does not revert: it is a no-op without the event.
    let again = env
        .block_on(other.reserve_for(contract, &record_for(key_b(), "alice"), 1, soon()))
        .unwrap();
    assert!(!again);
    assert_eq!(
        s.get("/name/alice").json()["addr"],
        json!(format!("0x{}", id(a)))
    );
}

#[test]
fn rpc_unreachable_is_503_never_404() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sender.key"), DEV_KEY_0).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut base = Settings::for_tests();
    base.request_timeout = Duration::from_secs(3);
    let mut settings = eth_settings(
        base,
        &format!("http://127.0.0.1:{port}"),
        [0x11; 20],
        dir.path(),
    );
    settings.eth.as_mut().unwrap().tx_timeout = Duration::from_secs(2);
    let store = EthStore::open(&settings, rt.handle().clone()).unwrap();
    let s = TestServer::start(settings, Arc::new(store)).with_guard((rt, dir));

    let t0 = Instant::now();
    s.get("/name/alice").expect(503, server_error_get());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered before the request timeout"
    );
    s.get(&format!("/addr/{}", id(key_a())))
        .expect(503, server_error_get());
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(503, server_error_post());
    // Nothing was cached as "absent": still 503, and the server keeps serving.
    s.get("/name/alice").expect(503, server_error_get());
    s.get("/name/%3D%3D")
        .expect(400, json!({"error": "invalid name"}));
}

#[test]
fn no_contract_at_the_address_is_503_never_404() {
    let env = ChainEnv::start();
    let mut settings = env.settings(Settings::for_tests());
    settings.eth.as_mut().unwrap().contract = [0x22; 20];
    let s = start_server(&env, settings);
    s.get("/name/alice").expect(503, server_error_get());
    s.get(&format!("/addr/{}", id(key_a())))
        .expect(503, server_error_get());
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(503, server_error_post());
}

#[test]
fn chain_restarted_mid_run() {
    let state_dir = tempfile::tempdir().unwrap();
    let opts = AnvilOpts {
        state: Some(state_dir.path().join("state.json")),
        ..AnvilOpts::default()
    };
    let mut env = ChainEnv::start_with(&opts);
    let mut base = Settings::for_tests();
    base.request_timeout = Duration::from_secs(4);
    let mut settings = env.settings(base);
    {
        let eth = settings.eth.as_mut().unwrap();
        eth.negative_ttl = Duration::ZERO;
        eth.tx_timeout = Duration::from_secs(3);
    }
    let s = start_server(&env, settings);
    let (a, b) = (key_a(), key_b());
    s.post("/name/alice", &reg(a, "alice"))
        .expect(200, json!({"success": true}));
    s.get("/name/bob")
        .expect(404, json!({"error": "name not registered"}));

    // The node goes away (SIGTERM: anvil dumps its state).
    let port = env.anvil.port;
    env.anvil.stop();
    // Cached registrations are still served; anything else is 503, never 404.
    assert_eq!(s.get("/name/alice").status, 200);
    s.get("/name/bob").expect(503, server_error_get());
    s.get(&format!("/addr/{}", id(b)))
        .expect(503, server_error_get());
    s.post("/name/bob", &reg(b, "bob"))
        .expect(503, server_error_post());

    // Back on the same port with its state: reads and writes work again (fresh nonce).
    env.anvil = Anvil::start(&AnvilOpts {
        port: Some(port),
        ..opts.clone()
    });
    s.get("/name/bob")
        .expect(404, json!({"error": "name not registered"}));
    s.post("/name/bob", &reg(b, "bob"))
        .expect(200, json!({"success": true}));
    assert_eq!(
        s.get("/name/bob").json()["addr"],
        json!(format!("0x{}", id(b)))
    );
    s.post("/name/alice", &reg(b, "alice")).expect(
        409,
        json!({"success": false, "error": "name already taken"}),
    );

    // The node comes back empty (state lost, no contract): never "free", always 503.
    env.anvil.stop();
    env.anvil = Anvil::start(&AnvilOpts {
        port: Some(port),
        state: None,
        ..opts
    });
    s.get("/name/carol").expect(503, server_error_get());
    s.get(&format!("/addr/{}", random_owner()))
        .expect(503, server_error_get());
    s.post("/name/carol", &reg(a, "carol"))
        .expect(503, server_error_post());
}

#[test]
fn eip1559_chain_is_served_too() {
    let env = ChainEnv::start_with(&AnvilOpts {
        hardfork: None,
        ..AnvilOpts::default()
    });
    let s = start_server(&env, env.settings(Settings::for_tests()));
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));
    assert_eq!(
        s.get("/name/alice").json()["addr"],
        json!(format!("0x{}", id(key_a())))
    );
}

#[test]
fn deploy_registrar_binary_prints_the_contract_address() {
    let anvil = Anvil::start(&AnvilOpts::default());
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-registrar"))
        .args(["--rpc-url", &anvil.url()])
        .env("WAYPOST_NS_ETH_KEY", format!("0x{DEV_KEY_0}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Account 0, nonce 0: the deterministic first contract address.
    assert_eq!(stdout.trim(), "0x5fbdb2315678afecb367f032d93f642f64180aa3");
    assert!(!stdout.contains(DEV_KEY_0) && !stderr.contains(DEV_KEY_0));
    let mut contract = [0u8; 20];
    hex::decode_to_slice(&stdout.trim()[2..], &mut contract).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client(&anvil.url(), DEV_KEY_1).check(contract.into(), soon()))
        .expect("registrar code at the printed address");

    // A bad key: exit 1, one line, the key text not echoed.
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-registrar"))
        .args(["--rpc-url", &anvil.url()])
        .env("WAYPOST_NS_ETH_KEY", "0xdeadbeefcafe")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("deadbeefcafe"));
}

#[test]
fn ethereum_config_is_validated_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sender.key");
    std::fs::write(&key_file, format!("0x{DEV_KEY_0}\n")).unwrap();
    let good = NameserverConfig {
        store: StoreKind::Ethereum,
        eth_contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3".into(),
        eth_key_file: key_file.clone(),
        eth_rpc_url: "https://rpc.example.invalid/secret-token".into(),
        ..NameserverConfig::default()
    };
    let s = good.validate().unwrap();
    let eth = s.eth.as_ref().unwrap();
    assert_eq!(eth.chain_id, 1551);
    assert_eq!(eth.confirmations, 1);
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("secret-token") && !debug.contains(DEV_KEY_0),
        "{debug}"
    );
    assert!(
        NameserverConfig::default()
            .validate()
            .unwrap()
            .eth
            .is_none()
    );

    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "0x1234 not a key").unwrap();
    let bad = [
        NameserverConfig {
            eth_contract: String::new(),
            ..good.clone()
        },
        NameserverConfig {
            eth_contract: format!("0x{}", "0".repeat(40)),
            ..good.clone()
        },
        NameserverConfig {
            eth_rpc_url: "ftp://x".into(),
            ..good.clone()
        },
        NameserverConfig {
            eth_key_file: dir.path().join("missing.key"),
            ..good.clone()
        },
        NameserverConfig {
            eth_key_file: garbage,
            ..good.clone()
        },
        NameserverConfig {
            eth_key_file: Default::default(),
            eth_key_env: "WAYPOST_TEST_SURELY_UNSET_KEY_VAR".into(),
            ..good.clone()
        },
        NameserverConfig {
            eth_confirmations: 0,
            ..good.clone()
        },
        NameserverConfig {
            eth_tx_timeout_ms: 10_000,
            ..good.clone()
        },
        NameserverConfig {
            eth_chain_id: 0,
            ..good
        },
    ];
    for cfg in bad {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(!e.contains("1234") && !e.contains(DEV_KEY_0), "{e}");
    }

    // The real binary: --check-config exit 0, and exit 64 with one line for a bad key.
    let bin = env!("CARGO_BIN_EXE_nameserver");
    let base = |key: &Path| {
        let mut c = Command::new(bin);
        c.args(["--store", "ethereum", "--eth-contract"])
            .arg("0x5fbdb2315678afecb367f032d93f642f64180aa3")
            .arg("--eth-key-file")
            .arg(key)
            .arg("--check-config");
        c
    };
    let ok = base(&key_file).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let secret = dir.path().join("secret.key");
    std::fs::write(&secret, "not-a-key-but-secret-text").unwrap();
    let bad = base(&secret).output().unwrap();
    assert_eq!(bad.status.code(), Some(64));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("secret-text"), "{err}");
}

#[test]
fn short_rpc_outage_is_bridged_by_read_retries() {
    let state_dir = tempfile::tempdir().unwrap();
    let opts = AnvilOpts {
        state: Some(state_dir.path().join("state.json")),
        ..AnvilOpts::default()
    };
    let mut env = ChainEnv::start_with(&opts);
    let s = start_server(&env, env.settings(Settings::for_tests()));
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));

    let port = env.anvil.port;
    env.anvil.stop();
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        Anvil::start(&AnvilOpts {
            port: Some(port),
            ..opts
        })
    });
    // Uncached lookups during the outage: retried with backoff until the node is back.
    let t0 = Instant::now();
    s.get(&format!("/addr/{}", id(key_b())))
        .expect(404, json!({"error": "address not registered"}));
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "the answer came from the restarted node"
    );
    env.anvil = restart.join().unwrap();
    s.get(&format!("/addr/{}", id(key_a())))
        .expect(200, json!({"name": "alice"}));
}

#[test]
fn slow_mining_answers_503_and_a_retry_finds_the_registration() {
    // Interval mining (2 s blocks) and a receipt wait shorter than a block.
    let env = ChainEnv::start_with(&AnvilOpts {
        block_time: Some(2),
        ..AnvilOpts::default()
    });
    let mut base = Settings::for_tests();
    base.request_timeout = Duration::from_secs(5);
    let mut settings = env.settings(base);
    settings.eth.as_mut().unwrap().tx_timeout = Duration::from_millis(300);
    let s = start_server(&env, settings);
    let body = reg(key_a(), "alice");
    // Mined only if the request happens to land right before a block: retry until one is not.
    let mut unconfirmed = false;
    for _ in 0..5 {
        let r = s.post("/name/alice", &body);
        if r.status == 503 {
            r.expect(503, server_error_post());
            unconfirmed = true;
            break;
        }
        assert_eq!(r.status, 200);
    }
    assert!(unconfirmed, "a 300 ms wait cannot see every 2 s block");
    // The transaction was sent: once mined, the same request is acknowledged, and the name is
    // never reported free meanwhile (pending, then registered).
    std::thread::sleep(Duration::from_millis(2500));
    s.post("/name/alice", &body)
        .expect(200, json!({"success": true}));
    assert_eq!(
        s.get("/name/alice").json()["addr"],
        json!(format!("0x{}", id(key_a())))
    );
}

#[test]
fn confirmations_wait_for_later_blocks() {
    let env = ChainEnv::start_with(&AnvilOpts {
        block_time: Some(1),
        ..AnvilOpts::default()
    });
    let mut settings = env.settings(Settings::for_tests());
    settings.eth.as_mut().unwrap().confirmations = 3;
    let s = start_server(&env, settings);
    let t0 = Instant::now();
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));
    // Mined in the next block, then two more blocks (1 s apart) before the answer.
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
}
