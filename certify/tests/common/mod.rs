//! Shared fixtures for the integration tests: fixed keys, a trust list and realistic content.
#![allow(dead_code, clippy::unwrap_used)]

use vaxcamp_certify::{
    CertifiedDose, Holder, IssuerKey, KeyPurpose, RegistrationPass, SeriesStatus, Signer,
    TrustList, VaccinationCertificate,
};

pub const ISSUER: &str = "VN-MOH";
/// Keys are valid from here on.
pub const KEYS_FROM: i64 = 1_690_000_000;
/// 2023-11-14T22:13:20Z.
pub const IAT: i64 = 1_700_000_000;
/// One year later.
pub const EXP: i64 = IAT + 366 * 86_400;
/// A moment when the fixtures are valid.
pub const NOW: i64 = IAT + 100;

pub fn cert_key() -> IssuerKey {
    IssuerKey::from_seed(KeyPurpose::Certificate, [0x11; 32], KEYS_FROM)
}

pub fn reg_key() -> IssuerKey {
    IssuerKey::from_seed(KeyPurpose::Registration, [0x22; 32], KEYS_FROM)
}

/// Trust list publishing `cert_key` and `reg_key` as active.
pub fn trust() -> TrustList {
    let mut list = TrustList::new(ISSUER);
    list.add(cert_key().trusted_key()).unwrap();
    list.add(reg_key().trusted_key()).unwrap();
    list
}

pub fn cert_signer() -> Signer {
    Signer::new(cert_key(), &trust()).unwrap()
}

pub fn reg_signer() -> Signer {
    Signer::new(reg_key(), &trust()).unwrap()
}

pub fn dose(n: u8, date: &str) -> CertifiedDose {
    CertifiedDose {
        product: "EU/1/20/1528".into(),
        lot: format!("FK{n}234"),
        dose_number: n,
        total_doses: 2,
        date: date.into(),
        site: "VN-HN-0042".into(),
        country: "VN".into(),
    }
}

/// A realistic completed 2-dose certificate.
pub fn certificate() -> VaccinationCertificate {
    VaccinationCertificate {
        certificate_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        issuer: ISSUER.into(),
        issued_at: IAT,
        expires_at: EXP,
        holder: Holder {
            name: "Nguyễn Văn An".into(),
            birth_date: "1990-02-28".into(),
        },
        doses: vec![dose(1, "2021-08-01"), dose(2, "2021-09-01")],
        status: SeriesStatus::Complete,
    }
}

pub fn pass() -> RegistrationPass {
    RegistrationPass {
        person_code: "VN-079-1990-000042".into(),
        issuer: ISSUER.into(),
        issued_at: IAT,
        expires_at: Some(IAT + 30 * 86_400),
    }
}
