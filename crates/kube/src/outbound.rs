//! The server's outbound policy (`wharf-outbound`) on cluster connections: an API server at
//! an internal address (loopback, private, link-local…) is called only when an admin's
//! `outbound_allow` names it, as for every other call the server makes on a user's behalf.
//!
//! Where the check happens, so nothing slips past it:
//! - an **IP-literal** server (`https://10.0.0.1:6443`) is checked when the connection is
//!   built ([`crate::Connection::from_kubeconfig`]); hyper connects to literals directly
//!   and every request of a connection goes to that one server;
//! - a **name** is checked by the connector's resolver on every new TCP connection: the
//!   addresses it resolves to are filtered then, so a name that resolved outward once and
//!   inward later (DNS rebinding) is still refused. There is no window between check and
//!   connect: hyper connects to exactly the addresses the resolver handed back.
//!
//! The client is kube-rs's own stack (base URI, auth, TLS by its rustls config, connect and
//! read timeouts) built on that connector; kube-rs's retry layer and tracing are left out.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt as _;
use tower::{BoxError, ServiceBuilder};
use wharf_outbound::{Policy, Refused};

/// Checks an IP-literal host now (a name is checked at connect time by [`PolicyResolver`]).
pub(crate) fn check_literal(policy: &Policy, host: &str) -> Result<(), Refused> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => policy.check(bare, ip),
        Err(_) => Ok(()),
    }
}

/// A kube-rs client whose every TCP connection goes through `policy`.
pub(crate) fn client(config: kube::Config, policy: &Policy) -> Result<kube::Client, kube::Error> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Installed by another thread in between is fine: only a default is wanted.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut http = HttpConnector::new_with_resolver(PolicyResolver { policy: policy.clone() });
    http.enforce_http(false);
    // As kubectl (Go's net/http) does: a watch's small events must not wait for a
    // delayed ACK (40 ms stalls otherwise).
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut timed = hyper_timeout::TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(timed);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// Resolves a name with the system resolver and keeps the addresses the policy allows;
/// fails with the [`Refused`] when none is left.
#[derive(Clone)]
struct PolicyResolver {
    policy: Policy,
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower::Service<Name> for PolicyResolver {
    type Response = Addrs;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move { Ok(policy.resolve(name.as_str()).await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_checked_names_are_left_to_the_resolver() {
        let none = Policy::default();
        assert_eq!(check_literal(&none, "127.0.0.1").unwrap_err().kind, "loopback");
        assert_eq!(check_literal(&none, "[::1]").unwrap_err().kind, "loopback");
        assert_eq!(check_literal(&none, "169.254.169.254").unwrap_err().kind, "link-local");
        assert!(check_literal(&none, "8.8.8.8").is_ok());
        assert!(check_literal(&none, "localhost").is_ok(), "names meet the resolver");
        let allowed = Policy::new(&["127.0.0.1"]).unwrap();
        assert!(check_literal(&allowed, "127.0.0.1").is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_internal_answers() {
        use tower::Service as _;
        let name: Name = "localhost".parse().unwrap();
        let mut refusing = PolicyResolver { policy: Policy::default() };
        let err = refusing.call(name.clone()).await.unwrap_err();
        let refused = err.downcast_ref::<Refused>().expect("a Refused");
        assert_eq!(refused.host, "localhost");
        let mut allowing = PolicyResolver { policy: Policy::new(&["localhost"]).unwrap() };
        let addrs: Vec<_> = allowing.call(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty(), "{addrs:?}");
    }
}
