//! Jami name server client, behaving like jami-daemon's `NameDirectory` (spec nameserver.md
//! §1.1, §1.3–§1.5, §1.8).
//!
//! - The base URL is canonicalised like the daemon: lowercased, `https://` prepended when there
//!   is no scheme, one trailing `/` removed.
//! - Every request carries `Content-Type: application/json`.
//! - Names are ASCII-lowercased and percent-encoded (RFC 3986 unreserved bytes pass through).
//! - A found name with a key and a signature is verified like the daemon does: SHA-1 of the key
//!   equals the returned address, and the signature covers the returned name.

use std::path::Path;

use rand::{RngCore, SeedableRng};
use serde_json::Value;
use waypost_protocol::identity::{Identity, IdentityError, JamiId, KeyBits, PublicKey};
use waypost_protocol::names;

/// Client errors. Messages carry no name, address or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NameClientError {
    /// The server URL is not usable.
    #[error("invalid server URL")]
    Url,
    /// The HTTP request failed (connection, timeout).
    #[error("request failed: {0}")]
    Http(String),
    /// Key generation, loading or signing failed.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    /// The identity file could not be read or written.
    #[error("identity file: {0}")]
    Io(std::io::ErrorKind),
    /// The address argument is not a Jami ID.
    #[error("invalid address")]
    InvalidAddress,
}

/// Result of a forward lookup (daemon `Response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Found; `verified` is true when a key and signature were returned and checked.
    Found {
        /// The canonical name the server returned.
        name: String,
        /// `0x` + 40 lowercase hex.
        addr: String,
        /// Whether key and signature were present and verified.
        verified: bool,
    },
    /// 404 or an empty address: the name is free.
    NotFound,
    /// 400 (invalid name), or a key/signature that does not check out.
    InvalidResponse,
    /// Any other status or an unparsable body.
    Error(u16),
}

/// Result of a reverse lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reverse {
    /// The registered name.
    Found(String),
    /// No name for this address.
    NotFound,
    /// 400 from the server.
    InvalidResponse,
    /// Anything else.
    Error(u16),
}

/// Result of a registration (daemon `RegistrationResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// 2xx with `"success": true`.
    Success,
    /// 400: the server's error text.
    IncompleteRequest(String),
    /// 401.
    SignatureVerificationFailed(String),
    /// 403, 409 or another 4xx.
    AlreadyTaken(u16),
    /// Anything else.
    Error(u16),
}

/// Canonicalises a name server URL like the daemon.
pub fn canonical_base(url: &str) -> Result<String, NameClientError> {
    let mut u = url.trim().to_lowercase();
    if u.is_empty() {
        return Err(NameClientError::Url);
    }
    if !u.contains("://") {
        u = format!("https://{u}");
    }
    if u.ends_with('/') {
        u.pop();
    }
    Ok(u)
}

/// A name server client.
#[derive(Clone)]
pub struct NameClient {
    base: String,
    http: reqwest::Client,
}

fn http_err(e: &reqwest::Error) -> NameClientError {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    NameClientError::Http(what.to_owned())
}

impl NameClient {
    /// A client for the server at `url` (canonicalised as the daemon does).
    pub fn new(url: &str) -> Result<Self, NameClientError> {
        let base = canonical_base(url)?;
        let http = reqwest::Client::builder()
            .user_agent("Jami (waypost-node-client)")
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| http_err(&e))?;
        Ok(Self { base, http })
    }

    /// The canonical base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<Value>), NameClientError> {
        let resp = req
            .header("Content-Type", "application/json")
            .header("Accept", "*/*")
            .send()
            .await
            .map_err(|e| http_err(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| http_err(&e))?;
        Ok((status, serde_json::from_slice(&bytes).ok()))
    }

    /// `GET /name/{name}`.
    pub async fn lookup(&self, name: &str) -> Result<Lookup, NameClientError> {
        let url = format!(
            "{}/name/{}",
            self.base,
            names::percent_encode_name(&name.to_ascii_lowercase())
        );
        let (status, body) = self.send(self.http.get(url)).await?;
        Ok(match status {
            200..=299 => match body {
                Some(v) => check_found(&v),
                None => Lookup::Error(status),
            },
            400 => Lookup::InvalidResponse,
            401..=499 => Lookup::NotFound,
            _ => Lookup::Error(status),
        })
    }

    /// `GET /addr/{addr}`.
    pub async fn reverse(&self, addr: &str) -> Result<Reverse, NameClientError> {
        let id = names::parse_address(addr).map_err(|_| NameClientError::InvalidAddress)?;
        let url = format!("{}/addr/{}", self.base, id.to_hex());
        let (status, body) = self.send(self.http.get(url)).await?;
        Ok(match status {
            200 => match body
                .as_ref()
                .and_then(|v| v.get("name"))
                .and_then(Value::as_str)
            {
                Some(n) if !n.is_empty() => Reverse::Found(n.to_owned()),
                Some(_) => Reverse::NotFound,
                None => Reverse::Error(status),
            },
            400 => Reverse::InvalidResponse,
            401..=499 => Reverse::NotFound,
            _ => Reverse::Error(status),
        })
    }

    /// `POST /name/{name}`: registers the lowercased `name` for `identity`, signed with it.
    /// `owner` defaults to 20 random bytes (the daemon sends its Ethereum address; the server
    /// never authenticates it).
    pub async fn register(
        &self,
        identity: &Identity,
        name: &str,
        owner: Option<JamiId>,
    ) -> Result<Registration, NameClientError> {
        let name = name.to_ascii_lowercase();
        let owner = owner.unwrap_or_else(|| {
            let mut b = [0u8; 20];
            rand::rngs::StdRng::from_os_rng().fill_bytes(&mut b);
            JamiId::new(b)
        });
        let signature = identity.sign_base64(name.as_bytes())?;
        let body = serde_json::json!({
            "addr": identity.id().to_hex(),
            "owner": owner.to_hex(),
            "signature": signature,
            "publickey": identity.public_key().to_base64_field(false),
        });
        let url = format!("{}/name/{}", self.base, names::percent_encode_name(&name));
        let (status, resp) = self
            .send(self.http.post(url).body(body.to_string()))
            .await?;
        let error_text = || {
            resp.as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(match status {
            200..=299 => {
                if resp
                    .as_ref()
                    .and_then(|v| v.get("success"))
                    .and_then(Value::as_bool)
                    == Some(true)
                {
                    Registration::Success
                } else {
                    Registration::Error(status)
                }
            }
            400 => Registration::IncompleteRequest(error_text()),
            401 => Registration::SignatureVerificationFailed(error_text()),
            402..=499 => Registration::AlreadyTaken(status),
            _ => Registration::Error(status),
        })
    }
}

/// Applies the daemon's checks to a 2xx lookup body.
pub fn check_found(v: &Value) -> Lookup {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let (name, addr, pk, sig) = (s("name"), s("addr"), s("publickey"), s("signature"));
    let bare = addr.strip_prefix("0x").unwrap_or(addr);
    if bare.is_empty() {
        return Lookup::NotFound;
    }
    let mut verified = false;
    if !pk.is_empty() && !sig.is_empty() {
        let Ok(key) = PublicKey::from_base64_field(pk) else {
            return Lookup::InvalidResponse;
        };
        if key.id().to_hex() != bare || key.verify_base64(name.as_bytes(), sig).is_err() {
            return Lookup::InvalidResponse;
        }
        verified = true;
    }
    Lookup::Found {
        name: name.to_owned(),
        addr: format!("0x{bare}"),
        verified,
    }
}

/// Loads the PEM identity at `path`, or generates an RSA key of `bits` and writes it there
/// (mode 0600). Returns the identity and whether it was generated.
pub fn load_or_generate_identity(
    path: &Path,
    bits: KeyBits,
) -> Result<(Identity, bool), NameClientError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok((Identity::from_pem(&bytes)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity::generate(bits)?;
            let pem = id.to_pkcs8_pem()?;
            write_private(path, pem.as_bytes())?;
            Ok((id, true))
        }
        Err(e) => Err(NameClientError::Io(e.kind())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NameClientError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| NameClientError::Io(e.kind()))?;
    f.write_all(bytes)
        .map_err(|e| NameClientError::Io(e.kind()))?;
    f.sync_all().map_err(|e| NameClientError::Io(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_like_the_daemon() {
        assert_eq!(
            canonical_base("ns.jami.net").unwrap(),
            "https://ns.jami.net"
        );
        assert_eq!(
            canonical_base("HTTP://127.0.0.1:8080/NS/").unwrap(),
            "http://127.0.0.1:8080/ns"
        );
        assert!(canonical_base("  ").is_err());
    }

    #[test]
    fn found_body_checks() {
        let id = Identity::generate(KeyBits::Rsa2048).unwrap();
        let good = serde_json::json!({
            "name": "alice",
            "addr": format!("0x{}", id.id().to_hex()),
            "publickey": id.public_key().to_base64_field(true),
            "signature": id.sign_base64(b"alice").unwrap(),
        });
        assert!(matches!(
            check_found(&good),
            Lookup::Found { verified: true, .. }
        ));
        let mut wrong_name = good.clone();
        wrong_name["name"] = "Alice".into();
        assert_eq!(check_found(&wrong_name), Lookup::InvalidResponse);
        let mut upper = good;
        upper["addr"] = format!("0x{}", id.id().to_hex().to_uppercase()).into();
        assert_eq!(
            check_found(&upper),
            Lookup::InvalidResponse,
            "mixed-case addr breaks signed names"
        );
        let legacy = serde_json::json!({"name": "carol", "addr": "0x5555555555555555555555555555555555555555"});
        assert!(matches!(
            check_found(&legacy),
            Lookup::Found {
                verified: false,
                ..
            }
        ));
        assert_eq!(
            check_found(&serde_json::json!({"name": "x", "addr": ""})),
            Lookup::NotFound
        );
    }
}
