//! A Kubernetes API test double: a small API server on 127.0.0.1 that real `kubectl` and
//! kube-rs talk to, over real HTTPS with a CA it makes at start and a bearer token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wharf_kube_fake::Error> {
//! let fake = wharf_kube_fake::KubeFake::start(wharf_kube_fake::Options::default()).await?;
//! fake.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! # Ok(()) }
//! ```
//!
//! What it serves, and where it differs from a real API server, is in README.md next to
//! this crate (kept honest: every simplification is listed there).

mod api;
mod controller;
mod discovery;
mod engine;
mod kubelet;
mod proto;
mod resources;
mod scheduler;
mod select;
mod ssa;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use api::{ADMISSION_WEBHOOK, RESTRICTED_USER};
pub use controller::FAULT_ANNOTATION;
pub use kubelet::INSTANCE_LABEL;
pub use resources::{RESOURCES, Resource};
pub use scheduler::{NODE_CPU, NODE_MEMORY, Taint};
pub use select::{FieldSelector, LabelSelector, Requirement};

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct Options {
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The bearer token clients must send; `None` makes a random one.
    pub token: Option<String>,
    /// How long a Deployment, StatefulSet or DaemonSet takes to settle its status.
    pub rollout_delay: Duration,
    /// A second bearer token that may only read (get, list, watch): its writes are
    /// answered 403 `Forbidden` with RBAC's message (user [`RESTRICTED_USER`]).
    pub restricted_token: Option<String>,
    /// Nodes made at start (`kube-fake-node-0`, …), each with a `Ready` condition `True`.
    pub ready_nodes: usize,
    /// More nodes made at start, after the ready ones, with `Ready` `False`.
    pub unready_nodes: usize,
    /// Run the Pods clients create on the local Docker Engine, through its API:
    /// `Some("unix:///path/docker.sock")` on that socket, any other value (`Some("docker")`)
    /// on `DOCKER_HOST`'s `unix://` socket, else `/var/run/docker.sock`; `None`: Pods are
    /// stored, nothing runs them.
    pub kubelet: Option<String>,
    /// The `spec.taints` of every node made at start; the kubelet's scheduler places a Pod
    /// only where it tolerates every `NoSchedule` and `NoExecute` taint.
    pub taints: Vec<Taint>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            token: None,
            restricted_token: None,
            rollout_delay: Duration::ZERO,
            ready_nodes: 1,
            unready_nodes: 0,
            kubelet: None,
            taints: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube-fake: making its certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("kube-fake: setting up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("kube-fake: binding 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("kube-fake: writing the kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: std::io::Error },
}

/// A running fake; dropping it stops the server and every connection.
#[derive(Debug)]
pub struct KubeFake {
    addr: SocketAddr,
    ca_pem: String,
    token: String,
    server: tokio::task::JoinHandle<()>,
    kubelet: Option<Arc<kubelet::Kubelet>>,
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(kubelet) = &self.kubelet {
            kubelet.remove_all();
        }
    }
}

struct Certs {
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn make_certs() -> Result<Certs, Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "wharf kube-fake CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "kube-fake");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let cert = params.signed_by(&server_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    Ok(Certs { ca_pem: ca_cert.pem(), chain: vec![cert.der().clone()], key })
}

fn tls_acceptor(certs: Certs) -> Result<TlsAcceptor, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs.chain, certs.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 256;

impl KubeFake {
    /// Makes the CA and server certificate, binds 127.0.0.1 and serves until dropped.
    pub async fn start(options: Options) -> Result<KubeFake, Error> {
        let certs = make_certs()?;
        let ca_pem = certs.ca_pem.clone();
        let acceptor = tls_acceptor(certs)?;
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|source| Error::Bind { port: options.port, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { port: options.port, source })?;
        let token = options.token.clone().unwrap_or_else(|| {
            let mut buf = [0u8; 24];
            getrandom::fill(&mut buf).expect("the OS random source");
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
        });
        let shared = api::Shared::new(token.clone(), options.restricted_token.clone(), options.rollout_delay);
        shared.add_nodes(options.ready_nodes, options.unready_nodes, &options.taints);
        let kubelet = options.kubelet.clone().map(|docker| {
            let mut id = [0u8; 8];
            getrandom::fill(&mut id).expect("the OS random source");
            let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let kubelet = Arc::new(kubelet::Kubelet::new(&docker, instance));
            shared.set_kubelet(kubelet.clone());
            kubelet
        });
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                if connections.len() >= MAX_CONNECTIONS {
                    connections.join_next().await;
                    continue;
                }
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // As Go's net package (so a real API server) does: small watch events and
                // answers go out at once instead of waiting for the peer's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                        return;
                    };
                    let service = service_fn(move |req| api::handle(shared.clone(), req));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Ok(KubeFake { addr, ca_pem, token, server, kubelet })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA that signed the server certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig that kubectl uses as is: the server URL, the CA and the token.
    pub fn kubeconfig(&self) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-fake\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
             users:\n- name: kube-fake\n  user:\n    token: {}\ncontexts:\n- name: kube-fake\n  context:\n    cluster: kube-fake\n    user: kube-fake\n    namespace: default\n\
             current-context: kube-fake\n",
            self.url(),
            self.token
        )
    }

    /// Writes the kubeconfig atomically (a temporary file renamed), so a reader polling for
    /// the file never sees half of it.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let err = |source| Error::Kubeconfig { path: path.display().to_string(), source };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, self.kubeconfig()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}
