//! DHT proxy client (OpenDHT REST API, spec opendht.md Part B), behaving like OpenDHT's
//! `DhtProxyClient`: `GET /` node info, `GET /key/{h}` one-shot get (one JSON value per line),
//! `POST /key/{h}` put, `GET /key/{h}/listen` streaming listen, `SUBSCRIBE`/`UNSUBSCRIBE
//! /key/{h}` push listens.

use serde_json::{Value as Json, json};

/// Proxy client errors. Messages carry no URL, key or token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyClientError {
    /// The URL is not usable.
    #[error("invalid proxy URL")]
    Url,
    /// Transport failure.
    #[error("request failed: {0}")]
    Http(&'static str),
    /// The proxy answered with an unexpected status.
    #[error("proxy answered HTTP {0}")]
    Status(u16),
    /// The proxy's body was not the JSON the API specifies.
    #[error("invalid response body")]
    Body,
}

fn http_err(e: &reqwest::Error) -> ProxyClientError {
    ProxyClientError::Http(if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    })
}

/// Canonicalises a proxy URL like the reference client: `host[:port]` gets `http://`.
pub fn canonical_base(url: &str) -> Result<String, ProxyClientError> {
    let mut u = url.trim().to_owned();
    if u.is_empty() {
        return Err(ProxyClientError::Url);
    }
    if !u.contains("://") {
        u = format!("http://{u}");
    }
    while u.ends_with('/') {
        u.pop();
    }
    Ok(u)
}

/// Parses `\n`-separated JSON values (a get or listen body).
pub fn parse_lines(text: &str) -> Result<Vec<Json>, ProxyClientError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|_| ProxyClientError::Body))
        .collect()
}

/// A push subscription (SUBSCRIBE body, spec B.8).
#[derive(Clone)]
pub struct Subscription {
    /// Push token (device token, or the UnifiedPush endpoint URL).
    pub token: String,
    /// Client id (Jami: the account id).
    pub client_id: String,
    /// Session id (8 random printable characters in the reference client).
    pub session_id: String,
    /// `android`, `ios`, `unifiedpush` or anything else.
    pub platform: String,
    /// Topic (iOS bundle id); empty for the server's default.
    pub topic: String,
}

/// A DHT proxy client.
#[derive(Clone)]
pub struct ProxyClient {
    base: String,
    http: reqwest::Client,
}

impl ProxyClient {
    /// A client for the proxy at `url` (`http(s)://host[:port]` or `host[:port]`).
    pub fn new(url: &str) -> Result<Self, ProxyClientError> {
        Self::with_source(url, None)
    }

    /// Like [`Self::new`], connecting from a given local IP address.
    pub fn with_source(
        url: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Self, ProxyClientError> {
        let base = canonical_base(url)?;
        let http = reqwest::Client::builder()
            .local_address(source)
            .user_agent("RESTinio client")
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| http_err(&e))?;
        Ok(Self { base, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /`: node info.
    pub async fn info(&self) -> Result<Json, ProxyClientError> {
        let r = self
            .http
            .get(self.url("/"))
            .header("Accept", "*/*")
            .send()
            .await
            .map_err(|e| http_err(&e))?;
        if !r.status().is_success() {
            return Err(ProxyClientError::Status(r.status().as_u16()));
        }
        r.json().await.map_err(|_| ProxyClientError::Body)
    }

    /// `GET /key/{h}`: every value, waiting for the DHT get to finish.
    pub async fn get(&self, key_hex: &str) -> Result<Vec<Json>, ProxyClientError> {
        let r = self
            .http
            .get(self.url(&format!("/key/{key_hex}")))
            .header("Content-Type", "application/json")
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| http_err(&e))?;
        if !r.status().is_success() {
            return Err(ProxyClientError::Status(r.status().as_u16()));
        }
        let text = r.text().await.map_err(|e| http_err(&e))?;
        parse_lines(&text)
    }

    /// `POST /key/{h}`: puts a value JSON (spec A.8); returns the stored value JSON.
    pub async fn put(&self, key_hex: &str, value: &Json) -> Result<Json, ProxyClientError> {
        let r = self
            .http
            .post(self.url(&format!("/key/{key_hex}")))
            .header("Content-Type", "application/json")
            .body(value.to_string())
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| http_err(&e))?;
        if !r.status().is_success() {
            return Err(ProxyClientError::Status(r.status().as_u16()));
        }
        let text = r.text().await.map_err(|e| http_err(&e))?;
        serde_json::from_str(text.trim()).map_err(|_| ProxyClientError::Body)
    }

    /// `GET /key/{h}/listen`: calls `on_value` for each line until it returns `false`.
    pub async fn listen(
        &self,
        key_hex: &str,
        on_value: &mut dyn FnMut(Json) -> bool,
    ) -> Result<(), ProxyClientError> {
        let mut r = self
            .http
            .get(self.url(&format!("/key/{key_hex}/listen")))
            .header("Content-Type", "application/json")
            .send()
            .await
            .map_err(|e| http_err(&e))?;
        if !r.status().is_success() {
            return Err(ProxyClientError::Status(r.status().as_u16()));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| http_err(&e))? {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let v: Json = serde_json::from_str(line).map_err(|_| ProxyClientError::Body)?;
                if v.as_object().is_some_and(serde_json::Map::is_empty) {
                    continue;
                }
                if !on_value(v) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn method(name: &str) -> reqwest::Method {
        reqwest::Method::from_bytes(name.as_bytes()).unwrap_or(reqwest::Method::POST)
    }

    /// `SUBSCRIBE /key/{h}`; returns the status and the body lines.
    pub async fn subscribe(
        &self,
        key_hex: &str,
        s: &Subscription,
        refresh: bool,
    ) -> Result<Vec<Json>, ProxyClientError> {
        let mut body = json!({
            "key": s.token,
            "client_id": s.client_id,
            "session_id": s.session_id,
            "platform": s.platform,
            "topic": s.topic,
        });
        if refresh {
            body["refresh"] = json!(true);
        }
        let r = self
            .http
            .request(
                Self::method("SUBSCRIBE"),
                self.url(&format!("/key/{key_hex}")),
            )
            .header("Content-Type", "application/json")
            .body(format!("{body} "))
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| http_err(&e))?;
        if !r.status().is_success() {
            return Err(ProxyClientError::Status(r.status().as_u16()));
        }
        let text = r.text().await.map_err(|e| http_err(&e))?;
        parse_lines(&text)
    }

    /// `UNSUBSCRIBE /key/{h}`.
    pub async fn unsubscribe(
        &self,
        key_hex: &str,
        token: &str,
        client_id: &str,
    ) -> Result<(), ProxyClientError> {
        let r = self
            .http
            .request(
                Self::method("UNSUBSCRIBE"),
                self.url(&format!("/key/{key_hex}")),
            )
            .header("Content-Type", "application/json")
            .body(json!({"key": token, "client_id": client_id}).to_string())
            .send()
            .await
            .map_err(|e| http_err(&e))?;
        if !r.status().is_success() {
            return Err(ProxyClientError::Status(r.status().as_u16()));
        }
        Ok(())
    }
}
