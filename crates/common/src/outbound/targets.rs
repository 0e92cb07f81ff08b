//! Targets outside the platform (connectors, webhooks) that users name by URL: only public
//! addresses are reached, checked when the URL is registered and again at every connection
//! (DNS can change), redirects are not followed, and answers are read up to a limit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("is not a valid http(s) URL: {0}")]
    NotAUrl(String),
    #[error("must not carry a user name or password; use the auth settings")]
    Credentials,
    #[error("resolves to {0}, a private, loopback, link-local or metadata address")]
    NotPublic(IpAddr),
    #[error("does not resolve: {0}")]
    Unresolvable(String),
}

/// True for an address anyone on the internet could reach: not loopback, private,
/// link-local (cloud metadata lives there), shared (CGNAT), documentation, multicast or
/// unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b)
}

/// Checks a URL's form: http or https, a host, no credentials; an IP-literal host must be
/// public unless `allow_private`.
pub fn check_url(text: &str, allow_private: bool) -> Result<url::Url, TargetError> {
    let url = url::Url::parse(text).map_err(|e| TargetError::NotAUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::NotAUrl(format!("scheme {}", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    match url.host() {
        None => return Err(TargetError::NotAUrl("no host".into())),
        Some(url::Host::Ipv4(ip)) if !allow_private && !is_public_v4(ip) => {
            return Err(TargetError::NotPublic(IpAddr::V4(ip)));
        }
        Some(url::Host::Ipv6(ip)) if !allow_private && !is_public(IpAddr::V6(ip)) => {
            return Err(TargetError::NotPublic(IpAddr::V6(ip)));
        }
        Some(_) => {}
    }
    Ok(url)
}

/// Checks a URL and, for a host name, that every address it resolves to is public.
pub async fn check_target(text: &str, allow_private: bool) -> Result<url::Url, TargetError> {
    let url = check_url(text, allow_private)?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TargetError::Unresolvable(e.to_string()))?
            .collect();
        if addresses.is_empty() {
            return Err(TargetError::Unresolvable(host.to_owned()));
        }
        if !allow_private && let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
            return Err(TargetError::NotPublic(private.ip()));
        }
    }
    Ok(url)
}

/// Resolves host names to their public addresses only, so that a name that changed to a
/// private address since it was checked is not reached.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(TargetError::NotPublic(private.ip()))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client for targets outside the platform: the given timeout, no redirects, and
/// (unless `allow_private`) public addresses only at every connection.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if !allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    builder.build()
}

/// [`client`], made at its first use.
pub fn lazy_client(timeout: Duration, allow_private: bool) -> super::LazyClient {
    super::LazyClient::new(move || client(timeout, allow_private))
}

/// Reads at most `limit` bytes of an answer's body, as text (lossy), for logs and status.
pub async fn excerpt(response: reqwest::Response, limit: usize) -> String {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private}");
        }
        for public in ["8.8.8.8", "20.50.2.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_must_be_http_with_a_public_literal_host() {
        assert!(check_url("https://erp.example.com/hook", false).is_ok());
        for bad in [
            "ftp://x.example/a",
            "https://user:pw@x.example/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
    }

    #[tokio::test]
    async fn names_that_resolve_to_loopback_are_refused() {
        assert!(matches!(
            check_target("http://localhost:9/", false).await,
            Err(TargetError::NotPublic(_))
        ));
        assert!(check_target("http://localhost:9/", true).await.is_ok());
    }
}
