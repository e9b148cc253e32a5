//! Spec nameserver.md §6: every row of the compatibility table is a test, with real RSA-4096
//! keys, NUL-terminated PEM public keys and `Content-Type: application/json` on every request.

use std::sync::Arc;

use serde_json::json;
use waypost_nameserver::store::{Claim, Record};
use waypost_nameserver::{NameStore, Settings, StoreError};
use waypost_protocol::identity::JamiId;

// The backend under test: the embedded store at the crate root (`crate::backend`), a registrar
// contract on a local chain when included from `interop_eth` (shared suite, one copy).
use super::backend::{server, server_with};
use crate::common::*;

/// A server where A registered `alice` (rows 17 and following).
fn with_alice() -> (TestServer, Vec<u8>) {
    let s = server();
    let body = reg(key_a(), "alice");
    s.post("/name/alice", &body)
        .expect(200, json!({"success": true}));
    (s, body)
}

#[test]
fn row01_unknown_name_is_404() {
    server()
        .get("/name/alice")
        .expect(404, json!({"error": "name not registered"}));
}

#[test]
fn row02_unknown_addr_is_404() {
    let path = format!("/addr/{}", id(key_a()));
    server()
        .get(&path)
        .expect(404, json!({"error": "address not registered"}));
}

#[test]
fn row03_garbage_addr_is_400() {
    server()
        .get("/addr/zz")
        .expect(400, json!({"error": "invalid address"}));
}

#[test]
fn row04_zero_addr_is_400_json() {
    let s = server();
    let r = s.get("/addr/0x0");
    assert_eq!(r.status, 400);
    assert!(r.json().is_object());
    s.get(&format!("/addr/0x{}", "0".repeat(40)))
        .expect(400, json!({"error": "invalid address"}));
}

#[test]
fn row05_name_too_long_is_400() {
    let path = format!("/name/{}", "a".repeat(33));
    server()
        .get(&path)
        .expect(400, json!({"error": "invalid name"}));
}

#[test]
fn row06_bad_chars_is_400() {
    let s = server();
    s.get("/name/%3D%3D")
        .expect(400, json!({"error": "invalid name"}));
    s.get("/name/al")
        .expect(400, json!({"error": "invalid name"}));
    s.get("/name/a%20b")
        .expect(400, json!({"error": "invalid name"}));
    s.get("/name/")
        .expect(400, json!({"error": "invalid name"}));
}

#[test]
fn row07_unknown_route_is_404() {
    let s = server();
    let r = s.get("/nonexistent");
    assert_eq!(r.status, 404);
    assert!(r.json().is_object(), "a new server answers JSON");
}

#[test]
fn row08_post_uppercase_name_is_400() {
    let a = key_a();
    server()
        .post(
            "/name/Alice",
            &body(&id(a), &random_owner(), &sig(a, "Alice"), &pk(a)),
        )
        .expect(400, json!({"success": false, "error": "invalid name"}));
}

#[test]
fn row09_post_short_name_is_400() {
    let a = key_a();
    server()
        .post(
            "/name/al",
            &body(&id(a), &random_owner(), &sig(a, "al"), &pk(a)),
        )
        .expect(400, json!({"success": false, "error": "invalid name"}));
}

#[test]
fn row10_post_without_addr_is_400() {
    let a = key_a();
    let b = format!(
        r#"{{"owner":"{}","signature":"{}","publickey":"{}"}}"#,
        random_owner(),
        sig(a, "alice"),
        pk(a)
    );
    let r = server().post("/name/alice", b.as_bytes());
    r.expect(400, json!({"success": false, "error": "invalid address"}));
    assert_eq!(
        r.json()["success"],
        json!(false),
        "success is a JSON boolean"
    );
}

#[test]
fn row11_post_without_owner_is_400() {
    let a = key_a();
    let b = format!(
        r#"{{"addr":"{}","signature":"{}","publickey":"{}"}}"#,
        id(a),
        sig(a, "alice"),
        pk(a)
    );
    server()
        .post("/name/alice", b.as_bytes())
        .expect(400, json!({"success": false, "error": "no owner"}));
}

#[test]
fn row12_signature_of_other_name_is_401() {
    let a = key_a();
    let s = server();
    s.post(
        "/name/alice",
        &body(&id(a), &random_owner(), &sig(a, "alice2"), &pk(a)),
    )
    .expect(
        401,
        json!({"success": false, "error": "signature verification failed"}),
    );
    s.get("/name/alice")
        .expect(404, json!({"error": "name not registered"}));
}

#[test]
fn row13_post_without_publickey_is_400() {
    let a = key_a();
    let b = format!(
        r#"{{"addr":"{}","owner":"{}","signature":"{}"}}"#,
        id(a),
        random_owner(),
        sig(a, "alice")
    );
    server().post("/name/alice", b.as_bytes()).expect(
        400,
        json!({"success": false, "error": "publickey not found or invalid"}),
    );
    // And without signature.
    let b = format!(
        r#"{{"addr":"{}","owner":"{}","publickey":"{}"}}"#,
        id(a),
        random_owner(),
        pk(a)
    );
    server().post("/name/alice", b.as_bytes()).expect(
        400,
        json!({"success": false, "error": "signature not found or invalid"}),
    );
}

#[test]
fn row14_form_body_is_400_json() {
    let s = server();
    let stream = std::net::TcpStream::connect(s.addr).unwrap();
    let r = request_on(
        stream,
        "POST",
        "/name/alice",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"addr=x"),
    );
    r.expect(400, json!({"success": false, "error": "invalid request"}));
}

#[test]
fn row15_bad_json_is_400_json() {
    server()
        .post("/name/alice", b"{bad json")
        .expect(400, json!({"success": false, "error": "invalid request"}));
    server()
        .post("/name/alice", b"[1,2]")
        .expect(400, json!({"success": false, "error": "invalid request"}));
}

#[test]
fn row16_valid_signature_by_other_key_is_401() {
    let (a, b) = (key_a(), key_b());
    let s = server();
    s.post(
        "/name/alice",
        &body(&id(a), &random_owner(), &sig(b, "alice"), &pk(b)),
    )
    .expect(
        401,
        json!({"success": false, "error": "publickey does not match addr"}),
    );
    s.get("/name/alice")
        .expect(404, json!({"error": "name not registered"}));
}

#[test]
fn row17_valid_registration_is_200() {
    let (s, _) = with_alice();
    assert_eq!(
        s.metrics.get(
            waypost_nameserver::metrics::Op::Register,
            waypost_nameserver::metrics::Outcome::Registered
        ),
        1
    );
}

#[test]
fn row18_lookup_returns_stored_fields_verbatim() {
    let a = key_a();
    let s = server();
    let signature = sig(a, "alice");
    s.post(
        "/name/alice",
        &body(&id(a), &random_owner(), &signature, &pk(a)),
    )
    .expect(200, json!({"success": true}));
    let r = s.get("/name/alice");
    r.expect(
        200,
        json!({"name": "alice", "addr": format!("0x{}", id(a)), "publickey": pk(a), "signature": signature}),
    );
    let v = r.json();
    let addr = v["addr"].as_str().unwrap();
    assert_eq!(addr, addr.to_lowercase(), "addr is lowercase");
    assert!(
        v["publickey"].as_str().unwrap().ends_with("LS0tLQoA"),
        "NUL-terminated PEM echoed"
    );
    assert_eq!(v["publickey"].as_str().unwrap().len(), 1068);
    assert_eq!(v["signature"].as_str().unwrap().len(), 684);
    // What the client then checks: key ID == addr and the signature over the returned name.
    let key =
        waypost_protocol::identity::PublicKey::from_base64_field(v["publickey"].as_str().unwrap())
            .unwrap();
    assert_eq!(format!("0x{}", key.id().to_hex()), addr);
    key.verify_base64(
        v["name"].as_str().unwrap().as_bytes(),
        v["signature"].as_str().unwrap(),
    )
    .unwrap();
}

#[test]
fn row19_lookup_is_case_insensitive_and_returns_canonical_name() {
    let (s, _) = with_alice();
    let r = s.get("/name/Alice");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], json!("alice"));
    assert_eq!(s.get("/name/ALICE").json()["name"], json!("alice"));
}

#[test]
fn row20_reverse_lookup_any_case_and_prefix() {
    let (s, _) = with_alice();
    let id_a = id(key_a());
    for path in [
        format!("/addr/{id_a}"),
        format!("/addr/0x{}", id_a.to_uppercase()),
        format!("/addr/ring:{id_a}"),
        format!("/addr/jami:{id_a}"),
    ] {
        s.get(&path).expect(200, json!({"name": "alice"}));
    }
}

#[test]
fn row21_name_taken_by_other_is_409() {
    let (s, _) = with_alice();
    s.post("/name/alice", &reg(key_b(), "alice")).expect(
        409,
        json!({"success": false, "error": "name already taken"}),
    );
    assert_eq!(
        s.get("/name/alice").json()["addr"],
        json!(format!("0x{}", id(key_a())))
    );
}

#[test]
fn row22_identical_repeat_is_idempotent_200() {
    let (s, body) = with_alice();
    s.post("/name/alice", &body)
        .expect(200, json!({"success": true}));
    // Owner is ignored for idempotence.
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));
}

#[test]
fn row23_second_name_for_same_addr_is_403() {
    let (s, _) = with_alice();
    s.post("/name/alice2", &reg(key_a(), "alice2")).expect(
        403,
        json!({"success": false, "name": "alice", "addr": format!("0x{}", id(key_a()))}),
    );
    s.get("/name/alice2")
        .expect(404, json!({"error": "name not registered"}));
}

#[test]
fn row24_legacy_registration_refused_by_default_and_allowed_when_enabled() {
    let legacy = format!(
        r#"{{"addr":"{}","owner":"{}"}}"#,
        "5".repeat(40),
        "6".repeat(40)
    );
    let s = server();
    s.post("/name/carol", legacy.as_bytes()).expect(
        400,
        json!({"success": false, "error": "publickey not found or invalid"}),
    );

    let mut settings = Settings::for_tests();
    settings.allow_legacy = true;
    let s = server_with(settings);
    s.post("/name/carol", legacy.as_bytes())
        .expect(200, json!({"success": true}));
    s.get("/name/carol").expect(
        200,
        json!({"name": "carol", "addr": format!("0x{}", "5".repeat(40))}),
    );
}

/// A store whose backend is down.
struct DownStore;

impl NameStore for DownStore {
    fn get_by_name(&self, _: &str) -> Result<Option<Record>, StoreError> {
        Err(StoreError::Unavailable)
    }
    fn get_by_addr(&self, _: &JamiId) -> Result<Option<String>, StoreError> {
        Err(StoreError::Read)
    }
    fn claim(&self, _: &Record) -> Result<Claim, StoreError> {
        Err(StoreError::Write)
    }
}

#[test]
fn row25_store_down_is_5xx_never_404() {
    let s = TestServer::start(Settings::for_tests(), Arc::new(DownStore));
    for path in ["/name/alice".to_owned(), format!("/addr/{}", id(key_a()))] {
        let r = s.get(&path);
        assert!(matches!(r.status, 500 | 503), "{path}: {}", r.status);
        assert_eq!(r.json(), json!({"error": "server error"}));
    }
    let r = s.post("/name/alice", &reg(key_a(), "alice"));
    assert!(matches!(r.status, 500 | 503), "{}", r.status);
    assert_eq!(r.json(), json!({"success": false, "error": "server error"}));
}

#[test]
fn row26_get_with_json_content_type_and_empty_body() {
    let (s, _) = with_alice();
    // `get` always sends Content-Type: application/json; here also an explicit empty body.
    let stream = std::net::TcpStream::connect(s.addr).unwrap();
    let r = request_on(
        stream,
        "GET",
        "/name/alice",
        &[("Content-Type", "application/json")],
        Some(b""),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), s.get("/name/alice").json());
    assert_eq!(r.json()["name"], json!("alice"));
}

#[test]
fn row27_publickey_and_signature_routes() {
    let (s, _) = with_alice();
    s.get("/name/alice/publickey")
        .expect(200, json!({"name": "alice", "publickey": pk(key_a())}));
    let r = s.get("/name/alice/signature");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], json!("alice"));
    key_a()
        .public_key()
        .verify_base64(b"alice", r.json()["signature"].as_str().unwrap())
        .unwrap();
    s.get("/name/bob/publickey")
        .expect(404, json!({"error": "name not registered"}));
    s.get("/name/bob/signature")
        .expect(404, json!({"error": "name not registered"}));
}

#[test]
fn row28_unicode_name_is_400_by_default() {
    let a = key_a();
    let s = server();
    // Signature over the UTF-8 bytes c3 a9 74 c3 a9.
    s.post(
        "/name/%C3%A9t%C3%A9",
        &body(&id(a), &random_owner(), &sig(a, "été"), &pk(a)),
    )
    .expect(400, json!({"success": false, "error": "invalid name"}));
    s.get("/name/%C3%A9t%C3%A9")
        .expect(400, json!({"error": "invalid name"}));
}

#[test]
fn row28_unicode_mode_checks_the_signature_over_utf8_bytes() {
    let (a, b) = (key_a(), key_b());
    let mut settings = Settings::for_tests();
    settings.name_policy = waypost_nameserver::policy::NamePolicy::Unicode;
    let s = server_with(settings);
    // A signature over other bytes (NFD "été") fails.
    s.post(
        "/name/%C3%A9t%C3%A9",
        &body(
            &id(a),
            &random_owner(),
            &sig(a, "e\u{301}te\u{301}"),
            &pk(a),
        ),
    )
    .expect(
        401,
        json!({"success": false, "error": "signature verification failed"}),
    );
    // Signed over c3 a9 74 c3 a9.
    s.post(
        "/name/%C3%A9t%C3%A9",
        &body(&id(a), &random_owner(), &sig(a, "été"), &pk(a)),
    )
    .expect(200, json!({"success": true}));
    let r = s.get("/name/%C3%A9t%C3%A9");
    assert_eq!(r.json()["name"], json!("été"));
    a.public_key()
        .verify_base64("été".as_bytes(), r.json()["signature"].as_str().unwrap())
        .unwrap();
    // Upper case and NFD queries find the stored name.
    assert_eq!(s.get("/name/%C3%89T%C3%89").json()["name"], json!("été"));
    assert_eq!(s.get("/name/e%CC%81te%CC%81").json()["name"], json!("été"));
    // Forms that fold to a taken name cannot be registered; the name itself is taken.
    s.post(
        "/name/%C3%89t%C3%A9",
        &body(&id(b), &random_owner(), &sig(b, "Été"), &pk(b)),
    )
    .expect(400, json!({"success": false, "error": "invalid name"}));
    s.post(
        "/name/e%CC%81te%CC%81",
        &body(
            &id(b),
            &random_owner(),
            &sig(b, "e\u{301}te\u{301}"),
            &pk(b),
        ),
    )
    .expect(400, json!({"success": false, "error": "invalid name"}));
    s.post("/name/%C3%A9t%C3%A9", &reg(b, "été")).expect(
        409,
        json!({"success": false, "error": "name already taken"}),
    );
    s.get("/name/a%40b")
        .expect(400, json!({"error": "invalid name"}));
    // ASCII names keep working.
    s.post("/name/bob", &reg(b, "bob"))
        .expect(200, json!({"success": true}));
    assert_eq!(s.get("/name/BOB").json()["name"], json!("bob"));
}

// Beyond the table.

#[test]
fn pem_without_nul_and_der_keys_are_accepted_and_echoed() {
    use base64::Engine as _;
    let a = key_a();
    let s = server();
    let pem_b64 = a.public_key().to_base64_field(false);
    s.post(
        "/name/alice",
        &body(&id(a), &random_owner(), &sig(a, "alice"), &pem_b64),
    )
    .expect(200, json!({"success": true}));
    assert_eq!(s.get("/name/alice").json()["publickey"], json!(pem_b64));
    let b = key_b();
    let der_b64 = base64::engine::general_purpose::STANDARD.encode(b.public_key().spki_der());
    s.post(
        "/name/bob-der",
        &body(&id(b), &random_owner(), &sig(b, "bob-der"), &der_b64),
    )
    .expect(200, json!({"success": true}));
}

#[test]
fn undecodable_key_is_400() {
    let a = key_a();
    let s = server();
    s.post(
        "/name/alice",
        &body(&id(a), &random_owner(), &sig(a, "alice"), "bm90IGEga2V5"),
    )
    .expect(
        400,
        json!({"success": false, "error": "publickey not found or invalid"}),
    );
}

#[test]
fn path_prefix_is_served_case_insensitively() {
    let mut settings = Settings::for_tests();
    settings.path_prefix = "/ns".into();
    let s = server_with(settings);
    s.post("/ns/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));
    assert_eq!(s.get("/NS/name/alice").json()["name"], json!("alice"));
    assert_eq!(s.get("/name/alice").status, 404, "outside the prefix");
}

#[test]
fn other_methods_are_405_json() {
    let s = server();
    let r = request(s.addr, "DELETE", "/name/alice", None);
    assert_eq!(r.status, 405);
    assert!(r.json().is_object());
    assert_eq!(request(s.addr, "POST", "/addr/zz", Some(b"{}")).status, 405);
}

#[test]
fn concurrent_claims_of_one_name_have_one_winner() {
    let s = server();
    let bodies = [reg(key_a(), "race"), reg(key_b(), "race")];
    let addr = s.addr;
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|b| std::thread::spawn(move || post(addr, "/name/race", &b).status))
        .collect();
    let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 409]);
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let (s, _) = with_alice();
    let r = request(s.addr, "HEAD", "/name/alice", None);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(request(s.addr, "HEAD", "/name/nobody", None).status, 404);
}

#[test]
fn invalid_names_are_400_on_post_too() {
    let a = key_a();
    let s = TestServer::memory();
    let long = "a".repeat(33);
    for (path, name) in [
        (format!("/name/{long}"), long.as_str()),
        ("/name/%3D%3D".to_owned(), "=="),
        ("/name/a%20b".to_owned(), "a b"),
        ("/name/ab".to_owned(), "ab"),
        ("/name/ALICE".to_owned(), "ALICE"),
    ] {
        s.post(&path, &body(&id(a), &random_owner(), &sig(a, name), &pk(a)))
            .expect(400, json!({"success": false, "error": "invalid name"}));
    }
    // 32 characters is the longest valid name.
    let max = "a".repeat(32);
    s.post(&format!("/name/{max}"), &reg(a, &max))
        .expect(200, json!({"success": true}));
}
