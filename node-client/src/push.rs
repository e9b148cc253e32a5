//! A built-in local push receiver, standing in for a phone's push service.
//!
//! It accepts the two kinds of HTTP POST a DHT proxy sends (spec opendht.md B.10):
//! - gorush gateway calls, `POST /api/push` with `{"notifications":[{"tokens":[..],
//!   "platform":..,"data":{..},..}]}` (the proxy's push server points here);
//! - UnifiedPush deliveries: the bare payload JSON posted to the endpoint URL that was given as
//!   the push token (any other path).
//!
//! Each notification's data object is handed out as a [`Push`].

use std::net::SocketAddr;

use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One received notification.
#[derive(Clone, Debug)]
pub struct Push {
    /// `gorush` or `unifiedpush`.
    pub via: &'static str,
    /// The gateway's token list (gorush) or the request path (UnifiedPush).
    pub tokens: Vec<String>,
    /// Gorush priority, if any.
    pub priority: Option<String>,
    /// The data object (`key`, `to`, `t`, `s`, `exp`, `timeout`, ...).
    pub data: Json,
}

/// A running receiver.
pub struct PushReceiver {
    /// The address it listens on.
    pub addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Push>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MAX_REQUEST: usize = 1024 * 1024;

impl PushReceiver {
    /// Starts listening on `bind`.
    pub async fn start(bind: SocketAddr) -> std::io::Result<Self> {
        let l = TcpListener::bind(bind).await?;
        let addr = l.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = serve(s, tx).await;
                });
            }
        });
        Ok(Self { addr, rx, task })
    }

    /// A UnifiedPush endpoint URL on this receiver.
    pub fn endpoint(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The next notification.
    pub async fn next(&mut self) -> Option<Push> {
        self.rx.recv().await
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(mut s: TcpStream, tx: mpsc::UnboundedSender<Push>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // One request (keep-alive supported).
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > MAX_REQUEST {
                return Ok(());
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut len = 0usize;
        let mut chunked = false;
        let mut close = false;
        for h in lines {
            let Some((k, v)) = h.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        buf.drain(..head_end);
        let body = if chunked {
            read_chunked(&mut s, &mut buf).await?
        } else {
            while buf.len() < len.min(MAX_REQUEST) {
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..len.min(buf.len())).collect()
        };
        let ok = method == "POST";
        if ok {
            deliver(&path, &body, &tx);
        }
        let resp: &[u8] = if ok {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        } else {
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"
        };
        s.write_all(resp).await?;
        if close {
            return Ok(());
        }
    }
}

async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = find(buf, b"\r\n") {
                break p;
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(body);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(body);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
        if size == 0 || body.len() > MAX_REQUEST {
            return Ok(body);
        }
    }
}

fn deliver(path: &str, body: &[u8], tx: &mpsc::UnboundedSender<Push>) {
    let Ok(v) = serde_json::from_slice::<Json>(body) else {
        return;
    };
    if path == "/api/push" {
        if let Some(list) = v.get("notifications").and_then(Json::as_array) {
            for n in list {
                let tokens = n
                    .get("tokens")
                    .and_then(Json::as_array)
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let priority = n
                    .get("priority")
                    .or_else(|| n.get("android").and_then(|a| a.get("priority")))
                    .and_then(Json::as_str)
                    .map(str::to_owned);
                let _ = tx.send(Push {
                    via: "gorush",
                    tokens,
                    priority,
                    data: n.get("data").cloned().unwrap_or(Json::Null),
                });
            }
        }
        return;
    }
    let _ = tx.send(Push {
        via: "unifiedpush",
        tokens: vec![path.to_owned()],
        priority: None,
        data: v,
    });
}
