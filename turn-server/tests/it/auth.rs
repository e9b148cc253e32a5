//! Long-term and REST authentication, stateless nonces, allocation lifecycle errors.

use std::time::Duration;

use waypost_protocol::stun::{Class, Message, attr, auth, method};

use crate::client::{A, Client, Creds, build, code, transport_udp};
use crate::common::{start, test_config};

#[tokio::test]
async fn challenge_then_wrong_then_right_password() {
    let srv = start(test_config(), false).await;
    let c = Client::new(srv.addr, "ring", "ring").await;
    let resp = c
        .raw(&build(
            method::ALLOCATE,
            Class::Request,
            &[transport_udp()],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(code(&resp), 401);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.get(attr::REALM), Some(&b"ring"[..]));
    let nonce = m.get(attr::NONCE).unwrap().to_vec();
    assert!(!m.has_integrity(), "401 carries no MESSAGE-INTEGRITY");

    let wrong = Creds {
        user: b"ring".to_vec(),
        realm: b"ring".to_vec(),
        nonce: nonce.clone(),
        key: auth::long_term_key(b"ring", b"ring", b"wrong"),
    };
    let resp = c
        .raw(&build(
            method::ALLOCATE,
            Class::Request,
            &[transport_udp()],
            Some(&wrong),
        ))
        .await
        .unwrap();
    assert_eq!(code(&resp), 401, "wrong password");
    let m = Message::parse(&resp).unwrap();
    assert!(m.get(attr::NONCE).is_some() && m.get(attr::REALM).is_some());

    let unknown = Creds {
        user: b"mallory".to_vec(),
        key: auth::long_term_key(b"mallory", b"ring", b"ring"),
        ..wrong
    };
    let resp = c
        .raw(&build(
            method::ALLOCATE,
            Class::Request,
            &[transport_udp()],
            Some(&unknown),
        ))
        .await
        .unwrap();
    assert_eq!(code(&resp), 401, "unknown user");

    let forged = Creds {
        user: b"ring".to_vec(),
        realm: b"ring".to_vec(),
        nonce: b"AAAAAAAAAAAA".to_vec(),
        key: auth::long_term_key(b"ring", b"ring", b"ring"),
    };
    let resp = c
        .raw(&build(
            method::ALLOCATE,
            Class::Request,
            &[transport_udp()],
            Some(&forged),
        ))
        .await
        .unwrap();
    assert_eq!(code(&resp), 401, "forged nonce");

    let right = Creds { nonce, ..forged };
    let resp = c
        .raw(&build(
            method::ALLOCATE,
            Class::Request,
            &[transport_udp()],
            Some(&right),
        ))
        .await
        .unwrap();
    assert_eq!(code(&resp), 0, "right password");
    let m = Message::parse(&resp).unwrap();
    assert!(m.verify_integrity(&right.key));
    assert!(m.verify_fingerprint());
    assert_eq!(
        m.xor_addr(attr::XOR_MAPPED_ADDRESS),
        Some(c.sock.local_addr().unwrap())
    );
    let relayed = m.xor_addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    srv.stop().await;
}

#[tokio::test]
async fn stale_nonce_gets_438_then_works() {
    let cfg = waypost_turn_server::TurnConfig {
        nonce_lifetime: 1,
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    c.allocate().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let req = build(
        method::REFRESH,
        Class::Request,
        &[A::Raw(attr::LIFETIME, 600u32.to_be_bytes().to_vec())],
        c.creds.as_ref(),
    );
    let resp = c.raw(&req).await.unwrap();
    assert_eq!(code(&resp), 438, "stale nonce");
    let m = Message::parse(&resp).unwrap();
    let fresh = m.get(attr::NONCE).unwrap().to_vec();
    assert_ne!(
        Some(fresh.as_slice()),
        c.creds.as_ref().map(|x| x.nonce.as_slice())
    );
    // The client library retries with the new nonce.
    let resp = c
        .request(
            method::REFRESH,
            &[A::Raw(attr::LIFETIME, 600u32.to_be_bytes().to_vec())],
        )
        .await;
    assert_eq!(code(&resp), 0);
    srv.stop().await;
}

#[tokio::test]
async fn rest_credentials_expiry_and_rotation() {
    let cfg = waypost_turn_server::TurnConfig {
        auth_secret: vec!["s1".into(), "s2".into()],
        user: vec![],
        ..test_config()
    };
    let srv = start(cfg, false).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (secret, expiry, want) in [
        ("s1", now + 600, 0),
        ("s2", now + 600, 0),
        ("s3", now + 600, 401),
        ("s1", now - 10, 401),
    ] {
        let user = format!("{expiry}:bob");
        let pass = auth::rest_password(secret.as_bytes(), user.as_bytes());
        let mut c = Client::new(srv.addr, &user, &pass).await;
        let resp = c.request(method::ALLOCATE, &[transport_udp()]).await;
        assert_eq!(
            code(&resp),
            want,
            "secret {secret}, expiry offset {}",
            expiry as i64 - now as i64
        );
    }
    // Static ring:ring is not configured here.
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    assert_eq!(
        code(&c.request(method::ALLOCATE, &[transport_udp()]).await),
        401
    );
    srv.stop().await;
}

#[tokio::test]
async fn allocation_lifecycle_errors() {
    let srv = start(test_config(), false).await;
    let mut c = Client::new(srv.addr, "ring", "ring").await;
    let peer = A::Xor(attr::XOR_PEER_ADDRESS, "127.0.0.1:9".parse().unwrap());
    // No allocation yet: 437.
    assert_eq!(
        code(
            &c.request(method::CREATE_PERMISSION, std::slice::from_ref(&peer))
                .await
        ),
        437
    );
    c.allocate().await;
    // A second Allocate on the same 5-tuple (new transaction): 437.
    assert_eq!(
        code(&c.request(method::ALLOCATE, &[transport_udp()]).await),
        437
    );
    // Missing REQUESTED-TRANSPORT on a fresh client: 400; unsupported transport: 442.
    let mut d = Client::new(srv.addr, "ring", "ring").await;
    assert_eq!(code(&d.request(method::ALLOCATE, &[]).await), 400);
    assert_eq!(
        code(
            &d.request(
                method::ALLOCATE,
                &[A::Raw(attr::REQUESTED_TRANSPORT, vec![99, 0, 0, 0])]
            )
            .await
        ),
        442
    );
    // TCP relay over UDP: 400. IPv6 relay when none is configured: 440.
    assert_eq!(
        code(
            &d.request(
                method::ALLOCATE,
                &[A::Raw(attr::REQUESTED_TRANSPORT, vec![6, 0, 0, 0])]
            )
            .await
        ),
        400
    );
    assert_eq!(
        code(
            &d.request(
                method::ALLOCATE,
                &[
                    transport_udp(),
                    A::Raw(attr::REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0])
                ]
            )
            .await
        ),
        440
    );
    // Unknown comprehension-required attribute: 420 listing it.
    let resp = d
        .request(
            method::ALLOCATE,
            &[transport_udp(), A::Raw(0x7777, vec![1, 2, 3, 4])],
        )
        .await;
    assert_eq!(code(&resp), 420);
    assert_eq!(
        Message::parse(&resp).unwrap().get(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x77, 0x77][..])
    );
    // Bad channel number: 400.
    let resp = c
        .request(
            method::CHANNEL_BIND,
            &[
                A::Raw(attr::CHANNEL_NUMBER, vec![0x30, 0, 0, 0]),
                peer.clone(),
            ],
        )
        .await;
    assert_eq!(code(&resp), 400);
    // Refresh with lifetime 0 deletes the allocation.
    assert_eq!(
        code(
            &c.request(method::REFRESH, &[A::Raw(attr::LIFETIME, vec![0, 0, 0, 0])])
                .await
        ),
        0
    );
    assert_eq!(
        code(&c.request(method::CREATE_PERMISSION, &[peer]).await),
        437
    );
    srv.stop().await;
}
