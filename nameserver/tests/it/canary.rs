//! The privacy canary under a registration/lookup workload: the real binary (debug build, so
//! trace logging is compiled in) runs with `--log-level trace`; traffic comes from a random
//! loopback alias and carries planted identifiers. Nothing may reach the logs or `/metrics`;
//! no source address, port or rejected input may reach the data directory (the registry content
//! itself — name, key, signature, ID, owner — is public by design and is stored).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use waypost_tests::canary::{Canary, Source};
use waypost_tests::proc::{Watched, free_port, wait_tcp};

use crate::common::*;

#[test]
fn nameserver_leaks_nothing_under_a_workload() {
    let mut canary = Canary::new();
    let mut files_canary = canary.clone();
    files_canary.name = String::new();
    files_canary.infohash = String::new();
    let a = key_a();
    let (id_a, pk_a, sig_a) = (id(a), pk(a), sig(a, &canary.name));
    canary.plant("jami id", &id_a);
    canary.plant("publickey", &pk_a);
    canary.plant("signature", &sig_a);

    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nameserver"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WAYPOST_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--log-level",
        "trace",
        "--listen",
        &addr.to_string(),
        "--admin-listen",
        &admin_addr.to_string(),
    ])
    .arg("--data-dir")
    .arg(dir.path())
    .args(["--post-rate", "1", "--post-burst", "3"]);
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
    };
    // Registration (owner = the planted 40-hex value) and lookups in every form.
    let good = body(&id_a, &canary.infohash, &sig_a, &pk_a);
    assert_eq!(
        send("POST", &format!("/name/{}", canary.name), Some(&good)).status,
        200
    );
    assert_eq!(
        send("GET", &format!("/name/{}", canary.name), None).status,
        200
    );
    assert_eq!(
        send(
            "GET",
            &format!("/name/{}", canary.name.to_uppercase()),
            None
        )
        .status,
        200
    );
    assert_eq!(send("GET", &format!("/addr/{id_a}"), None).status, 200);
    assert_eq!(
        send(
            "GET",
            &format!("/addr/0x{}", canary.infohash.to_uppercase()),
            None
        )
        .status,
        404
    );
    assert_eq!(
        send("GET", &format!("/name/{}/publickey", canary.name), None).status,
        200
    );
    // Rejected input carrying planted values.
    assert_eq!(
        send("GET", &format!("/name/{}", canary.token), None).status,
        400
    );
    assert_eq!(
        send("GET", &format!("/name/{}", canary.username), None).status,
        404
    );
    let bad_sig = body(&id_a, &canary.infohash, &sig_a, &pk_a);
    assert_eq!(
        send(
            "POST",
            &format!("/name/{}", canary.username),
            Some(&bad_sig)
        )
        .status,
        401
    );
    let junk = format!(r#"{{"addr":"{}","key":"{}","#, canary.token, canary.key);
    assert_eq!(
        send(
            "POST",
            &format!("/name/{}", canary.username),
            Some(junk.as_bytes())
        )
        .status,
        400
    );
    assert_eq!(
        send("POST", "/name/x", Some(b"{}")).status,
        429,
        "rate limited after the burst"
    );
    assert_eq!(send("GET", &format!("/{}", canary.key), None).status, 404);

    let metrics = get(admin_addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));

    let mut logs = vec![
        Source::log("stdout", &server.stdout()),
        Source::log("stderr", &server.stderr()),
        Source::other("metrics", &metrics.body),
    ];
    canary.assert_clean(&logs);
    let files = Source::files_under(dir.path());
    assert!(!files.is_empty(), "the store wrote its file");
    files_canary.assert_clean(&files);
    // The test can fail: the canary does see the registered (public) name in the store.
    logs.extend(files);
    assert!(
        !canary.find_leaks(&logs).is_empty(),
        "the scan works on the store file"
    );
}
