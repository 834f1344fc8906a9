//! TCP Fast Open (RFC 7413): a client that has reached a server before carries its first
//! bytes (the HTTP/2 preface and the first request) in the SYN, so the answer comes one
//! round trip after `connect` instead of two. A `peer get` makes two fresh connections
//! before its first chunk (tracker, then the holder): on a 100 ms link that is 200 ms.
//!
//! The client side is on in Linux by default (`net.ipv4.tcp_fastopen` bit 1). The server
//! side needs the operator's consent (bit 2, e.g. `sysctl -w net.ipv4.tcp_fastopen=3`):
//! without it a listener set up here accepts ordinary handshakes only, and a client's data
//! simply follows the handshake. Nothing here can fail a connection: every call is a hint,
//! and the kernel falls back to a plain handshake when a path drops SYNs with data.
//!
//! A SYN's data can in principle be replayed by the network, so it is only ever what a
//! connection sends first: gRPC calls whose repeat is harmless (a lookup, a chunk request,
//! a report of held chunks) or refused (a second registration of a name).

use std::os::fd::AsRawFd;

/// How many handshakes carrying data a listener may hold before the kernel falls back to
/// plain ones for the rest (its defence against SYN floods with data).
const SERVER_QUEUE: i32 = 256;

/// Lets `listener` accept data in SYNs where the kernel allows it; returns whether it does
/// (the `net.ipv4.tcp_fastopen` server bit of the listener's network namespace).
pub fn accept_on(listener: &impl AsRawFd) -> bool {
    set_option(listener, imp::TCP_FASTOPEN, SERVER_QUEUE) && server_enabled()
}

/// Makes a not yet connected `socket` send its first write in the SYN when the kernel
/// holds a cookie of the server from an earlier connection (otherwise it asks for one).
/// With a cookie, `connect` returns at once and a refused connection shows at the first
/// write or read instead.
pub fn connect_with(socket: &impl AsRawFd) {
    set_option(socket, imp::TCP_FASTOPEN_CONNECT, 1);
}

/// Whether this network namespace lets listeners accept data in SYNs.
pub fn server_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_some_and(|v| v & 2 != 0)
}

fn set_option(socket: &impl AsRawFd, name: i32, value: i32) -> bool {
    imp::setsockopt_int(socket.as_raw_fd(), name, value)
}

#[cfg(target_os = "linux")]
mod imp {
    pub const TCP_FASTOPEN: i32 = libc::TCP_FASTOPEN;
    pub const TCP_FASTOPEN_CONNECT: i32 = libc::TCP_FASTOPEN_CONNECT;

    #[allow(unsafe_code)]
    pub fn setsockopt_int(fd: i32, name: i32, value: i32) -> bool {
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is a socket the caller owns and keeps open for the call; the option
        // value is a pointer to an int on this stack frame, with its length.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                name,
                std::ptr::from_ref(&value).cast(),
                len,
            )
        };
        r == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub const TCP_FASTOPEN: i32 = 0;
    pub const TCP_FASTOPEN_CONNECT: i32 = 0;

    pub fn setsockopt_int(_fd: i32, _name: i32, _value: i32) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_options_take_on_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(accept_on(&listener), server_enabled());
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        connect_with(&socket);
        // With the option set (and no cookie for a port nobody answered before), the
        // handshake is an ordinary one: the connection works.
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(socket.connect(addr), listener.accept());
        client.unwrap();
        server.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_connect_option_is_known_to_the_kernel() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        assert!(set_option(&socket, imp::TCP_FASTOPEN_CONNECT, 1));
        assert!(!set_option(&socket, 999, 1), "an unknown option is refused");
    }
}
