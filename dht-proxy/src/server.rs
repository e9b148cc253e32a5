//! The plain-HTTP accept loop. Every connection is served by hyper (HTTP/1.1, keep-alive,
//! pipelining), except that a connection whose first request is `GET /key/{h}/listen` is
//! served directly: a listen stream never ends, and answering it without an HTTP stack keeps
//! an idle stream at a few hundred bytes instead of hyper's buffers (10 000 open streams are a
//! normal load for a proxy). The bytes on the wire are the same either way.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use waypost_net::shutdown::Shutdown;

use crate::http::parse_key;
use crate::metrics::Route;
use crate::proxy::{Proxy, Refusal};

/// Largest request head read before handing the connection to hyper (which then answers 431).
const MAX_PEEK: usize = 8192;
/// Time allowed for the first request line and, for a listen, its headers.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that does not read its listen stream for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts connections until shutdown.
pub async fn serve_plain(listener: TcpListener, router: Router, proxy: Proxy, shutdown: Shutdown) {
    loop {
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (router, proxy) = (router.clone(), proxy.clone());
        tokio::spawn(connection(tcp, addr, router, proxy));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The key of `GET /key/{h}/listen[?query] HTTP/1.1`, if that is the request line.
fn listen_target(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method != "GET" || version != "HTTP/1.1" || parts.next().is_some() {
        return None;
    }
    let path = target.split('?').next()?;
    let h = path.strip_prefix("/key/")?.strip_suffix("/listen")?;
    (!h.is_empty() && !h.contains(['/', '%'])).then(|| h.to_owned())
}

/// Serves one connection (plain TCP or TLS, already accepted).
pub(crate) async fn connection<S>(mut tcp: S, addr: SocketAddr, router: Router, proxy: Proxy)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line_end = loop {
        if let Some(p) = find(&buf, b"\r\n") {
            break Some(p);
        }
        if buf.len() >= MAX_PEEK {
            break None;
        }
        match tokio::time::timeout(HEAD_TIMEOUT, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if let Some(h) = line_end.and_then(|e| listen_target(&buf[..e])) {
        // Read the rest of the head; the listen stream answers once it is complete.
        let complete = loop {
            if find(&buf, b"\r\n\r\n").is_some() {
                break true;
            }
            if buf.len() >= MAX_PEEK {
                break false;
            }
            match tokio::time::timeout(HEAD_TIMEOUT, tcp.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if complete {
            drop(buf);
            listen_stream(tcp, addr, &h, proxy).await;
            return;
        }
    }
    let activity = Arc::new(Activity::new());
    let io = hyper_util::rt::TokioIo::new(Prefixed {
        prefix: Bytes::from(buf),
        inner: tcp,
        activity: activity.clone(),
    });
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        let busy = Busy::new(act.clone());
        let fut = router.clone().oneshot(req);
        async move {
            // The connection counts as busy until the response body is finished (a get or a
            // listen stream may stay silent for a long time).
            fut.await.map(|resp| {
                resp.map(|b| {
                    axum::body::Body::new(BusyBody {
                        inner: b,
                        _busy: busy,
                    })
                })
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(io, svc);
    let Some(idle) = proxy.inner.opts.idle_timeout else {
        let _ = conn.await;
        return;
    };
    tokio::pin!(conn);
    loop {
        let wake = activity.deadline(idle);
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep_until(wake) => {
                if activity.is_idle(idle) {
                    // Dropping the connection closes it.
                    return;
                }
            }
        }
    }
}

async fn listen_stream<S>(mut tcp: S, addr: SocketAddr, h: &str, proxy: Proxy)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    proxy.count_request();
    proxy.metrics().request(Route::Listen);
    let ip = match addr.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    let _slot = match proxy.acquire_stream(ip) {
        Ok(s) => s,
        Err(r) => {
            let (status, body) = match r {
                Refusal::PerIp => ("429 Too Many Requests", crate::http::ERR_PER_IP),
                Refusal::Global => ("503 Service Unavailable", crate::http::ERR_BUSY),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(WRITE_TIMEOUT, tcp.write_all(resp.as_bytes())).await;
            return;
        }
    };
    let (mut cursor, first) =
        crate::feed::Cursor::open(&proxy.inner.hub, parse_key(h), proxy.backend());
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\ntransfer-encoding: chunked\r\n\r\n";
    let (mut rd, mut wr) = tokio::io::split(tcp);
    if !write_chunks(&mut wr, Some(head), &first).await {
        return;
    }
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            lines = cursor.next() => {
                let Some(lines) = lines else { return };
                if !write_chunks(&mut wr, None, &lines).await {
                    return;
                }
            }
            r = rd.read(&mut sink) => match r {
                // The client closed (or reset) the connection: drop the stream and its listen.
                Ok(0) | Err(_) => return,
                // Anything a client sends on a listen stream is never answered; discard it.
                Ok(_) => {}
            },
        }
    }
}

/// Writes `head` then one chunk per line. `false` if the client is gone or too slow.
async fn write_chunks(
    wr: &mut (impl AsyncWrite + Unpin),
    head: Option<&[u8]>,
    lines: &[Bytes],
) -> bool {
    let mut out = Vec::with_capacity(
        head.map_or(0, <[u8]>::len) + lines.iter().map(|l| l.len() + 12).sum::<usize>(),
    );
    if let Some(h) = head {
        out.extend_from_slice(h);
    }
    for l in lines {
        out.extend_from_slice(format!("{:X}\r\n", l.len()).as_bytes());
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await,
        Ok(Ok(()))
    )
}

/// When a connection last moved bytes, and how many requests it has in flight.
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.busy.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() >= self.deadline(idle)
    }
}

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Self {
        a.busy.fetch_add(1, Ordering::SeqCst);
        Self(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request marked busy until it is finished or dropped.
struct BusyBody {
    inner: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream with bytes already read put back in front, recording activity.
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.activity.touch();
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.activity.touch();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_plain_listen_requests() {
        assert_eq!(
            listen_target(b"GET /key/abc/listen HTTP/1.1").as_deref(),
            Some("abc")
        );
        assert_eq!(
            listen_target(b"GET /key/abc/listen?x=1 HTTP/1.1").as_deref(),
            Some("abc")
        );
        for l in [
            &b"POST /key/abc/listen HTTP/1.1"[..],
            b"GET /key/abc/listen HTTP/1.0",
            b"GET /key//listen HTTP/1.1",
            b"GET /key/a/b/listen HTTP/1.1",
            b"GET /key/a%20b/listen HTTP/1.1",
            b"GET /abc/listen HTTP/1.1",
            b"GET /key/abc HTTP/1.1",
            b"\xff\xfe",
        ] {
            assert!(listen_target(l).is_none(), "{}", String::from_utf8_lossy(l));
        }
    }
}
