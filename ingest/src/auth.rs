//! Bearer tokens: how they are made, stored (hashed) and checked on each request.
//!
//! A token is `vxc_<role>_<32 random bytes in hex>`; the role in the text is for people reading
//! it, not for the server, which trusts only the stored record. Only the SHA-256 of a token is
//! stored, so a copy of the data directory does not hand out working tokens. All credentials are
//! held in memory (there are as many as sites), so checking a token is a hash and a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use store::{Credential, Role, SiteId};

use crate::error::ApiError;

/// Who is calling, as established from their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    pub site_id: Option<SiteId>,
    /// The credential's label, recorded in audit records.
    pub label: String,
}

/// The SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Makes a new random token for `role`.
///
/// # Errors
/// When the operating system cannot supply randomness.
pub fn new_token(role: Role) -> Result<String, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    Ok(format!("vxc_{}_{}", role.as_str(), hex::encode(secret)))
}

/// The credentials the server accepts.
#[derive(Debug, Default)]
pub struct Credentials {
    by_hash: RwLock<HashMap<[u8; 32], Arc<Principal>>>,
}

impl Credentials {
    pub fn from_records(records: impl IntoIterator<Item = Credential>) -> Self {
        let credentials = Self::default();
        for record in records {
            credentials.upsert(&record);
        }
        credentials
    }

    /// Adds or replaces a credential; a revoked one stops working at once.
    pub fn upsert(&self, record: &Credential) {
        let mut map = self
            .by_hash
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if record.revoked {
            map.remove(&record.token_sha256);
        } else {
            map.insert(
                record.token_sha256,
                Arc::new(Principal {
                    role: record.role,
                    site_id: record.site_id.clone(),
                    label: record.label.clone(),
                }),
            );
        }
    }

    /// The principal for an `Authorization` header value.
    ///
    /// # Errors
    /// 401 `missing_token` or `invalid_token`.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Arc<Principal>, ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "send `Authorization: Bearer <token>`; ask the campaign operator for a token",
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "invalid_token",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let map = self
            .by_hash
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&hash_token(token)).cloned().ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_token",
                "the token is not valid (unknown or revoked)",
            )
        })
    }
}

/// The authenticated caller of a handler. Extracting it answers 401 when there is no valid token.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Principal>);

impl Caller {
    /// # Errors
    /// 403 `forbidden` when the caller's role is not among `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, ApiError> {
        if roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "a {} token cannot do this; it needs one of: {}",
                self.0.role.as_str(),
                allowed.join(", ")
            )))
        }
    }
}

/// Anything that holds the server's credentials (the app state).
pub trait HasCredentials {
    fn credentials(&self) -> &Credentials;
}

impl<S> FromRequestParts<S> for Caller
where
    S: HasCredentials + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        state.credentials().authenticate(header).map(Caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn record(token: &str, revoked: bool) -> Credential {
        Credential {
            token_sha256: hash_token(token),
            role: Role::Site,
            site_id: Some(SiteId::new("s1").expect("valid")),
            label: "site s1".into(),
            created_at: datetime!(2026-11-01 00:00 UTC),
            revoked,
        }
    }

    #[test]
    fn tokens_are_checked_by_hash() {
        let token = new_token(Role::Site).expect("randomness");
        assert!(token.starts_with("vxc_site_") && token.len() == 9 + 64);
        let credentials = Credentials::from_records([record(&token, false)]);
        let principal = credentials
            .authenticate(Some(&format!("Bearer {token}")))
            .expect("valid");
        assert_eq!(principal.role, Role::Site);
        assert_eq!(
            credentials.authenticate(None).expect_err("missing").code,
            "missing_token"
        );
        assert_eq!(
            credentials
                .authenticate(Some("Bearer nope"))
                .expect_err("unknown")
                .code,
            "invalid_token"
        );
        assert_eq!(
            credentials
                .authenticate(Some(&token))
                .expect_err("no scheme")
                .code,
            "invalid_token"
        );
    }

    #[test]
    fn revoking_a_token_takes_effect() {
        let credentials = Credentials::from_records([record("t1", false)]);
        assert!(credentials.authenticate(Some("Bearer t1")).is_ok());
        credentials.upsert(&record("t1", true));
        assert!(credentials.authenticate(Some("Bearer t1")).is_err());
    }
}
