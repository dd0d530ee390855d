//! TLS (feature `tls`): the node's server identity ([`TlsIdentity`], set in
//! [`crate::NodeConfig::tls`]), the acceptor built from it, and [`TestCa`], a throwaway
//! certificate authority for tests, so that no key is ever committed.
//!
//! A node with TLS speaks CQL over TLS only: a plain-TCP client's first bytes fail the handshake
//! and the connection is closed without a CQL answer, as on a real node with
//! `client_encryption_options.enabled` and no `optional`.

use std::net::IpAddr;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod, SslVersion};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder};

use crate::error::Error;

/// The certificate chain (PEM, leaf first) and private key (PEM) a TLS node presents.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field(
                "cert_chain_pem",
                &format!("{} bytes", self.cert_chain_pem.len()),
            )
            .field("key_pem", &"(hidden)")
            .finish()
    }
}

fn tls_error(what: &str) -> impl FnOnce(openssl::error::ErrorStack) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// The server side of the handshake: TLS 1.2 or 1.3, this identity, no client certificate.
pub(crate) fn acceptor(identity: &TlsIdentity) -> Result<SslAcceptor, Error> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(tls_error("creating the TLS acceptor"))?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(tls_error("setting the minimum TLS version"))?;
    let mut chain = X509::stack_from_pem(&identity.cert_chain_pem)
        .map_err(tls_error("reading the certificate chain"))?
        .into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| Error::Tls("the certificate chain holds no PEM certificate".into()))?;
    builder
        .set_certificate(&leaf)
        .map_err(tls_error("setting the certificate"))?;
    for cert in chain {
        builder
            .add_extra_chain_cert(cert)
            .map_err(tls_error("adding a chain certificate"))?;
    }
    let key = PKey::private_key_from_pem(&identity.key_pem)
        .map_err(tls_error("reading the private key"))?;
    builder
        .set_private_key(&key)
        .map_err(tls_error("setting the private key"))?;
    builder
        .check_private_key()
        .map_err(tls_error("the private key does not match the certificate"))?;
    Ok(builder.build())
}

/// A throwaway certificate authority (EC P-256, valid for a day), made in memory for a test.
pub struct TestCa {
    cert: X509,
    key: PKey<Private>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn new_key() -> Result<PKey<Private>, Error> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(tls_error("EC group"))?;
    let key = EcKey::generate(&group).map_err(tls_error("generating a key"))?;
    PKey::from_ec_key(key).map_err(tls_error("wrapping a key"))
}

fn name(common_name: &str) -> Result<X509Name, Error> {
    let mut name = X509NameBuilder::new().map_err(tls_error("building a certificate name"))?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .map_err(tls_error("building a certificate name"))?;
    Ok(name.build())
}

/// A certificate builder with a random serial, this subject and key, valid from now for a day.
fn builder(common_name: &str, key: &PKey<Private>) -> Result<X509Builder, Error> {
    let e = || tls_error("building a certificate");
    let mut serial = BigNum::new().map_err(e())?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false).map_err(e())?;
    let mut b = X509Builder::new().map_err(e())?;
    let serial = serial.to_asn1_integer().map_err(e())?;
    let subject = name(common_name)?;
    let not_before = Asn1Time::days_from_now(0).map_err(e())?;
    let not_after = Asn1Time::days_from_now(1).map_err(e())?;
    b.set_version(2).map_err(e())?;
    b.set_serial_number(&serial).map_err(e())?;
    b.set_subject_name(&subject).map_err(e())?;
    b.set_pubkey(key).map_err(e())?;
    b.set_not_before(&not_before).map_err(e())?;
    b.set_not_after(&not_after).map_err(e())?;
    Ok(b)
}

impl TestCa {
    /// A new self-signed CA named `common_name`.
    ///
    /// # Errors
    /// When OpenSSL fails to make the key or certificate.
    pub fn new(common_name: &str) -> Result<TestCa, Error> {
        let key = new_key()?;
        let mut b = builder(common_name, &key)?;
        let e = || tls_error("building the CA certificate");
        let issuer = name(common_name)?;
        b.set_issuer_name(&issuer).map_err(e())?;
        b.append_extension(
            BasicConstraints::new()
                .critical()
                .ca()
                .build()
                .map_err(e())?,
        )
        .map_err(e())?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .map_err(e())?,
        )
        .map_err(e())?;
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .map_err(e())?;
        b.append_extension(ski).map_err(e())?;
        b.sign(&key, MessageDigest::sha256()).map_err(e())?;
        Ok(TestCa {
            cert: b.build(),
            key,
        })
    }

    /// The CA certificate, PEM: what a client trusts.
    ///
    /// # Errors
    /// When OpenSSL fails to encode it.
    pub fn cert_pem(&self) -> Result<Vec<u8>, Error> {
        self.cert.to_pem().map_err(tls_error("encoding the CA"))
    }

    /// A server certificate signed by this CA for these IP addresses (subject alternative
    /// names: the driver checks the node's address against them), with its new key.
    ///
    /// # Errors
    /// When OpenSSL fails to make the key or certificate.
    pub fn issue_server(&self, ips: &[IpAddr]) -> Result<TlsIdentity, Error> {
        let key = new_key()?;
        let common_name = ips
            .first()
            .map_or_else(|| "cqlnode".to_string(), ToString::to_string);
        let mut b = builder(&common_name, &key)?;
        let e = || tls_error("building the server certificate");
        b.set_issuer_name(self.cert.subject_name()).map_err(e())?;
        b.append_extension(BasicConstraints::new().build().map_err(e())?)
            .map_err(e())?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()
                .map_err(e())?,
        )
        .map_err(e())?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().map_err(e())?)
            .map_err(e())?;
        let mut san = SubjectAlternativeName::new();
        for ip in ips {
            san.ip(&ip.to_string());
        }
        let san = san
            .build(&b.x509v3_context(Some(&self.cert), None))
            .map_err(e())?;
        b.append_extension(san).map_err(e())?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .map_err(e())?;
        b.append_extension(aki).map_err(e())?;
        b.sign(&self.key, MessageDigest::sha256()).map_err(e())?;
        let cert = b.build();
        Ok(TlsIdentity {
            cert_chain_pem: cert.to_pem().map_err(e())?,
            key_pem: key.private_key_to_pem_pkcs8().map_err(e())?,
        })
    }
}
