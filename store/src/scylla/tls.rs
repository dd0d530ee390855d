//! TLS to the cluster (feature `scylla-tls`): the driver's OpenSSL context, built from
//! [`ScyllaConfig::tls_ca_file`](super::ScyllaConfig::tls_ca_file) or the system trust store.
//! See "# TLS" in the module docs for what is verified.

use std::path::Path;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use scylla::client::session::OpenSsl010Config;

use crate::error::{Result, StoreError};

fn openssl_error(what: &str) -> impl FnOnce(openssl::error::ErrorStack) -> StoreError + '_ {
    move |e| StoreError::Engine(format!("could not set up TLS to ScyllaDB ({what}): {e}"))
}

/// The client context: TLS 1.2 or newer, the node's certificate verified against `ca_file`
/// (only it, when given) or the system trust store; the driver then checks the certificate
/// names the node's IP address.
pub(super) fn context(ca_file: Option<&Path>) -> Result<OpenSsl010Config> {
    // `SslConnector` starts from OpenSSL's safe client defaults (peer verification on, no
    // SSLv2/3 or compression, the system's default verify paths).
    let mut builder =
        SslConnector::builder(SslMethod::tls_client()).map_err(openssl_error("client context"))?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(openssl_error("minimum version TLS 1.2"))?;
    builder.set_verify(SslVerifyMode::PEER);
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Engine(format!(
                    "cannot read the ScyllaDB CA file {}: {e}; give a readable PEM file with the CA certificate that signed the nodes' certificates",
                    path.display()
                ))
            })?;
            let not_pem = |detail: String| {
                StoreError::Engine(format!(
                    "the ScyllaDB CA file {} is not a PEM certificate file ({detail}); it must hold one or more -----BEGIN CERTIFICATE----- blocks",
                    path.display()
                ))
            };
            let certs = X509::stack_from_pem(&pem).map_err(|e| not_pem(e.to_string()))?;
            if certs.is_empty() {
                return Err(not_pem("no certificate found".into()));
            }
            // Only this CA: a private cluster CA should not be widened to every public one.
            let mut store = X509StoreBuilder::new().map_err(openssl_error("CA store"))?;
            for cert in certs {
                store
                    .add_cert(cert)
                    .map_err(|e| not_pem(format!("a certificate was refused: {e}")))?;
            }
            builder.set_cert_store(store.build());
        }
        None => builder
            .set_default_verify_paths()
            .map_err(openssl_error("system trust store"))?,
    }
    Ok(OpenSsl010Config::new(builder))
}
