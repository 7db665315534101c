//! Local means local: which `Host` and `Origin` headers a request may carry.
//!
//! A web page the user visits can make the browser send requests to `127.0.0.1`: through DNS
//! rebinding (a name of the attacker's that first points at their server, then at 127.0.0.1, so
//! the page's scripts read this server as "same origin"), or as a cross-site "simple" request (a
//! form's POST). The first carries the attacker's name in `Host`, the second a foreign `Origin`.
//! So, as Jupyter's and VS Code's local servers do: `Host` must name the address the server
//! listens on (or `localhost`), and an `Origin`, when sent, must be the server's own.

use std::net::{IpAddr, SocketAddr};

/// The hosts a request may name, fixed when the server starts.
#[derive(Debug, Clone)]
pub struct Guard {
    addr: SocketAddr,
}

impl Guard {
    /// For a server listening on `addr`.
    pub fn new(addr: SocketAddr) -> Guard {
        Guard { addr }
    }

    /// Why a request with this `Host` (and `Origin`, if any) is refused; `None` when it may be
    /// answered.
    pub fn refusal(&self, host: Option<&str>, origin: Option<&str>) -> Option<String> {
        let Some(host) = host else {
            return Some("the request has no Host header".into());
        };
        if !self.host_allowed(host) {
            return Some(format!(
                "Host {host:?} is not this server's address ({}): open the page at \
                 http://{}/",
                self.addr,
                self.page_address()
            ));
        }
        match origin {
            Some(o) if o != format!("http://{host}") => Some(format!(
                "cross-origin request from {o:?} refused: only this server's own page may use it"
            )),
            _ => None,
        }
    }

    /// What a user should type: `localhost` for a loopback server, else the address itself.
    fn page_address(&self) -> String {
        if self.addr.ip().is_loopback() {
            format!("127.0.0.1:{}", self.addr.port())
        } else {
            self.addr.to_string()
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if port.unwrap_or(80) != self.addr.port() {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        // A name other than localhost could be rebound by its owner: only addresses are trusted.
        let Ok(ip) = name.parse::<IpAddr>() else {
            return false;
        };
        let bound = self.addr.ip();
        if bound.is_unspecified() {
            // Listening on every interface: any address of this machine (the kernel delivered
            // the connection to it), as an address, never a name.
            true
        } else {
            ip == bound || (bound.is_loopback() && ip.is_loopback())
        }
    }
}

/// `host[:port]` split, with IPv6 literals in brackets (`[::1]:8080`); `None` when malformed.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        match after {
            "" => (name, None),
            p => (name, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(addr: &str) -> Guard {
        Guard::new(addr.parse().unwrap())
    }

    #[test]
    fn a_loopback_server_answers_its_own_names_only() {
        let g = guard("127.0.0.1:8080");
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
        ] {
            assert_eq!(g.refusal(Some(ok), None), None, "{ok}");
        }
        for bad in [
            "attacker.example:8080",
            "attacker.example",
            "127.0.0.1:9999",
            "127.0.0.1",
            "10.0.0.1:8080",
            "",
            ":8080",
            "[::1",
            "127.0.0.1:80x",
        ] {
            let e = g.refusal(Some(bad), None).unwrap_or_default();
            assert!(e.contains("Host"), "{bad:?} should be refused: {e:?}");
        }
        assert!(g.refusal(None, None).unwrap().contains("no Host"));
    }

    #[test]
    fn origin_must_be_the_page_itself() {
        let g = guard("127.0.0.1:8080");
        let h = Some("127.0.0.1:8080");
        assert_eq!(g.refusal(h, Some("http://127.0.0.1:8080")), None);
        for bad in [
            "http://attacker.example",
            "null",
            "https://127.0.0.1:8080",
            "http://localhost:8080",
        ] {
            let e = g.refusal(h, Some(bad)).unwrap_or_default();
            assert!(e.contains("cross-origin"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn a_server_on_every_interface_takes_addresses_not_names() {
        let g = guard("0.0.0.0:80");
        assert_eq!(g.refusal(Some("192.168.1.20"), None), None);
        assert_eq!(g.refusal(Some("localhost"), None), None);
        assert!(g.refusal(Some("my-laptop.local"), None).is_some());
        let g = guard("192.168.1.20:8080");
        assert_eq!(g.refusal(Some("192.168.1.20:8080"), None), None);
        assert!(g.refusal(Some("192.168.1.21:8080"), None).is_some());
    }
}
