//! Independent cross-check of the crypto with the OpenSSL command line: the Jami ID is
//! `openssl pkey -pubin -outform DER | sha1sum`, and an `openssl dgst -sha512 -sign` signature
//! (PKCS#1 v1.5) registers.

use std::process::Command;

use base64::Engine as _;
use serde_json::json;

use crate::common::*;

fn openssl(args: &[&str], dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn openssl_agrees_on_id_and_signature() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // A key made by OpenSSL, not by us.
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:4096",
            "-out",
            "k.pem",
        ],
        p,
    );
    let pub_pem = openssl(&["pkey", "-in", "k.pem", "-pubout"], p);
    let der = openssl(&["pkey", "-in", "k.pem", "-pubout", "-outform", "DER"], p);
    std::fs::write(p.join("name"), b"openssl-user").unwrap();
    let sig = openssl(&["dgst", "-sha512", "-sign", "k.pem", "name"], p);
    let want_id = {
        use waypost_protocol::identity::JamiId;
        JamiId::of_spki_der(&der).to_hex()
    };
    // Our importer derives the same ID from the PEM text.
    let mut pem_nul = pub_pem;
    pem_nul.push(0);
    let b64 = base64::engine::general_purpose::STANDARD;
    let pk_field = b64.encode(&pem_nul);
    let key = waypost_protocol::identity::PublicKey::from_base64_field(&pk_field).unwrap();
    assert_eq!(key.id().to_hex(), want_id);
    // sha1sum of the DER, computed by openssl.
    std::fs::write(p.join("der"), &der).unwrap();
    let hex_out = String::from_utf8(openssl(&["dgst", "-sha1", "-r", "der"], p)).unwrap();
    assert_eq!(hex_out.split_whitespace().next().unwrap(), want_id);

    let s = TestServer::memory();
    s.post(
        "/name/openssl-user",
        &body(&want_id, &random_owner(), &b64.encode(&sig), &pk_field),
    )
    .expect(200, json!({"success": true}));
    // And our signature verifies with openssl.
    let ours = key_a().sign(b"alice").unwrap();
    std::fs::write(p.join("a.pem"), key_a().public_key().to_pem()).unwrap();
    std::fs::write(p.join("a.sig"), &ours).unwrap();
    std::fs::write(p.join("alice"), b"alice").unwrap();
    let v = openssl(
        &[
            "dgst",
            "-sha512",
            "-verify",
            "a.pem",
            "-signature",
            "a.sig",
            "alice",
        ],
        p,
    );
    assert!(String::from_utf8_lossy(&v).contains("Verified OK"));
}
