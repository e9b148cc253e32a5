//! The privacy canary on the Ethereum backend: the real binary (debug build, trace logging
//! compiled in) at `--log-level trace`, registering and looking up planted values on a real
//! chain, then with the chain gone (error paths log). No planted value, sender key, RPC URL or
//! IP address may reach the logs or `/metrics`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::{Watched, free_port, wait_tcp};

use super::{ChainEnv, DEV_KEY_0};
use crate::common::*;

#[test]
fn ethereum_backend_leaks_nothing_under_a_workload() {
    let mut env = ChainEnv::start();
    let mut canary = Canary::new();
    let a = key_a();
    let (id_a, pk_a, sig_a) = (id(a), pk(a), sig(a, &canary.name));
    let url = env.anvil.url();
    let contract = format!("0x{}", hex::encode(env.contract));
    canary.plant("jami id", &id_a);
    canary.plant("publickey", &pk_a);
    canary.plant("signature", &sig_a);
    canary.plant("sender key", DEV_KEY_0);
    canary.plant("rpc url", &url);
    canary.plant("contract", &contract[2..]);

    let (port, admin) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nameserver"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["--log-level", "trace", "--store", "ethereum"])
        .args(["--listen", &addr.to_string()])
        .args(["--admin-listen", &admin_addr.to_string()])
        .args(["--eth-rpc-url", &url, "--eth-contract", &contract])
        .args([
            "--request-timeout-ms",
            "4000",
            "--eth-tx-timeout-ms",
            "3000",
        ])
        .args(["--post-rate", "0"])
        .env("WAYPOST_NS_ETH_KEY", DEV_KEY_0);
    let mut server = Watched::spawn(cmd).unwrap();
    assert!(wait_tcp(addr, Duration::from_secs(20)));

    let send = |method: &str, path: &str, body: Option<&[u8]>| {
        let stream = canary
            .tcp_connect(addr)
            .expect("connect from the canary address");
        request_on(
            stream,
            method,
            path,
            &[
                ("Content-Type", "application/json"),
                ("User-Agent", &canary.username),
            ],
            body,
        )
        .status
    };
    let name_path = format!("/name/{}", canary.name);
    let good = body(&id_a, &canary.infohash, &sig_a, &pk_a);
    assert_eq!(send("POST", &name_path, Some(&good)), 200);
    assert_eq!(send("GET", &name_path, None), 200);
    assert_eq!(send("GET", &format!("/addr/{id_a}"), None), 200);
    assert_eq!(
        send("GET", &format!("/addr/{}", canary.infohash), None),
        404
    );
    assert_eq!(
        send("GET", &format!("/name/{}", canary.username), None),
        404
    );
    // The chain goes away: failures are logged (kind only) and answered 503.
    env.anvil.stop();
    assert_eq!(send("GET", &format!("/name/{}x", canary.name), None), 503);
    let b = key_b();
    // (Not the address looked up above: its "not registered" answer is cached for 2 s.)
    assert_eq!(send("GET", &format!("/addr/{}", id(b)), None), 503);
    let other = format!("{}b", canary.name);
    let reg_b = body(&id(b), &canary.infohash, &sig(b, &other), &pk(b));
    assert_eq!(send("POST", &format!("/name/{other}"), Some(&reg_b)), 503);

    let metrics = get(admin_addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
    let stdout = server.stdout();
    assert!(
        String::from_utf8_lossy(&stdout).contains("ethereum registrar unavailable"),
        "the outage was logged (so the scan below covers the error path)"
    );
    canary.assert_clean(&[
        Source::log("stdout", &stdout),
        Source::log("stderr", &server.stderr()),
        Source::other("metrics", &metrics.body),
    ]);
}
