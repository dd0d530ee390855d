//! Signed QR dose certificates and pre-registration passes for vaxcamp.
//!
//! A certificate is the container the field already uses (EU DCC / WHO HCERT), signed with
//! Ed25519 instead of ES256/PS256 and therefore behind its own prefix:
//!
//! ```text
//! "VC1:" ‖ Base45( zlib( COSE_Sign1 tag 18 [ protected {1: -8 (EdDSA), 4: kid},
//!                                             unprotected {},
//!                                             payload = CWT claims,
//!                                             signature (64 bytes) ] ) )
//! ```
//!
//! Pre-registration passes use the same layers with the prefix `RG1:` and keys of the
//! [`KeyPurpose::Registration`] purpose; a text signed with a key of the other purpose is
//! refused. The claim layout is documented in [`model`]; the verification steps in [`verify`].
//!
//! The crate is pure: no file, network or clock access. Callers hand it text, bytes, keys and
//! the current time, and do their own I/O (including writing secret keys with mode 0600).
//!
//! # Layout
//! - [`keys`]: key purposes, key ids, issuer (secret) keys, the trust list, the revocation list.
//! - [`model`]: certificate and pass content, validation rules, CBOR claim mapping.
//! - [`envelope`]: the shared layers (prefix, Base45, zlib, COSE_Sign1) and [`Limits`].
//! - [`sign`]: [`Signer`], which only signs with a key its own trust list publishes as active.
//! - [`verify`]: [`verify_certificate`], [`verify_registration`], unverified decoding, errors.
//! - [`qr`]: QR rendering to SVG, PNG and terminal text, and decoding from PNG.

pub mod envelope;
pub mod keys;
pub mod model;
pub mod qr;
pub mod sign;
pub mod verify;

pub use envelope::{CERTIFICATE_PREFIX, Limits, REGISTRATION_PREFIX, ZLIB_LEVEL};
pub use keys::{
    IssuerKey, KeyError, KeyPurpose, KeyStatus, Kid, RevocationList, TrustList, TrustedKey,
};
pub use model::{
    CLAIM_VACCINATION, CertifiedDose, ContentError, Holder, RegistrationPass, SeriesStatus,
    VaccinationCertificate,
};
pub use qr::QrError;
pub use sign::{SignError, Signer};
pub use verify::{
    CLOCK_SKEW_SECS, Verified, VerifyError, decode_certificate_unverified,
    decode_registration_unverified, verify_certificate, verify_registration,
};
