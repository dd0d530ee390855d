//! Campaign set-up shared by the CLI (on a stopped server's data directory) and the admin API
//! (on a running server): create a campaign, add sites, lots, products and tokens.

use std::path::Path;

use store::{Credential, Lot, Product, Role, Site, SiteId, Store, builtin_products};

use crate::areas::AreaNames;
use crate::auth::{hash_token, new_token};
use crate::keystore::{Keystore, KeystoreError};

/// Errors during set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] KeystoreError),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

impl From<store::InvalidField> for SetupError {
    fn from(e: store::InvalidField) -> Self {
        SetupError::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

/// What `init` made. The admin token is shown once and never stored in clear.
#[derive(Debug)]
pub struct Initialized {
    pub admin_token: Option<String>,
    pub keys_made: usize,
}

/// Creates (or completes) a campaign in `data`: the built-in products, issuer settings, signing
/// keys, and an admin token when there is no admin yet. Safe to run twice.
///
/// # Errors
/// Store and key errors.
pub async fn init_campaign(
    store: &dyn Store,
    data: &Path,
    issuer: &str,
    country: &str,
) -> Result<Initialized, SetupError> {
    if store.setting("issuer").await?.is_none() {
        store.put_setting("issuer", issuer).await?;
        store.put_setting("country", country).await?;
    }
    let issuer = store
        .setting("issuer")
        .await?
        .unwrap_or_else(|| issuer.to_owned());
    let known: Vec<_> = store
        .products()
        .await?
        .into_iter()
        .map(|p| p.code)
        .collect();
    for product in builtin_products() {
        if !known.contains(&product.code) {
            store.put_product(&product).await?;
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let keys_made = Keystore::in_data_dir(data).generate(&issuer, now)?.len();
    let has_admin = store
        .credentials()
        .await?
        .iter()
        .any(|c| c.role == Role::Admin && !c.revoked);
    let admin_token = if has_admin {
        None
    } else {
        Some(add_token(store, Role::Admin, None, "admin (created by init)").await?)
    };
    Ok(Initialized {
        admin_token,
        keys_made,
    })
}

/// Issues a new token and stores its hash. Returns the token: show it once.
///
/// # Errors
/// Store errors, a site token without a site, and randomness failures.
pub async fn add_token(
    store: &dyn Store,
    role: Role,
    site_id: Option<SiteId>,
    label: &str,
) -> Result<String, SetupError> {
    if (role == Role::Site) != site_id.is_some() {
        return Err(SetupError::Invalid {
            field: "site_id",
            message: "a site token needs a site, and only a site token has one".into(),
        });
    }
    let token = new_token(role).map_err(|e| SetupError::Random(e.to_string()))?;
    let credential = Credential {
        token_sha256: hash_token(&token),
        role,
        site_id,
        label: label.to_owned(),
        created_at: store::embedded::now_seconds(),
        revoked: false,
    };
    store.put_credential(&credential).await?;
    Ok(token)
}

/// Adds (or updates) a site and issues its token.
///
/// # Errors
/// Invalid site fields and store errors.
pub async fn add_site(store: &dyn Store, site: &Site) -> Result<(String, Credential), SetupError> {
    site.validate()?;
    store.put_site(site).await?;
    let label = format!("site {}", site.site_id);
    let token = add_token(store, Role::Site, Some(site.site_id.clone()), &label).await?;
    let credential = store
        .credentials()
        .await?
        .into_iter()
        .find(|c| c.token_sha256 == hash_token(&token))
        .ok_or_else(|| SetupError::Invalid {
            field: "site_id",
            message: "the new token was not stored".into(),
        })?;
    Ok((token, credential))
}

/// Adds (or updates) a lot at a site.
///
/// # Errors
/// An unknown site or product, and store errors.
pub async fn add_lot(store: &dyn Store, lot: &Lot) -> Result<(), SetupError> {
    if !store
        .sites()
        .await?
        .iter()
        .any(|s| s.site_id == lot.site_id)
    {
        return Err(SetupError::Invalid {
            field: "site_id",
            message: format!("no site {}; add it first", lot.site_id),
        });
    }
    if !store
        .products()
        .await?
        .iter()
        .any(|p| p.code == lot.product)
    {
        return Err(SetupError::Invalid {
            field: "product",
            message: format!("no product {} in the catalogue", lot.product),
        });
    }
    if lot.quantity == 0 {
        return Err(SetupError::Invalid {
            field: "quantity",
            message: "must be at least 1 dose".into(),
        });
    }
    store.put_lot(lot).await?;
    Ok(())
}

/// Adds (or updates) a product in the catalogue.
///
/// # Errors
/// Invalid product fields and store errors.
pub async fn add_product(store: &dyn Store, product: &Product) -> Result<(), SetupError> {
    product.validate()?;
    store.put_product(product).await?;
    Ok(())
}

/// Replaces the campaign's province and district names (see [`crate::areas`]).
///
/// # Errors
/// Store errors.
pub async fn put_area_names(store: &dyn Store, names: &AreaNames) -> Result<(), SetupError> {
    store
        .put_setting(crate::areas::SETTING, &names.to_setting())
        .await?;
    Ok(())
}
