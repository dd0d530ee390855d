//! Signing keys on disk and the trust list the server publishes.
//!
//! ```text
//! data/keys/              (mode 0700)
//!   trust.json            the public trust list: every key ever used, with status and validity
//!   <kid>.secret          an active key's private seed (mode 0600); deleted when the key retires
//! ```
//!
//! Rotation makes a new key, marks the old one `retired` with `valid_until` = now and deletes its
//! private part: it never signs again, but certificates issued under it still verify, because the
//! trust list keeps its public key. Private keys are never logged or printed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use certify::{IssuerKey, KeyPurpose, KeyStatus, Kid, TrustList};

/// Errors reading or changing the key directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "no active {purpose} key with a private key in {dir}; run `vaxcamp keys generate --data <DIR>`"
    )]
    NoSigningKey { purpose: &'static str, dir: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The key directory of a campaign.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The key directory inside a data directory.
    pub fn in_data_dir(data: &Path) -> Self {
        Self::new(data.join("keys"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn trust_path(&self) -> PathBuf {
        self.dir.join("trust.json")
    }

    fn secret_path(&self, kid: Kid) -> PathBuf {
        self.dir.join(format!("{kid}.secret"))
    }

    /// The published trust list; empty when no key was made yet.
    ///
    /// # Errors
    /// I/O errors and a trust list that does not parse.
    pub fn trust_list(&self, issuer: &str) -> Result<TrustList, KeystoreError> {
        let path = self.trust_path();
        match fs::read_to_string(&path) {
            Ok(text) => TrustList::from_json(&text).map_err(|e| KeystoreError::Invalid {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustList::new(issuer)),
            Err(e) => Err(KeystoreError::Io { path, source: e }),
        }
    }

    fn ensure_dir(&self) -> Result<(), KeystoreError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        set_mode(&self.dir, 0o700)
    }

    /// Writes a file atomically (temp file, fsync, rename) with `mode`.
    fn write_file(&self, path: &Path, contents: &str, mode: u32) -> Result<(), KeystoreError> {
        let tmp = path.with_extension("tmp");
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
            let mut file = options.open(&tmp).map_err(io(&tmp))?;
            file.write_all(contents.as_bytes()).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        set_mode(&tmp, mode)?;
        fs::rename(&tmp, path).map_err(io(path))
    }

    fn save_trust_list(&self, trust: &TrustList) -> Result<(), KeystoreError> {
        self.write_file(&self.trust_path(), &trust.to_json(), 0o644)
    }

    fn add_key(&self, trust: &mut TrustList, key: &IssuerKey) -> Result<(), KeystoreError> {
        let path = self.secret_path(key.kid());
        trust
            .add(key.trusted_key())
            .map_err(|e| KeystoreError::Invalid {
                path: self.trust_path(),
                reason: e.to_string(),
            })?;
        // The secret first: a trust list naming a key whose secret is missing cannot sign, but a
        // secret whose key is not published would be refused by `Signer` anyway.
        self.write_file(&path, &key.to_secret_text(), 0o600)?;
        self.save_trust_list(trust)
    }

    /// Makes a key for each purpose that has no active key. Returns the kids made.
    ///
    /// # Errors
    /// I/O errors and randomness failures.
    pub fn generate(
        &self,
        issuer: &str,
        now: i64,
    ) -> Result<Vec<(KeyPurpose, Kid)>, KeystoreError> {
        self.ensure_dir()?;
        let mut trust = self.trust_list(issuer)?;
        let mut made = Vec::new();
        for purpose in [KeyPurpose::Certificate, KeyPurpose::Registration] {
            if self.signing_key(purpose, issuer).is_ok() {
                continue;
            }
            let key = IssuerKey::generate(purpose, now).map_err(|e| KeystoreError::Invalid {
                path: self.dir.clone(),
                reason: e.to_string(),
            })?;
            self.add_key(&mut trust, &key)?;
            made.push((purpose, key.kid()));
        }
        Ok(made)
    }

    /// Replaces the active key of `purpose` with a new one; the old one retires (still verifies,
    /// never signs) and its private part is deleted. Returns (new kid, retired kids).
    ///
    /// # Errors
    /// I/O errors and randomness failures.
    pub fn rotate(
        &self,
        purpose: KeyPurpose,
        issuer: &str,
        now: i64,
    ) -> Result<(Kid, Vec<Kid>), KeystoreError> {
        self.ensure_dir()?;
        let mut trust = self.trust_list(issuer)?;
        let retiring: Vec<Kid> = trust
            .keys
            .iter()
            .filter(|k| k.purpose == purpose && k.status == KeyStatus::Active)
            .map(|k| k.kid)
            .collect();
        let key = IssuerKey::generate(purpose, now).map_err(|e| KeystoreError::Invalid {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        self.add_key(&mut trust, &key)?;
        for kid in &retiring {
            trust
                .retire(*kid, now)
                .map_err(|e| KeystoreError::Invalid {
                    path: self.trust_path(),
                    reason: e.to_string(),
                })?;
        }
        self.save_trust_list(&trust)?;
        for kid in &retiring {
            let path = self.secret_path(*kid);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(KeystoreError::Io { path, source: e }),
            }
        }
        Ok((key.kid(), retiring))
    }

    /// The newest active key of `purpose` whose private part is on disk.
    ///
    /// # Errors
    /// [`KeystoreError::NoSigningKey`] when there is none; I/O and parse errors.
    pub fn signing_key(
        &self,
        purpose: KeyPurpose,
        issuer: &str,
    ) -> Result<IssuerKey, KeystoreError> {
        let trust = self.trust_list(issuer)?;
        let mut candidates: Vec<_> = trust
            .keys
            .iter()
            .filter(|k| k.purpose == purpose && k.status == KeyStatus::Active)
            .collect();
        candidates.sort_by_key(|k| std::cmp::Reverse(k.valid_from));
        for candidate in candidates {
            let path = self.secret_path(candidate.kid);
            match fs::read_to_string(&path) {
                Ok(text) => {
                    check_private_mode(&path)?;
                    return IssuerKey::from_secret_text(&text).map_err(|e| {
                        KeystoreError::Invalid {
                            path,
                            reason: e.to_string(),
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(KeystoreError::Io { path, source: e }),
            }
        }
        Err(KeystoreError::NoSigningKey {
            purpose: purpose.as_str(),
            dir: self.dir.clone(),
        })
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), KeystoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))?;
    }
    let _ = (path, mode);
    Ok(())
}

/// Refuses a private key that others can read: it may have been copied, and signing with it
/// would hide that.
fn check_private_mode(path: &Path) -> Result<(), KeystoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeystoreError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "private key has mode {:o}; it must be readable by its owner only (chmod 600)",
                    mode & 0o777
                ),
            });
        }
    }
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_then_rotate_keeps_old_keys_verifiable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Keystore::new(dir.path().join("keys"));
        let made = keys.generate("VN-MOH", 1_000).expect("generate");
        assert_eq!(made.len(), 2);
        assert!(
            keys.generate("VN-MOH", 1_001).expect("again").is_empty(),
            "generate is idempotent"
        );

        let first = keys
            .signing_key(KeyPurpose::Certificate, "VN-MOH")
            .expect("signing key");
        let secret = dir
            .path()
            .join("keys")
            .join(format!("{}.secret", first.kid()));
        assert_eq!(
            fs::metadata(&secret).expect("secret").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(dir.path().join("keys"))
                .expect("dir")
                .permissions()
                .mode()
                & 0o777,
            0o700
        );

        let (new_kid, retired) = keys
            .rotate(KeyPurpose::Certificate, "VN-MOH", 2_000)
            .expect("rotate");
        assert_eq!(retired, vec![first.kid()]);
        assert!(!secret.exists(), "a retired key's private part is deleted");
        let trust = keys.trust_list("VN-MOH").expect("trust");
        let old = trust.get(first.kid()).expect("old key still published");
        assert_eq!(
            (old.status, old.valid_until),
            (KeyStatus::Retired, Some(2_000))
        );
        assert_eq!(
            keys.signing_key(KeyPurpose::Certificate, "VN-MOH")
                .expect("new")
                .kid(),
            new_kid
        );
    }

    #[test]
    fn a_world_readable_private_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Keystore::new(dir.path().join("keys"));
        keys.generate("VN-MOH", 1_000).expect("generate");
        let kid = keys
            .signing_key(KeyPurpose::Registration, "VN-MOH")
            .expect("key")
            .kid();
        let path = dir.path().join("keys").join(format!("{kid}.secret"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = keys
            .signing_key(KeyPurpose::Registration, "VN-MOH")
            .expect_err("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
