//! Issuer keys, key ids, the published trust list and the revocation list.
//!
//! Types and (de)serialization only: the caller reads and writes files (and sets mode 0600 on a
//! secret key file). Nothing here logs or prints a secret.
//!
//! # Rotation rules
//! - A key has one [`KeyPurpose`] for its whole life: certificate keys sign `VC1:` texts,
//!   registration keys sign `RG1:` texts. A verifier refuses a text whose key has the other purpose.
//! - A new key is added to the trust list as [`KeyStatus::Active`]. The old one is retired with
//!   [`TrustList::retire`], which sets its status to [`KeyStatus::Retired`] and closes its
//!   `valid_until` window. Certificates it signed before that instant keep verifying; the signer
//!   refuses to use it again.
//! - [`KeyStatus::Revoked`] is for a compromised key: every text under it is refused.
//! - Entries are never deleted while certificates signed with them may still be shown: deleting a
//!   key turns its old certificates into `unknown_kid`.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What a key may sign. A key never changes purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// Signs dose certificates (`VC1:`).
    Certificate,
    /// Signs pre-registration passes (`RG1:`).
    Registration,
}

impl KeyPurpose {
    /// The serde / CLI spelling: `certificate` or `registration`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Certificate => "certificate",
            KeyPurpose::Registration => "registration",
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyPurpose {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "certificate" => Ok(KeyPurpose::Certificate),
            "registration" => Ok(KeyPurpose::Registration),
            other => Err(KeyError::Format(format!(
                "unknown key purpose {other:?} (expected \"certificate\" or \"registration\")"
            ))),
        }
    }
}

/// Key id: the first 8 bytes of SHA-256 over the raw 32-byte Ed25519 public key.
///
/// Written as 16 lowercase hex characters (Display, FromStr, serde). Parsing also accepts
/// uppercase hex, so an id typed by hand still resolves.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(pub [u8; 8]);

impl Kid {
    /// Derive the kid of a raw Ed25519 public key.
    pub fn of_public_key(public_key: &[u8; 32]) -> Kid {
        let digest = Sha256::digest(public_key);
        let mut kid = [0u8; 8];
        kid.copy_from_slice(&digest[..8]);
        Kid(kid)
    }

    /// The 8 raw bytes, as carried in the COSE protected header.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kid({self})")
    }
}

impl FromStr for Kid {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(KeyError::Format(format!(
                "a kid is 16 hex characters, got {} characters",
                s.len()
            )));
        }
        let mut kid = [0u8; 8];
        hex::decode_to_slice(s, &mut kid)
            .map_err(|e| KeyError::Format(format!("kid {s:?} is not hex: {e}")))?;
        Ok(Kid(kid))
    }
}

impl Serialize for Kid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Kid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Errors about keys, secret key files and trust lists.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("cannot read the system random source: {0}")]
    Random(String),
    /// A kid, purpose, secret key text or trust list is malformed.
    #[error("{0}")]
    Format(String),
    /// A secret key file names a kid that its seed does not produce (corrupt or edited file).
    #[error("secret key file says kid {stored} but its seed gives kid {derived}")]
    KidMismatch {
        /// The kid written in the file.
        stored: Kid,
        /// The kid derived from the seed.
        derived: Kid,
    },
    /// A trust list entry whose kid is not derived from its public key.
    #[error("trust list entry {kid} holds a public key whose kid is {derived}")]
    TrustedKidMismatch {
        /// The kid the entry claims.
        kid: Kid,
        /// The kid of its public key.
        derived: Kid,
    },
    /// A trust list entry whose public key is not a valid Ed25519 point.
    #[error("trust list entry {0} does not hold a valid Ed25519 public key")]
    InvalidPublicKey(Kid),
    /// Two trust list entries with the same kid.
    #[error("trust list lists kid {0} more than once")]
    DuplicateKid(Kid),
    /// `valid_until` before `valid_from`.
    #[error("trust list entry {0} ends before it starts (valid_until < valid_from)")]
    BadValidity(Kid),
    /// No trust list entry for this kid.
    #[error("kid {0} is not in the trust list")]
    UnknownKid(Kid),
}

/// An issuer's private signing key with its purpose and validity window.
///
/// `Debug` prints only the kid and purpose. The secret is zeroed on drop (ed25519-dalek `zeroize`).
#[derive(Clone)]
pub struct IssuerKey {
    purpose: KeyPurpose,
    kid: Kid,
    signing_key: SigningKey,
    valid_from: i64,
    valid_until: Option<i64>,
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// Identifies the secret key text format, so a wrong file is refused with a clear message.
const SECRET_FORMAT: &str = "vaxcamp-issuer-key/1";

/// On-disk shape of a secret key (JSON). The seed is the 32-byte Ed25519 secret, in hex.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretText {
    format: String,
    purpose: KeyPurpose,
    kid: Kid,
    seed: Seed,
    valid_from: i64,
    #[serde(default)]
    valid_until: Option<i64>,
}

/// The 32-byte seed, written as hex; wiped on drop.
struct Seed(Zeroizing<[u8; 32]>);

impl Serialize for Seed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = Zeroizing::new([0u8; 64]);
        // Cannot fail: the output buffer is exactly twice the input length.
        hex::encode_to_slice(self.0.as_ref(), text.as_mut()).map_err(serde::ser::Error::custom)?;
        serializer
            .serialize_str(std::str::from_utf8(text.as_ref()).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrowed from the input when it has no escapes; an owned copy is wiped after use.
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        let decoded = hex::decode_to_slice(text.as_bytes(), seed.as_mut());
        if let std::borrow::Cow::Owned(copy) = text {
            drop(Zeroizing::new(copy));
        }
        decoded
            .map_err(|_| serde::de::Error::custom("seed must be 64 hex characters (32 bytes)"))?;
        Ok(Seed(seed))
    }
}

impl IssuerKey {
    /// A new key from the operating system's random source.
    pub fn generate(purpose: KeyPurpose, valid_from: i64) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(purpose, *seed, valid_from))
    }

    /// A key from a fixed seed (test vectors, or a seed kept elsewhere).
    pub fn from_seed(purpose: KeyPurpose, seed: [u8; 32], valid_from: i64) -> Self {
        let signing_key = SigningKey::from_bytes(&seed);
        let kid = Kid::of_public_key(signing_key.verifying_key().as_bytes());
        IssuerKey {
            purpose,
            kid,
            signing_key,
            valid_from,
            valid_until: None,
        }
    }

    /// Set the end of the validity window (builder style).
    #[must_use]
    pub fn with_valid_until(mut self, valid_until: Option<i64>) -> Self {
        self.valid_until = valid_until;
        self
    }

    /// Set the end of the validity window (e.g. when the key is retired).
    pub fn set_valid_until(&mut self, valid_until: Option<i64>) {
        self.valid_until = valid_until;
    }

    /// The key id.
    pub fn kid(&self) -> Kid {
        self.kid
    }

    /// What this key signs.
    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    /// Start of the validity window (unix seconds).
    pub fn valid_from(&self) -> i64 {
        self.valid_from
    }

    /// End of the validity window (unix seconds), if closed.
    pub fn valid_until(&self) -> Option<i64> {
        self.valid_until
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The secret key as a small JSON document:
    ///
    /// ```json
    /// {"format":"vaxcamp-issuer-key/1","purpose":"certificate","kid":"<16 hex>",
    ///  "seed":"<64 hex>","valid_from":1700000000,"valid_until":null}
    /// ```
    ///
    /// The caller writes it with mode 0600 and should drop it promptly (wrap it in
    /// `zeroize::Zeroizing` to have it wiped).
    pub fn to_secret_text(&self) -> String {
        let doc = SecretText {
            format: SECRET_FORMAT.to_owned(),
            purpose: self.purpose,
            kid: self.kid,
            seed: Seed(Zeroizing::new(self.signing_key.to_bytes())),
            valid_from: self.valid_from,
            valid_until: self.valid_until,
        };
        // Serializing a struct of strings and integers cannot fail; the fallback keeps the
        // function total without a panic path.
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parse [`IssuerKey::to_secret_text`] output. Checks the format tag and that the stored kid
    /// matches the seed (catches a corrupted or hand-edited file).
    pub fn from_secret_text(text: &str) -> Result<Self, KeyError> {
        let doc: SecretText = serde_json::from_str(text)
            .map_err(|e| KeyError::Format(format!("secret key text is not valid: {e}")))?;
        if doc.format != SECRET_FORMAT {
            return Err(KeyError::Format(format!(
                "secret key text has format {:?}, expected {SECRET_FORMAT:?}",
                doc.format
            )));
        }
        let key = Self::from_seed(doc.purpose, *doc.seed.0, doc.valid_from)
            .with_valid_until(doc.valid_until);
        if key.kid != doc.kid {
            return Err(KeyError::KidMismatch {
                stored: doc.kid,
                derived: key.kid,
            });
        }
        Ok(key)
    }

    /// The public half, as published in the trust list, with status [`KeyStatus::Active`].
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey {
            kid: self.kid,
            purpose: self.purpose,
            public_key: self.public_key(),
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            status: KeyStatus::Active,
        }
    }
}

/// Life-cycle state of a published key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs now.
    Active,
    /// No longer signs; what it signed inside its window still verifies.
    Retired,
    /// Compromised or withdrawn: everything it signed is refused.
    Revoked,
}

impl KeyStatus {
    /// The serde spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published public key. `public_key` is serialized as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// Key id (first 8 bytes of SHA-256 of `public_key`).
    pub kid: Kid,
    /// What the key signs.
    pub purpose: KeyPurpose,
    /// Raw Ed25519 public key; JSON: hex string.
    #[serde(with = "hex32")]
    pub public_key: [u8; 32],
    /// Certificates issued (iat) before this are refused under this key.
    pub valid_from: i64,
    /// Certificates issued after this are refused under this key; `None` = open.
    pub valid_until: Option<i64>,
    /// Life-cycle state.
    pub status: KeyStatus,
}

impl TrustedKey {
    /// Whether `issued_at` falls in `[valid_from, valid_until]`.
    pub fn covers(&self, issued_at: i64) -> bool {
        issued_at >= self.valid_from && self.valid_until.is_none_or(|until| issued_at <= until)
    }

    /// Check that the kid is derived from the key and that the key is a valid point.
    pub fn validate(&self) -> Result<(), KeyError> {
        let derived = Kid::of_public_key(&self.public_key);
        if derived != self.kid {
            return Err(KeyError::TrustedKidMismatch {
                kid: self.kid,
                derived,
            });
        }
        if VerifyingKey::from_bytes(&self.public_key).is_err() {
            return Err(KeyError::InvalidPublicKey(self.kid));
        }
        if self
            .valid_until
            .is_some_and(|until| until < self.valid_from)
        {
            return Err(KeyError::BadValidity(self.kid));
        }
        Ok(())
    }
}

/// Serde helper: `[u8; 32]` as a 64-character hex string.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(|_| {
            serde::de::Error::custom("public_key must be 64 hex characters (32 bytes)")
        })?;
        Ok(out)
    }
}

/// The issuer's published public keys (`GET /v1/trust`). JSON via serde.
///
/// ```json
/// {"issuer":"VN-MOH","keys":[{"kid":"…","purpose":"certificate","public_key":"<64 hex>",
///   "valid_from":1700000000,"valid_until":null,"status":"active"}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrustList {
    /// Issuer name; the same string as the `iss` claim of what it signs.
    pub issuer: String,
    /// All keys, including retired and revoked ones.
    pub keys: Vec<TrustedKey>,
}

impl TrustList {
    /// An empty list for `issuer`.
    pub fn new(issuer: impl Into<String>) -> Self {
        TrustList {
            issuer: issuer.into(),
            keys: Vec::new(),
        }
    }

    /// The entry for `kid` (takes `Kid` or `&Kid`). A linear scan: trust lists hold a handful of
    /// keys, for which this beats hashing.
    pub fn get(&self, kid: impl Borrow<Kid>) -> Option<&TrustedKey> {
        let kid = kid.borrow();
        self.keys.iter().find(|k| &k.kid == kid)
    }

    fn get_mut(&mut self, kid: Kid) -> Result<&mut TrustedKey, KeyError> {
        self.keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or(KeyError::UnknownKid(kid))
    }

    /// The newest active key for `purpose` (largest `valid_from`), if any.
    pub fn active_key(&self, purpose: KeyPurpose) -> Option<&TrustedKey> {
        self.keys
            .iter()
            .filter(|k| k.purpose == purpose && k.status == KeyStatus::Active)
            .max_by_key(|k| k.valid_from)
    }

    /// Add a key; refuses a kid that is already listed.
    pub fn add(&mut self, key: TrustedKey) -> Result<(), KeyError> {
        if self.get(key.kid).is_some() {
            return Err(KeyError::DuplicateKid(key.kid));
        }
        key.validate()?;
        self.keys.push(key);
        Ok(())
    }

    /// Retire a key at `at`: it stops signing, and texts it signed up to `at` keep verifying.
    /// An already retired key keeps its earlier end; a revoked key stays revoked.
    pub fn retire(&mut self, kid: Kid, at: i64) -> Result<(), KeyError> {
        let key = self.get_mut(kid)?;
        if key.status == KeyStatus::Active {
            key.status = KeyStatus::Retired;
            key.valid_until = Some(key.valid_until.map_or(at, |until| until.min(at)));
        }
        Ok(())
    }

    /// Revoke a key: every text under it is refused from now on.
    pub fn revoke(&mut self, kid: Kid) -> Result<(), KeyError> {
        self.get_mut(kid)?.status = KeyStatus::Revoked;
        Ok(())
    }

    /// Check every entry ([`TrustedKey::validate`]) and that no kid repeats. Run this when a
    /// list is loaded; verification also refuses a mismatched entry on its own.
    pub fn validate(&self) -> Result<(), KeyError> {
        let mut seen = HashSet::with_capacity(self.keys.len());
        for key in &self.keys {
            if !seen.insert(key.kid) {
                return Err(KeyError::DuplicateKid(key.kid));
            }
            key.validate()?;
        }
        Ok(())
    }

    /// Parse JSON and [`validate`](Self::validate).
    pub fn from_json(text: &str) -> Result<Self, KeyError> {
        let list: TrustList = serde_json::from_str(text)
            .map_err(|e| KeyError::Format(format!("trust list is not valid JSON: {e}")))?;
        list.validate()?;
        Ok(list)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Revoked certificate ids (`GET /v1/revocations`). JSON: `{"certificate_ids":["…"]}`, sorted.
///
/// A set, so that checking a certificate stays cheap however many corrections a campaign makes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RevocationList {
    /// Revoked certificate ids (the `cti` claim, as text).
    pub certificate_ids: std::collections::BTreeSet<String>,
}

impl RevocationList {
    /// Whether `id` is revoked (takes `&str`, `&String` or `String`).
    pub fn contains(&self, id: impl AsRef<str>) -> bool {
        self.certificate_ids.contains(id.as_ref())
    }

    /// Add an id (no-op if present).
    pub fn insert(&mut self, id: impl Into<String>) {
        self.certificate_ids.insert(id.into());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kid_text_round_trip() {
        let kid = Kid([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        assert_eq!(kid.to_string(), "0123456789abcdef");
        assert_eq!("0123456789ABCDEF".parse::<Kid>().unwrap(), kid);
        assert!("0123".parse::<Kid>().is_err());
        assert!("0123456789abcdeg".parse::<Kid>().is_err());
        let json = serde_json::to_string(&kid).unwrap();
        assert_eq!(json, "\"0123456789abcdef\"");
        assert_eq!(serde_json::from_str::<Kid>(&json).unwrap(), kid);
        assert_eq!(format!("{kid:?}"), "Kid(0123456789abcdef)");
    }

    #[test]
    fn kid_is_sha256_prefix() {
        let key = IssuerKey::from_seed(KeyPurpose::Certificate, [7; 32], 0);
        let digest = Sha256::digest(key.public_key());
        assert_eq!(&key.kid().0[..], &digest[..8]);
    }

    #[test]
    fn secret_text_round_trip_and_debug_hides_seed() {
        let key = IssuerKey::from_seed(KeyPurpose::Registration, [0xab; 32], 1_700_000_000)
            .with_valid_until(Some(1_800_000_000));
        let text = key.to_secret_text();
        assert!(text.contains(&"ab".repeat(32)));
        let back = IssuerKey::from_secret_text(&text).unwrap();
        assert_eq!(back.kid(), key.kid());
        assert_eq!(back.purpose(), KeyPurpose::Registration);
        assert_eq!(back.valid_from(), 1_700_000_000);
        assert_eq!(back.valid_until(), Some(1_800_000_000));
        let debug = format!("{key:?}");
        assert!(!debug.contains("abab"), "{debug}");
        assert!(debug.contains(&key.kid().to_string()));
    }

    #[test]
    fn secret_text_refuses_tampering() {
        let key = IssuerKey::from_seed(KeyPurpose::Certificate, [1; 32], 0);
        let text = key.to_secret_text();
        let edited = text.replace(&"01".repeat(32), &"02".repeat(32));
        assert!(matches!(
            IssuerKey::from_secret_text(&edited),
            Err(KeyError::KidMismatch { .. })
        ));
        assert!(IssuerKey::from_secret_text("{}").is_err());
        assert!(IssuerKey::from_secret_text(&text.replace("issuer-key/1", "x")).is_err());
        let short = text.replace(&"01".repeat(32), "0101");
        assert!(IssuerKey::from_secret_text(&short).is_err());
    }

    #[test]
    fn generate_gives_distinct_keys() {
        let a = IssuerKey::generate(KeyPurpose::Certificate, 0).unwrap();
        let b = IssuerKey::generate(KeyPurpose::Certificate, 0).unwrap();
        assert_ne!(a.kid(), b.kid());
    }

    #[test]
    #[allow(clippy::needless_borrows_for_generic_args)] // `get` must take `&Kid` too
    fn trust_list_json_and_validation() {
        let key = IssuerKey::from_seed(KeyPurpose::Certificate, [3; 32], 100);
        let mut list = TrustList::new("VN-MOH");
        list.add(key.trusted_key()).unwrap();
        assert!(matches!(
            list.add(key.trusted_key()),
            Err(KeyError::DuplicateKid(_))
        ));
        let json = list.to_json();
        assert!(json.contains(&hex::encode(key.public_key())));
        assert!(json.contains("\"active\""));
        assert!(json.contains("\"certificate\""));
        let back = TrustList::from_json(&json).unwrap();
        assert_eq!(back, list);
        assert!(back.get(key.kid()).is_some());
        assert!(back.get(&key.kid()).is_some());

        let mut bad = list.clone();
        bad.keys[0].public_key[0] ^= 1;
        assert!(bad.validate().is_err());
        let mut dup = list.clone();
        dup.keys.push(dup.keys[0].clone());
        assert!(matches!(dup.validate(), Err(KeyError::DuplicateKid(_))));
    }

    #[test]
    fn retire_and_revoke() {
        let key = IssuerKey::from_seed(KeyPurpose::Certificate, [4; 32], 100);
        let mut list = TrustList::new("X");
        list.add(key.trusted_key()).unwrap();
        assert_eq!(
            list.active_key(KeyPurpose::Certificate).unwrap().kid,
            key.kid()
        );
        list.retire(key.kid(), 500).unwrap();
        let entry = list.get(key.kid()).unwrap();
        assert_eq!(entry.status, KeyStatus::Retired);
        assert_eq!(entry.valid_until, Some(500));
        assert!(entry.covers(100) && entry.covers(500) && !entry.covers(501) && !entry.covers(99));
        assert!(list.active_key(KeyPurpose::Certificate).is_none());
        list.revoke(key.kid()).unwrap();
        assert_eq!(list.get(key.kid()).unwrap().status, KeyStatus::Revoked);
        assert!(list.retire(Kid([0; 8]), 1).is_err());
    }

    #[test]
    fn revocation_list() {
        let mut list = RevocationList::default();
        list.insert("a");
        list.insert("a".to_owned());
        assert_eq!(list.certificate_ids.len(), 1);
        assert!(list.contains("a"));
        assert!(list.contains(String::from("a")));
        assert!(!list.contains("b"));
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"{"certificate_ids":["a"]}"#);
    }
}
