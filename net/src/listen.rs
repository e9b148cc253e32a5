//! Listener helpers: UDP and TCP sockets with the options servers want.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::NetError;

/// Socket buffer size for busy UDP sockets (relays, DHT): 4 MiB, capped by the kernel's rmem_max.
pub const LARGE_BUFFER: usize = 4 * 1024 * 1024;

/// Options for a bound socket.
#[derive(Clone, Copy, Debug)]
pub struct SocketOptions {
    /// `SO_RCVBUF`/`SO_SNDBUF` in bytes, 0 to keep the system default.
    pub buffer: usize,
    /// `SO_REUSEPORT`, to shard one port over several sockets.
    pub reuse_port: bool,
    /// Static label for error messages (never the address).
    pub label: &'static str,
}

impl SocketOptions {
    /// Defaults for a listener named `label`: large buffers, no port sharing.
    pub fn new(label: &'static str) -> Self {
        Self {
            buffer: LARGE_BUFFER,
            reuse_port: false,
            label,
        }
    }
}

fn socket_for(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    opts: &SocketOptions,
) -> Result<Socket, NetError> {
    let bind_err = |e: std::io::Error| NetError::Bind {
        what: opts.label,
        kind: e.kind(),
    };
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto)).map_err(bind_err)?;
    if addr.is_ipv6() {
        // One socket per family: an IPv6 socket never also takes IPv4 traffic.
        sock.set_only_v6(true).map_err(bind_err)?;
    }
    if ty == Type::STREAM {
        // Lets a restarted server bind while old connections sit in TIME_WAIT. Not for UDP,
        // where it would let two sockets share a port silently.
        sock.set_reuse_address(true).map_err(bind_err)?;
    }
    #[cfg(unix)]
    if opts.reuse_port {
        sock.set_reuse_port(true).map_err(bind_err)?;
    }
    if opts.buffer > 0 {
        // Best effort: the kernel caps these at rmem_max/wmem_max.
        let _ = sock.set_recv_buffer_size(opts.buffer);
        let _ = sock.set_send_buffer_size(opts.buffer);
    }
    sock.set_nonblocking(true).map_err(bind_err)?;
    sock.bind(&addr.into()).map_err(bind_err)?;
    Ok(sock)
}

/// Binds a UDP socket.
pub fn bind_udp_std(
    addr: SocketAddr,
    opts: &SocketOptions,
) -> Result<std::net::UdpSocket, NetError> {
    Ok(socket_for(addr, Type::DGRAM, Protocol::UDP, opts)?.into())
}

/// Binds a UDP socket registered with the current tokio runtime.
pub fn bind_udp(addr: SocketAddr, opts: &SocketOptions) -> Result<tokio::net::UdpSocket, NetError> {
    let std = bind_udp_std(addr, opts)?;
    tokio::net::UdpSocket::from_std(std).map_err(|e| NetError::Bind {
        what: opts.label,
        kind: e.kind(),
    })
}

/// Binds a TCP listener (backlog 1024).
pub fn bind_tcp_std(
    addr: SocketAddr,
    opts: &SocketOptions,
) -> Result<std::net::TcpListener, NetError> {
    let sock = socket_for(addr, Type::STREAM, Protocol::TCP, opts)?;
    sock.listen(1024).map_err(|e| NetError::Bind {
        what: opts.label,
        kind: e.kind(),
    })?;
    Ok(sock.into())
}

/// Binds a TCP listener registered with the current tokio runtime.
pub fn bind_tcp(
    addr: SocketAddr,
    opts: &SocketOptions,
) -> Result<tokio::net::TcpListener, NetError> {
    let std = bind_tcp_std(addr, opts)?;
    tokio::net::TcpListener::from_std(std).map_err(|e| NetError::Bind {
        what: opts.label,
        kind: e.kind(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_v4_and_v6_bind_and_exchange() {
        let opts = SocketOptions::new("test");
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        a.send_to(b"hi", b.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from, a.local_addr().unwrap());
        if let Ok(v6) = bind_udp("[::1]:0".parse().unwrap(), &opts) {
            assert!(v6.local_addr().unwrap().is_ipv6());
        }
    }

    #[tokio::test]
    async fn reuse_port_allows_sharding_one_port() {
        let mut opts = SocketOptions::new("test");
        opts.reuse_port = true;
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let port = a.local_addr().unwrap();
        let b = bind_udp(port, &opts);
        assert!(b.is_ok(), "second SO_REUSEPORT socket on the same port");
    }

    #[tokio::test]
    async fn bind_error_does_not_name_the_address() {
        let opts = SocketOptions::new("udp");
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let err = bind_udp(a.local_addr().unwrap(), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("udp"), "{err}");
        assert!(!err.contains("127.0.0.1"), "{err}");
    }
}
