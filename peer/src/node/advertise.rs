//! What address the node tells the tracker other peers should dial.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use crate::transport::route_ip;

use super::NodeError;
use crate::output;

/// The advertised address when none is given: the listen IP if it is a specific one, else
/// the IP of the interface that routes to the tracker, else loopback.
pub fn choose_advertise(listen: IpAddr, port: u16, route: Option<IpAddr>) -> SocketAddr {
    if !listen.is_unspecified() {
        return SocketAddr::new(listen, port);
    }
    match route.filter(|ip| !ip.is_unspecified()) {
        Some(ip) => SocketAddr::new(ip, port),
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
    }
}

/// Checks that `--advertise` is `HOST:PORT` (optionally `https://HOST:PORT`).
///
/// # Errors
/// [`NodeError::BadAdvertise`] for anything else.
pub fn check_advertise(s: &str) -> Result<String, NodeError> {
    let s = s.trim();
    let plain = s.strip_prefix("https://").unwrap_or(s);
    match plain.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_string())
        }
        _ => Err(NodeError::BadAdvertise(output::safe(s))),
    }
}

/// The address to advertise: `given` if any, else [`choose_advertise`] for the bound
/// address, with `https://` in front for a TLS node (so getters know to connect with TLS).
///
/// # Errors
/// A malformed `given`, or `https://` without TLS.
pub async fn resolve(
    given: Option<&str>,
    bound: SocketAddr,
    tracker: Option<&str>,
    tls: bool,
) -> Result<String, NodeError> {
    let addr = match given.map(check_advertise).transpose()? {
        Some(s) => s,
        None => {
            let route = match tracker {
                Some(u) if bound.ip().is_unspecified() => route_ip(u).await,
                _ => None,
            };
            choose_advertise(bound.ip(), bound.port(), route).to_string()
        }
    };
    match (tls, addr.strip_prefix("https://")) {
        (true, plain) => Ok(format!("https://{}", plain.unwrap_or(&addr))),
        (false, Some(_)) => Err(NodeError::HttpsWithoutTls),
        (false, None) => Ok(addr),
    }
}

/// An address this machine can dial to reach a node bound to `bound` (loopback for a
/// wildcard), used by `peer status`.
pub fn local(bound: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let lo = if bound.is_ipv4() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    SocketAddr::new(lo, bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_prefers_a_specific_listen_ip_then_the_route() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(
            choose_advertise(lo, 9, Some(lan)).to_string(),
            "127.0.0.1:9"
        );
        assert_eq!(
            choose_advertise(any, 9, Some(lan)).to_string(),
            "192.168.1.5:9"
        );
        assert_eq!(choose_advertise(any, 9, None).to_string(), "127.0.0.1:9");
        assert_eq!(
            choose_advertise(any, 9, Some(any)).to_string(),
            "127.0.0.1:9"
        );
    }

    #[tokio::test]
    async fn the_route_to_a_local_tracker_is_loopback() {
        let ip = route_ip("http://127.0.0.1:7070").await;
        assert_eq!(ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(route_ip("not a url").await, None);
    }

    #[test]
    fn advertise_must_have_a_port() {
        assert!(check_advertise("example.org:7000").is_ok());
        assert!(check_advertise("[::1]:7000").is_ok());
        assert!(check_advertise("https://example.org:7000").is_ok());
        assert!(check_advertise("example.org").is_err());
        assert!(check_advertise("example.org:0").is_err());
        assert!(check_advertise(":7000").is_err());
    }

    #[tokio::test]
    async fn https_needs_tls_and_tls_adds_https() {
        let bound: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(matches!(
            resolve(Some("https://h:1"), bound, None, false).await,
            Err(NodeError::HttpsWithoutTls)
        ));
        assert_eq!(
            resolve(Some("h:1"), bound, None, true).await.unwrap(),
            "https://h:1"
        );
        assert_eq!(
            resolve(None, bound, None, false).await.unwrap(),
            "127.0.0.1:9"
        );
    }
}
