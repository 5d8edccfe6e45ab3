//! HTTPS to a private instance whose certificate a private CA signed: refused with
//! the system's trust store alone, accepted once the CA bundle (`ca_file`) is given.
//! The instance is a TLS listener on loopback serving an empty repository list; its
//! certificate (for IP 127.0.0.1) and the CA are fixtures made with openssl, valid
//! for a hundred years.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wharf_scm::provider::{HttpClient, Provider, ProviderClient, ProviderError};

const CA: &[u8] = include_bytes!("fixtures/tls/ca.pem");
const CERT: &[u8] = include_bytes!("fixtures/tls/server.pem");
const KEY: &[u8] = include_bytes!("fixtures/tls/server.key");

/// Serves `[]` as JSON over TLS to every request; returns `https://127.0.0.1:PORT`.
async fn private_instance() -> String {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(CERT).map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let config = ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: fine.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
                              connection: close\r\n\r\n[]";
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    base
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_its_bundle_is_given() {
    let base = private_instance().await;
    let loopback = wharf_outbound::Policy::new(&["127.0.0.1"]).unwrap();
    let client = ProviderClient::new(Provider::GitLab, Some(&base), Some("tok-123456"))
        .unwrap()
        .with_http(&HttpClient::new(None, &loopback).unwrap());
    let err = client.repositories().await.unwrap_err();
    match &err {
        ProviderError::Network { message, .. } => {
            assert!(message.to_lowercase().contains("certificate"), "the reason names the certificate: {message}")
        }
        other => panic!("expected a network error, got {other:?}"),
    }

    let http = HttpClient::new(Some(CA), &loopback).unwrap();
    let client = client.with_http(&http);
    assert_eq!(client.repositories().await.unwrap(), vec![]);
}

#[test]
fn a_bundle_without_certificates_is_refused() {
    let err = HttpClient::new(Some(b"not a certificate"), &wharf_outbound::Policy::default()).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}
