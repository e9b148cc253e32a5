//! A small TURN client on our own codec, for protocol-level assertions.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use waypost_protocol::stun::{Class, Message, MessageWriter, attr, auth, method};

/// An attribute to send.
#[derive(Clone)]
pub enum A {
    Raw(u16, Vec<u8>),
    Xor(u16, SocketAddr),
}

pub fn transport_udp() -> A {
    A::Raw(
        attr::REQUESTED_TRANSPORT,
        vec![attr::TRANSPORT_UDP, 0, 0, 0],
    )
}

pub struct Creds {
    pub user: Vec<u8>,
    pub realm: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key: [u8; 16],
}

pub fn build(m: u16, class: Class, attrs: &[A], creds: Option<&Creds>) -> Vec<u8> {
    let mut tid = [0u8; 12];
    for b in &mut tid {
        *b = rand_byte();
    }
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, m, class, &tid);
    // Like real clients, announce a SOFTWARE name: the server never answers an unauthenticated
    // UDP request with more bytes than it received, so tiny requests get no challenge.
    w.attr(attr::SOFTWARE, b"waypost-test-client");
    for a in attrs {
        match a {
            A::Raw(t, v) => w.attr(*t, v),
            A::Xor(t, addr) => w.xor_addr(*t, *addr),
        };
    }
    if let Some(c) = creds {
        w.attr(attr::USERNAME, &c.user)
            .attr(attr::REALM, &c.realm)
            .attr(attr::NONCE, &c.nonce);
        w.integrity(&c.key);
    }
    w.fingerprint();
    w.finish();
    out
}

fn rand_byte() -> u8 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static S: AtomicU64 = AtomicU64::new(0x1234_5678_9abc_def1);
    let mut x = S.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 56) as u8
}

/// Error code of a response, 0 for success.
pub fn code(resp: &[u8]) -> u16 {
    let m = Message::parse(resp).expect("valid STUN response");
    match m.class() {
        Class::Success => 0,
        _ => attr::decode_error_code(m.get(attr::ERROR_CODE).expect("ERROR-CODE")).expect("code"),
    }
}

/// A UDP TURN client.
pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub user: Vec<u8>,
    pub pass: Vec<u8>,
    pub creds: Option<Creds>,
}

impl Client {
    pub async fn new(server: SocketAddr, user: &str, pass: &str) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self {
            sock,
            server,
            user: user.as_bytes().to_vec(),
            pass: pass.as_bytes().to_vec(),
            creds: None,
        }
    }

    /// Sends bytes and waits up to 1 s for a STUN answer with the same transaction ID.
    pub async fn raw(&self, req: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(req, self.server).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let r = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf))
                .await
                .ok()?;
            let (n, _) = r.unwrap();
            if n >= 20 && buf[8..20] == req[8..20] {
                return Some(buf[..n].to_vec());
            }
        }
    }

    fn learn(&mut self, resp: &[u8]) {
        let m = Message::parse(resp).unwrap();
        let realm = m.get(attr::REALM).expect("REALM in challenge").to_vec();
        let nonce = m.get(attr::NONCE).expect("NONCE in challenge").to_vec();
        let key = auth::long_term_key(&self.user, &realm, &self.pass);
        self.creds = Some(Creds {
            user: self.user.clone(),
            realm,
            nonce,
            key,
        });
    }

    /// An authenticated request, answering the 401/438 challenges as clients do.
    pub async fn request(&mut self, m: u16, attrs: &[A]) -> Vec<u8> {
        for _ in 0..3 {
            let req = build(m, Class::Request, attrs, self.creds.as_ref());
            let resp = self.raw(&req).await.expect("an answer");
            match code(&resp) {
                401 if self.creds.is_none() => self.learn(&resp),
                438 => self.learn(&resp),
                _ => return resp,
            }
        }
        panic!("authentication loop");
    }

    pub async fn allocate(&mut self) -> SocketAddr {
        let resp = self.request(method::ALLOCATE, &[transport_udp()]).await;
        assert_eq!(code(&resp), 0, "allocate failed");
        let m = Message::parse(&resp).unwrap();
        let key = self.creds.as_ref().unwrap().key;
        assert!(m.verify_integrity(&key), "response integrity");
        m.xor_addr(attr::XOR_RELAYED_ADDRESS)
            .expect("relayed address")
    }
}

/// Reads one framed message from a TCP control connection.
pub async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut h))
        .await
        .expect("frame in time")
        .unwrap();
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let total = if h[0] >> 6 == 0 {
        16 + len
    } else {
        len.div_ceil(4) * 4
    };
    let mut rest = vec![0u8; total];
    s.read_exact(&mut rest).await.unwrap();
    let mut out = h.to_vec();
    out.extend_from_slice(&rest);
    out
}

/// A TCP request with the same challenge handling.
pub async fn tcp_request(
    s: &mut TcpStream,
    creds: &mut Option<Creds>,
    user: &str,
    pass: &str,
    m: u16,
    attrs: &[A],
) -> Vec<u8> {
    for _ in 0..3 {
        let req = build(m, Class::Request, attrs, creds.as_ref());
        s.write_all(&req).await.unwrap();
        let resp = read_frame(s).await;
        match code(&resp) {
            401 if creds.is_none() => {}
            438 => {}
            _ => return resp,
        }
        let mm = Message::parse(&resp).unwrap();
        let realm = mm.get(attr::REALM).unwrap().to_vec();
        let nonce = mm.get(attr::NONCE).unwrap().to_vec();
        let key = auth::long_term_key(user.as_bytes(), &realm, pass.as_bytes());
        *creds = Some(Creds {
            user: user.as_bytes().to_vec(),
            realm,
            nonce,
            key,
        });
    }
    panic!("authentication loop");
}
