//! From a person's record to a signed certificate, and the cache of rendered QR images.
//!
//! A certificate carries the whole series. Its text is deterministic for a given series and
//! key: the certificate id is a hash of the content, and the issue time is the latest dose's
//! record time (or the key's start, if the key is newer), so a retried dose returns the very same
//! certificate text. A correction changes the content and therefore the id; the old id is then
//! revoked (see `api::corrections`).

use std::collections::HashMap;
use std::sync::Arc;

use certify::{CertifiedDose, Holder, SeriesStatus, Signer, VaccinationCertificate};
use sha2::{Digest, Sha256};
use store::{Dose, Product, ProductCode, Registration};

use crate::error::ApiError;

/// Rendered QR formats a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Svg,
    Png,
    /// Unicode half blocks, for a terminal.
    Terminal,
}

/// Issuer settings for certificates.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub issuer: String,
    pub country: String,
    pub validity_days: u32,
}

/// The certificate content for a person's series, before signing.
pub fn certificate_for(
    person: &Registration,
    doses: &[Dose],
    products: &HashMap<ProductCode, Product>,
    settings: &IssuerSettings,
    key_valid_from: i64,
) -> VaccinationCertificate {
    let series_total = doses
        .first()
        .and_then(|first| products.get(&first.product))
        .map_or(doses.len() as u8, |p| p.doses_in_series);
    let certified: Vec<CertifiedDose> = doses
        .iter()
        .map(|d| CertifiedDose {
            product: d.product.to_string(),
            lot: d.lot_number.to_string(),
            dose_number: d.dose_number,
            total_doses: series_total.max(d.dose_number),
            date: d.administered_at.date().to_string(),
            site: d.site_id.to_string(),
            country: settings.country.clone(),
        })
        .collect();
    let status = SeriesStatus::for_doses(&certified);
    let latest = doses
        .iter()
        .map(|d| d.recorded_at.unix_timestamp())
        .max()
        .unwrap_or(0);
    let issued_at = latest.max(key_valid_from);
    let holder = Holder {
        name: person.name.clone(),
        birth_date: person.birth_date.to_string(),
    };
    let certificate_id = certificate_id(&settings.country, &holder, &certified);
    VaccinationCertificate {
        certificate_id,
        issuer: settings.issuer.clone(),
        issued_at,
        expires_at: issued_at + i64::from(settings.validity_days) * 86_400,
        holder,
        doses: certified,
        status,
    }
}

/// `URN:UVCI:01:<country>:<26 base32 characters of SHA-256 over the content>`, in the shape of
/// the EU's unique vaccination certificate identifier. Same content, same id.
fn certificate_id(country: &str, holder: &Holder, doses: &[CertifiedDose]) -> String {
    let mut hasher = Sha256::new();
    for part in [holder.name.as_str(), holder.birth_date.as_str()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for d in doses {
        for part in [
            d.product.as_str(),
            d.lot.as_str(),
            d.date.as_str(),
            d.site.as_str(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.update([d.dose_number, d.total_doses]);
    }
    let digest = hasher.finalize();
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut out = String::with_capacity(26);
    for byte in digest.iter().take(17) {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    format!("URN:UVCI:01:{country}:{out}")
}

/// Signs certificates and keeps recently rendered images, so a citizen reloading the page or a
/// site printing twice costs a lookup, not a QR encode (~2 ms).
pub struct CertificateDesk {
    signer: Signer,
    key_valid_from: i64,
    pub settings: IssuerSettings,
    rendered: quick_cache::sync::Cache<(String, Format), Arc<Vec<u8>>>,
}

impl std::fmt::Debug for CertificateDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateDesk")
            .field("kid", &self.signer.kid())
            .finish_non_exhaustive()
    }
}

impl CertificateDesk {
    /// `cache_entries` bounds the rendered-image cache.
    pub fn new(
        signer: Signer,
        key_valid_from: i64,
        settings: IssuerSettings,
        cache_entries: usize,
    ) -> Self {
        Self {
            signer,
            key_valid_from,
            settings,
            rendered: quick_cache::sync::Cache::new(cache_entries.max(16)),
        }
    }

    /// The certificate for a person's series (which must not be empty).
    pub fn content(
        &self,
        person: &Registration,
        doses: &[Dose],
        products: &HashMap<ProductCode, Product>,
    ) -> VaccinationCertificate {
        certificate_for(person, doses, products, &self.settings, self.key_valid_from)
    }

    /// Signs `certificate`: the `VC1:` text.
    ///
    /// # Errors
    /// A 500 when signing fails (the content is ours, so this is a bug or a key problem).
    pub fn sign(&self, certificate: &VaccinationCertificate) -> Result<String, ApiError> {
        self.signer
            .sign_certificate(certificate)
            .map_err(ApiError::internal)
    }

    /// The certificate rendered as `format`, from the cache when it was rendered before.
    ///
    /// # Errors
    /// A 500 when rendering fails.
    pub fn render(
        &self,
        certificate: &VaccinationCertificate,
        format: Format,
    ) -> Result<Arc<Vec<u8>>, ApiError> {
        let key = (certificate.certificate_id.clone(), format);
        if let Some(hit) = self.rendered.get(&key) {
            return Ok(hit);
        }
        let text = self.sign(certificate)?;
        let bytes = match format {
            Format::Text => text.into_bytes(),
            Format::Svg => certify::qr::to_svg(&text)
                .map_err(ApiError::internal)?
                .into_bytes(),
            Format::Png => certify::qr::to_png(&text, 6).map_err(ApiError::internal)?,
            Format::Terminal => certify::qr::to_terminal(&text)
                .map_err(ApiError::internal)?
                .into_bytes(),
        };
        let bytes = Arc::new(bytes);
        self.rendered.insert(key, bytes.clone());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::builtin_products;
    use store::conformance::{sample_dose, sample_registration};

    fn settings() -> IssuerSettings {
        IssuerSettings {
            issuer: "VN-MOH".into(),
            country: "VN".into(),
            validity_days: 365,
        }
    }

    #[test]
    fn content_is_deterministic_and_tracks_the_series() {
        let products: HashMap<_, _> = builtin_products()
            .into_iter()
            .map(|p| (p.code.clone(), p))
            .collect();
        let person = sample_registration(1);
        let one = vec![sample_dose(&person.person_code, 1)];
        let a = certificate_for(&person, &one, &products, &settings(), 0);
        let b = certificate_for(&person, &one, &products, &settings(), 0);
        assert_eq!(a, b);
        assert_eq!(a.status, SeriesStatus::Partial);
        assert_eq!(a.doses[0].total_doses, 2);
        assert!(
            a.certificate_id.starts_with("URN:UVCI:01:VN:") && a.certificate_id.len() == 15 + 26
        );
        assert_eq!(a.issued_at, one[0].recorded_at.unix_timestamp());

        let mut two = one.clone();
        let mut second = sample_dose(&person.person_code, 2);
        second.administered_at += time::Duration::days(21);
        two.push(second);
        let c = certificate_for(&person, &two, &products, &settings(), 0);
        assert_eq!(c.status, SeriesStatus::Complete);
        assert_ne!(c.certificate_id, a.certificate_id, "new content, new id");

        let later_key = certificate_for(&person, &one, &products, &settings(), i64::MAX / 4);
        assert_eq!(
            later_key.issued_at,
            i64::MAX / 4,
            "never issued before the signing key's start"
        );
    }
}
