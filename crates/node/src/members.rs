//! Membership changes at the API edge, shared by the etcd Cluster service and the HTTP API so
//! both refuse the same input the same way: peer URLs (etcd's `http://host:port`) parsed into
//! the host:port the transport dials, client addresses checked, and the member an Add created
//! found in the configuration the engine returned. The changes themselves are decided like
//! writes and applied by the replica layer (`synod_core::membership`).

use synod_core::membership::{Configuration, Member};

/// etcd's text for a peer URL it cannot use (rpctypes' `ErrGRPCMemberBadURLs`).
pub const ERR_BAD_URLS: &str = "etcdserver: given member URLs are invalid";

/// Why a URL or address was refused (the detail after [`ERR_BAD_URLS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAddress(pub String);

impl std::fmt::Display for BadAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host:port of a peer URL: `http://host:port` or `https://host:port` (a trailing `/`
/// allowed, nothing else after the port), or a bare `host:port`.
pub fn peer_addr_of_url(url: &str) -> Result<String, BadAddress> {
    let rest = match url.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(BadAddress(format!(
                "{url:?}: scheme {scheme:?} is not http or https"
            )));
        }
        None => url,
    };
    let addr = rest.strip_suffix('/').unwrap_or(rest);
    check_host_port(addr).map_err(|why| BadAddress(format!("{url:?}: {why}")))?;
    Ok(addr.to_string())
}

/// The one peer URL a change names (etcd sends a list; a Synod member has one peer address).
pub fn peer_addr_of_urls(urls: &[String]) -> Result<String, BadAddress> {
    match urls {
        [one] => peer_addr_of_url(one),
        [] => Err(BadAddress("no peer URL given".into())),
        more => Err(BadAddress(format!(
            "{} peer URLs given; a member has exactly one",
            more.len()
        ))),
    }
}

/// `host:port` with a non-empty host and a port in 1..=65535; empty is allowed ("not known
/// yet") only where the caller says so.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("not host:port".into());
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("bad host {host:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("bad port {port:?}")),
    }
}

/// The member an Add created: the one at `peer_addr` in the configuration after it.
pub fn added_member(after: &Configuration, peer_addr: &str) -> Option<Member> {
    after
        .members
        .iter()
        .find(|m| m.peer_addr == peer_addr)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_become_host_port() {
        assert_eq!(
            peer_addr_of_url("http://127.0.0.1:2380").as_deref(),
            Ok("127.0.0.1:2380")
        );
        assert_eq!(
            peer_addr_of_url("https://n4.example:2380/").as_deref(),
            Ok("n4.example:2380")
        );
        assert_eq!(peer_addr_of_url("10.0.0.4:1").as_deref(), Ok("10.0.0.4:1"));
    }

    #[test]
    fn malformed_peer_urls_are_refused_naming_the_url() {
        for bad in [
            "unix://x:1",
            "http://127.0.0.1",
            "http://:2380",
            "http://h:99999",
            "http://h:0",
            "http://h:1/path",
            "",
        ] {
            let e = peer_addr_of_url(bad).unwrap_err();
            assert!(e.0.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(peer_addr_of_urls(&[]).is_err());
        assert!(peer_addr_of_urls(&["h:1".into(), "h:2".into()]).is_err());
    }
}
