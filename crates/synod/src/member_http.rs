//! How a member talks to the other members' HTTP APIs — finding its place when it joins, and
//! a wiped member reading the configuration (the membership changes a member makes for itself
//! go to the peer ports: `synod_node::self_change`): plain HTTP, or,
//! when the cluster's client ports speak TLS, HTTPS trusting the cluster's CA and presenting
//! this member's own client-port certificate as its client identity (`synod certs` makes it
//! good for client authentication too, as etcd's member certificates are), so the ports'
//! client certificate auth lets it in. Before 2026-12-05 these calls were plain `http://`, and
//! a member could not join a cluster with client TLS on.

use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use synod_node::tls::TlsFiles;

/// An HTTP client for other members' APIs, and the scheme to reach them with.
#[derive(Clone, Debug)]
pub struct MemberHttp {
    client: reqwest::Client,
    scheme: &'static str,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

impl MemberHttp {
    /// For the client ports as `tls` (the cluster's client side) sets them up.
    pub fn new(tls: &TlsFiles, timeout: Duration) -> anyhow::Result<MemberHttp> {
        let builder = reqwest::Client::builder().timeout(timeout);
        if !tls.enabled() {
            return Ok(MemberHttp {
                client: builder.build().context("HTTP client")?,
                scheme: "http",
            });
        }
        let ca = tls.trusted_ca_file.as_ref().context(
            "client TLS is on but no trusted CA file is set: a member cannot verify the others",
        )?;
        let roots = reqwest::Certificate::from_pem_bundle(&read(ca)?)
            .with_context(|| format!("CA certificates in {}", ca.display()))?;
        let mut builder = roots
            .into_iter()
            .fold(builder.use_rustls_tls(), |b, c| b.add_root_certificate(c));
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            builder = builder.identity(identity(cert, key)?);
        }
        Ok(MemberHttp {
            client: builder.build().context("HTTPS client")?,
            scheme: "https",
        })
    }

    /// The URL of `path` at `endpoint` (host:port, or a URL whose scheme is kept).
    pub fn url(&self, endpoint: &str, path: &str) -> String {
        match endpoint.contains("://") {
            true => format!("{}{path}", endpoint.trim_end_matches('/')),
            false => format!("{}://{endpoint}{path}", self.scheme),
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// The certificate and key files as one client identity.
fn identity(cert: &Path, key: &Path) -> anyhow::Result<reqwest::Identity> {
    let mut pem = read(cert)?;
    pem.push(b'\n');
    pem.extend(read(key)?);
    reqwest::Identity::from_pem(&pem).with_context(|| {
        format!(
            "client identity from {} and {}",
            cert.display(),
            key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_scheme_of_the_client_ports_unless_they_name_one() {
        let plain = MemberHttp::new(&TlsFiles::default(), Duration::from_secs(1)).expect("http");
        assert_eq!(plain.url("127.0.0.1:1", "/v1/x"), "http://127.0.0.1:1/v1/x");
        assert_eq!(
            plain.url("https://h:2/", "/v1/x"),
            "https://h:2/v1/x",
            "a scheme given is kept"
        );
    }

    #[test]
    fn client_tls_without_a_ca_is_refused_by_name() {
        let tls = TlsFiles {
            cert_file: Some("cert.pem".into()),
            key_file: Some("key.pem".into()),
            ..TlsFiles::default()
        };
        let e = MemberHttp::new(&tls, Duration::from_secs(1)).expect_err("no CA");
        assert!(e.to_string().contains("no trusted CA file"), "{e:#}");
    }
}
