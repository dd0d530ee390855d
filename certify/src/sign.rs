//! Issuing: [`Signer`] turns a certificate or pass into its signed text.

use crate::envelope::{self, CERTIFICATE_PREFIX, REGISTRATION_PREFIX};
use crate::keys::{IssuerKey, KeyPurpose, KeyStatus, Kid, TrustList};
use crate::model::{self, ContentError, RegistrationPass, VaccinationCertificate};

/// Why a key cannot be used, or a text cannot be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key's kid is not in the issuer's own trust list: a verifier could not check it.
    #[error("key {0} is not in the issuer's trust list; publish it before signing with it")]
    NotPublished(Kid),
    /// The trust list entry for this kid holds a different public key.
    #[error("trust list entry {0} holds a different public key than the signing key")]
    PublicKeyMismatch(Kid),
    /// The trust list entry is retired or revoked.
    #[error("key {kid} is {status} in the trust list; only an active key signs")]
    NotActive {
        /// The key.
        kid: Kid,
        /// Its published status.
        status: KeyStatus,
    },
    /// Key purpose and trust list entry, or key purpose and document type, differ.
    #[error("key {kid} is a {actual} key; this needs a {needed} key")]
    WrongPurpose {
        /// The key.
        kid: Kid,
        /// What the operation needs.
        needed: KeyPurpose,
        /// What the key is for.
        actual: KeyPurpose,
    },
    /// The document's `issued_at` is outside the key's published validity window, so a
    /// verifier would refuse it.
    #[error("issued_at {issued_at} is outside key {kid}'s validity window")]
    KeyNotValidAt {
        /// The key.
        kid: Kid,
        /// The document's issue time.
        issued_at: i64,
    },
    /// The document's issuer differs from the trust list's issuer.
    #[error("document issuer {document:?} differs from trust list issuer {trust_list:?}")]
    IssuerMismatch {
        /// `issuer` of the certificate or pass.
        document: String,
        /// `issuer` of the trust list.
        trust_list: String,
    },
    /// The content breaks a rule (see [`VaccinationCertificate::validate`]).
    #[error("invalid content: {0}")]
    InvalidContent(#[from] ContentError),
    /// The result would exceed the default verification [`Limits`](crate::Limits).
    #[error("signed {what} would be {len} bytes, over the {max}-byte limit verifiers apply")]
    TooLarge {
        /// Which layer.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// CBOR / COSE / zlib encoding failed (not expected for valid content).
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// Holds a key that is present and Active in the issuer's own trust list. Cheap to share
/// between threads (`Send + Sync`); signing takes `&self`.
pub struct Signer {
    key: IssuerKey,
    issuer: String,
    // The published window, which is what verifiers check `iat` against.
    valid_from: i64,
    valid_until: Option<i64>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.key.kid())
            .field("purpose", &self.key.purpose())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Accept `key` only if `trust` publishes it (same kid and public key, same purpose) with
    /// status Active: the server must never sign what its own trust list cannot verify.
    pub fn new(key: IssuerKey, trust: &TrustList) -> Result<Self, SignError> {
        let kid = key.kid();
        let entry = trust.get(kid).ok_or(SignError::NotPublished(kid))?;
        if entry.public_key != key.public_key() {
            return Err(SignError::PublicKeyMismatch(kid));
        }
        if entry.purpose != key.purpose() {
            return Err(SignError::WrongPurpose {
                kid,
                needed: entry.purpose,
                actual: key.purpose(),
            });
        }
        if entry.status != KeyStatus::Active {
            return Err(SignError::NotActive {
                kid,
                status: entry.status,
            });
        }
        Ok(Signer {
            valid_from: entry.valid_from,
            valid_until: entry.valid_until,
            issuer: trust.issuer.clone(),
            key,
        })
    }

    /// The signing key's id.
    pub fn kid(&self) -> Kid {
        self.key.kid()
    }

    /// The signing key's purpose.
    pub fn purpose(&self) -> KeyPurpose {
        self.key.purpose()
    }

    fn check(&self, needed: KeyPurpose, issuer: &str, issued_at: i64) -> Result<(), SignError> {
        if self.key.purpose() != needed {
            return Err(SignError::WrongPurpose {
                kid: self.kid(),
                needed,
                actual: self.key.purpose(),
            });
        }
        if issuer != self.issuer {
            return Err(SignError::IssuerMismatch {
                document: issuer.to_owned(),
                trust_list: self.issuer.clone(),
            });
        }
        if issued_at < self.valid_from || self.valid_until.is_some_and(|until| issued_at > until) {
            return Err(SignError::KeyNotValidAt {
                kid: self.kid(),
                issued_at,
            });
        }
        Ok(())
    }

    /// Sign a dose certificate: `VC1:…`. Needs a [`KeyPurpose::Certificate`] key; validates
    /// the content first so nothing is signed that a verifier would refuse.
    pub fn sign_certificate(&self, cert: &VaccinationCertificate) -> Result<String, SignError> {
        self.check(KeyPurpose::Certificate, &cert.issuer, cert.issued_at)?;
        cert.validate()?;
        let payload =
            model::certificate_payload(cert).map_err(|e| SignError::Encode(e.to_string()))?;
        envelope::seal(
            CERTIFICATE_PREFIX,
            payload,
            self.key.signing_key(),
            self.kid(),
        )
    }

    /// Sign a pre-registration pass: `RG1:…`. Needs a [`KeyPurpose::Registration`] key.
    pub fn sign_registration(&self, pass: &RegistrationPass) -> Result<String, SignError> {
        self.check(KeyPurpose::Registration, &pass.issuer, pass.issued_at)?;
        pass.validate()?;
        let payload =
            model::registration_payload(pass).map_err(|e| SignError::Encode(e.to_string()))?;
        envelope::seal(
            REGISTRATION_PREFIX,
            payload,
            self.key.signing_key(),
            self.kid(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Signer>();
        assert_send_sync::<crate::TrustList>();
    }
}
