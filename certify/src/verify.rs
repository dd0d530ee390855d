//! Offline verification of `VC1:` certificates and `RG1:` passes against a trust list.
//!
//! Steps, in order (the first failure is returned):
//! 1. text length ≤ `max_text_len` (`too_long`)
//! 2. prefix (`bad_prefix`)
//! 3. Base45, canonical (`bad_base45`)
//! 4. zlib, inflating at most `max_inflated_len + 1` bytes (`bad_zlib`, `too_large`)
//! 5. COSE_Sign1 with tag 18, protected alg EdDSA and an 8-byte kid, nothing else (`bad_cose`)
//! 6. kid in the trust list (`unknown_kid`), entry consistent with its key (`bad_trusted_key`),
//!    purpose matches (`wrong_purpose`), key not revoked (`key_revoked`)
//! 7. CWT claims parse and obey the content rules (`bad_claims`), issuer is the trust list's
//!    (`wrong_issuer`)
//! 8. `iat` inside the key's `[valid_from, valid_until]` (`key_not_valid_at_issue`); a retired
//!    key still verifies what it signed inside its window
//! 9. Ed25519 `verify_strict` over the COSE Sig_structure (`bad_signature`)
//! 10. `exp <= now` is `expired`; `iat > now + 5 min` is `not_yet_valid`
//! 11. certificate id in the revocation list (`revoked`)

use crate::RevocationList;
use crate::envelope::{self, CERTIFICATE_PREFIX, Limits, Opened, REGISTRATION_PREFIX};
use crate::keys::{KeyPurpose, KeyStatus, Kid, TrustList, TrustedKey};
use crate::model::{self, RegistrationPass, VaccinationCertificate};

/// Clock skew tolerated for an `iat` in the verifier's future, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// A verified (or, from [`decode_certificate_unverified`], merely decoded) document and the
/// kid it was signed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    /// Key id from the protected header.
    pub kid: Kid,
    /// The decoded content.
    pub content: T,
}

/// Why a text was refused. [`VerifyError::code`] gives a stable snake_case code for APIs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Longer than `Limits::max_text_len`.
    #[error("text is {len} bytes, longer than the {max}-byte limit")]
    TooLong {
        /// Text length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Does not start with the expected prefix.
    #[error("text does not start with {expected:?}")]
    BadPrefix {
        /// The prefix expected.
        expected: &'static str,
    },
    /// Not (canonical) Base45.
    #[error("bad Base45: {0}")]
    BadBase45(&'static str),
    /// Not a complete, well-formed zlib stream.
    #[error("bad zlib data: {0}")]
    BadZlib(&'static str),
    /// Inflates past `Limits::max_inflated_len` (a zlib bomb or a forged giant).
    #[error("inflated data exceeds the {max}-byte limit")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Not a COSE_Sign1 of the shape we issue.
    #[error("bad COSE message: {0}")]
    BadCose(String),
    /// CWT claims malformed or breaking the content rules.
    #[error("bad claims: {0}")]
    BadClaims(String),
    /// The claims name another issuer than the trust list.
    #[error("issued by {found:?}, but the trust list is for {expected:?}")]
    WrongIssuer {
        /// The trust list's issuer.
        expected: String,
        /// The document's `iss`.
        found: String,
    },
    /// The kid is not in the trust list.
    #[error("key {0} is not in the trust list")]
    UnknownKid(Kid),
    /// The trust list's entry is inconsistent (kid not derived from the key, or not a point).
    #[error("trust list entry {kid} is unusable: {reason}")]
    BadTrustedKey {
        /// The entry.
        kid: Kid,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The key signs the other kind of document.
    #[error("key {kid} is a {actual} key, but a {expected} key is needed")]
    WrongPurpose {
        /// The key.
        kid: Kid,
        /// Needed purpose.
        expected: KeyPurpose,
        /// The key's purpose.
        actual: KeyPurpose,
    },
    /// `iat` is outside the key's validity window.
    #[error("issued at {issued_at}, outside key {kid}'s validity window")]
    KeyNotValidAtIssue {
        /// The key.
        kid: Kid,
        /// The document's `iat`.
        issued_at: i64,
    },
    /// The key is revoked: nothing it signed is valid.
    #[error("key {0} is revoked")]
    KeyRevoked(Kid),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Expired.
    #[error("expired at {expires_at} (now {now})")]
    Expired {
        /// `exp`.
        expires_at: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// Issued in the future, beyond the allowed clock skew.
    #[error("issued at {issued_at}, in the future (now {now})")]
    NotYetValid {
        /// `iat`.
        issued_at: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// The certificate id is revoked.
    #[error("certificate {0} is revoked")]
    Revoked(String),
}

impl VerifyError {
    /// Stable snake_case code, for API bodies and tests.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::TooLong { .. } => "too_long",
            VerifyError::BadPrefix { .. } => "bad_prefix",
            VerifyError::BadBase45(_) => "bad_base45",
            VerifyError::BadZlib(_) => "bad_zlib",
            VerifyError::TooLarge { .. } => "too_large",
            VerifyError::BadCose(_) => "bad_cose",
            VerifyError::BadClaims(_) => "bad_claims",
            VerifyError::WrongIssuer { .. } => "wrong_issuer",
            VerifyError::UnknownKid(_) => "unknown_kid",
            VerifyError::BadTrustedKey { .. } => "bad_trusted_key",
            VerifyError::WrongPurpose { .. } => "wrong_purpose",
            VerifyError::KeyNotValidAtIssue { .. } => "key_not_valid_at_issue",
            VerifyError::KeyRevoked(_) => "key_revoked",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::Expired { .. } => "expired",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
            VerifyError::Revoked(_) => "revoked",
        }
    }
}

/// Step 6: find the key and check it may have signed this kind of document.
fn trusted_key(
    trust: &TrustList,
    kid: Kid,
    purpose: KeyPurpose,
) -> Result<&TrustedKey, VerifyError> {
    let entry = trust.get(kid).ok_or(VerifyError::UnknownKid(kid))?;
    // A list whose entry does not match its key would let a kid vouch for a foreign key.
    if Kid::of_public_key(&entry.public_key) != kid {
        return Err(VerifyError::BadTrustedKey {
            kid,
            reason: "kid is not derived from its public key",
        });
    }
    if entry.purpose != purpose {
        return Err(VerifyError::WrongPurpose {
            kid,
            expected: purpose,
            actual: entry.purpose,
        });
    }
    if entry.status == KeyStatus::Revoked {
        return Err(VerifyError::KeyRevoked(kid));
    }
    Ok(entry)
}

/// Steps 7 (issuer), 8 and 9.
fn check_issue(
    opened: &Opened,
    trust: &TrustList,
    entry: &TrustedKey,
    issuer: &str,
    issued_at: i64,
) -> Result<(), VerifyError> {
    if issuer != trust.issuer {
        return Err(VerifyError::WrongIssuer {
            expected: trust.issuer.clone(),
            found: issuer.to_owned(),
        });
    }
    if !entry.covers(issued_at) {
        return Err(VerifyError::KeyNotValidAtIssue {
            kid: opened.kid,
            issued_at,
        });
    }
    envelope::check_signature(opened, &entry.public_key)
}

/// Step 10.
fn check_times(issued_at: i64, expires_at: Option<i64>, now: i64) -> Result<(), VerifyError> {
    if let Some(expires_at) = expires_at
        && now >= expires_at
    {
        return Err(VerifyError::Expired { expires_at, now });
    }
    if issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(VerifyError::NotYetValid { issued_at, now });
    }
    Ok(())
}

/// Verify a `VC1:` certificate completely (see the module docs for the steps).
pub fn verify_certificate(
    text: &str,
    trust: &TrustList,
    revoked: Option<&RevocationList>,
    now: i64,
    limits: &Limits,
) -> Result<Verified<VaccinationCertificate>, VerifyError> {
    let opened = envelope::open(text, CERTIFICATE_PREFIX, limits)?;
    let entry = trusted_key(trust, opened.kid, KeyPurpose::Certificate)?;
    let cert = model::decode_certificate(opened.payload()).map_err(VerifyError::BadClaims)?;
    check_issue(&opened, trust, entry, &cert.issuer, cert.issued_at)?;
    check_times(cert.issued_at, Some(cert.expires_at), now)?;
    if revoked.is_some_and(|list| list.contains(&cert.certificate_id)) {
        return Err(VerifyError::Revoked(cert.certificate_id));
    }
    Ok(Verified {
        kid: opened.kid,
        content: cert,
    })
}

/// Verify an `RG1:` pre-registration pass completely.
pub fn verify_registration(
    text: &str,
    trust: &TrustList,
    now: i64,
    limits: &Limits,
) -> Result<Verified<RegistrationPass>, VerifyError> {
    let opened = envelope::open(text, REGISTRATION_PREFIX, limits)?;
    let entry = trusted_key(trust, opened.kid, KeyPurpose::Registration)?;
    let pass = model::decode_registration(opened.payload()).map_err(VerifyError::BadClaims)?;
    check_issue(&opened, trust, entry, &pass.issuer, pass.issued_at)?;
    check_times(pass.issued_at, pass.expires_at, now)?;
    Ok(Verified {
        kid: opened.kid,
        content: pass,
    })
}

/// Decode a `VC1:` certificate WITHOUT checking its signature, key or times — for inspection
/// tools only; never treat the result as genuine. Limits and structure are still enforced.
pub fn decode_certificate_unverified(
    text: &str,
    limits: &Limits,
) -> Result<Verified<VaccinationCertificate>, VerifyError> {
    let opened = envelope::open(text, CERTIFICATE_PREFIX, limits)?;
    let cert = model::decode_certificate(opened.payload()).map_err(VerifyError::BadClaims)?;
    Ok(Verified {
        kid: opened.kid,
        content: cert,
    })
}

/// Decode an `RG1:` pass WITHOUT checking its signature, key or times (inspection only).
pub fn decode_registration_unverified(
    text: &str,
    limits: &Limits,
) -> Result<Verified<RegistrationPass>, VerifyError> {
    let opened = envelope::open(text, REGISTRATION_PREFIX, limits)?;
    let pass = model::decode_registration(opened.payload()).map_err(VerifyError::BadClaims)?;
    Ok(Verified {
        kid: opened.kid,
        content: pass,
    })
}

/// Unwrap the layers of a `VC1:` or `RG1:` text down to the tagged COSE_Sign1 bytes, checking
/// limits only. For tests and tools that want to look at (or tamper with) the inner message.
pub fn cose_bytes(text: &str, limits: &Limits) -> Result<Vec<u8>, VerifyError> {
    if text.len() > limits.max_text_len {
        return Err(VerifyError::TooLong {
            len: text.len(),
            max: limits.max_text_len,
        });
    }
    let body = text
        .strip_prefix(CERTIFICATE_PREFIX)
        .or_else(|| text.strip_prefix(REGISTRATION_PREFIX))
        .ok_or(VerifyError::BadPrefix {
            expected: CERTIFICATE_PREFIX,
        })?;
    let compressed = envelope::base45_decode(body)?;
    envelope::zlib_inflate(&compressed, limits.max_inflated_len)
}

/// The inverse of [`cose_bytes`]: wrap raw COSE bytes (zlib at [`ZLIB_LEVEL`](crate::ZLIB_LEVEL),
/// Base45, prefix) without signing anything. For tests and interoperability checks.
pub fn wrap_cose_bytes(prefix: &str, cose: &[u8]) -> String {
    let compressed = envelope::zlib_compress(cose).unwrap_or_default();
    let mut text = String::from(prefix);
    text.push_str(&base45::encode(&compressed));
    text
}
