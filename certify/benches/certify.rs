//! Per-certificate costs: sign+encode, verify, QR rendering per format.
//!
//! `cargo bench -p vaxcamp-certify -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey};
use vaxcamp_certify::{
    CertifiedDose, Holder, IssuerKey, KeyPurpose, Limits, RegistrationPass, SeriesStatus, Signer,
    TrustList, VaccinationCertificate, decode_certificate_unverified, qr, verify_certificate,
    verify_registration,
};

const NOW: i64 = 1_700_000_100;

/// A realistic completed 2-dose certificate (the common case at the end of a series).
fn certificate() -> VaccinationCertificate {
    let dose = |n: u8, date: &str| CertifiedDose {
        product: "EU/1/20/1528".into(),
        lot: format!("FK{n}234"),
        dose_number: n,
        total_doses: 2,
        date: date.into(),
        site: "VN-HN-0042".into(),
        country: "VN".into(),
    };
    VaccinationCertificate {
        certificate_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        issuer: "VN-MOH".into(),
        issued_at: 1_700_000_000,
        expires_at: 1_731_622_400,
        holder: Holder {
            name: "Nguyễn Văn An".into(),
            birth_date: "1990-02-28".into(),
        },
        doses: vec![dose(1, "2021-08-01"), dose(2, "2021-09-01")],
        status: SeriesStatus::Complete,
    }
}

fn setup() -> (Signer, Signer, TrustList) {
    let cert_key = IssuerKey::from_seed(KeyPurpose::Certificate, [0x11; 32], 1_690_000_000);
    let reg_key = IssuerKey::from_seed(KeyPurpose::Registration, [0x22; 32], 1_690_000_000);
    let mut trust = TrustList::new("VN-MOH");
    trust.add(cert_key.trusted_key()).unwrap();
    trust.add(reg_key.trusted_key()).unwrap();
    (
        Signer::new(cert_key, &trust).unwrap(),
        Signer::new(reg_key, &trust).unwrap(),
        trust,
    )
}

fn benches(c: &mut Criterion) {
    let (cert_signer, reg_signer, trust) = setup();
    let cert = certificate();
    let pass = RegistrationPass {
        person_code: "VN-079-1990-000042".into(),
        issuer: "VN-MOH".into(),
        issued_at: 1_700_000_000,
        expires_at: Some(1_702_592_000),
    };
    let cert_text = cert_signer.sign_certificate(&cert).unwrap();
    let pass_text = reg_signer.sign_registration(&pass).unwrap();
    let limits = Limits::default();
    println!(
        "certificate text: {} chars; QR version {:?}",
        cert_text.len(),
        qr::encode(&cert_text).unwrap().version()
    );

    let mut g = c.benchmark_group("sign_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("certificate_2_doses", |b| {
        b.iter(|| cert_signer.sign_certificate(black_box(&cert)).unwrap())
    });
    g.bench_function("registration_pass", |b| {
        b.iter(|| reg_signer.sign_registration(black_box(&pass)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("certificate_2_doses", |b| {
        b.iter(|| verify_certificate(black_box(&cert_text), &trust, None, NOW, &limits).unwrap())
    });
    g.bench_function("registration_pass", |b| {
        b.iter(|| verify_registration(black_box(&pass_text), &trust, NOW, &limits).unwrap())
    });
    g.bench_function("certificate_decode_unverified", |b| {
        b.iter(|| decode_certificate_unverified(black_box(&cert_text), &limits).unwrap())
    });
    g.finish();

    // Reference points: the bare Ed25519 operations on a message of the same size.
    let mut g = c.benchmark_group("ed25519_reference");
    g.throughput(Throughput::Elements(1));
    let key = SigningKey::from_bytes(&[0x11; 32]);
    let message = vec![0x5a; 360];
    let signature = key.sign(&message);
    let public = key.verifying_key();
    g.bench_function("sign", |b| b.iter(|| key.sign(black_box(&message))));
    g.bench_function("verify_strict", |b| {
        b.iter(|| {
            public
                .verify_strict(black_box(&message), &signature)
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("qr_render");
    g.throughput(Throughput::Elements(1));
    g.bench_function("svg", |b| {
        b.iter(|| qr::to_svg(black_box(&cert_text)).unwrap())
    });
    g.bench_function("png_4px", |b| {
        b.iter(|| qr::to_png(black_box(&cert_text), 4).unwrap())
    });
    g.bench_function("terminal", |b| {
        b.iter(|| qr::to_terminal(black_box(&cert_text)).unwrap())
    });
    let png = qr::to_png(&cert_text, 4).unwrap();
    g.bench_function("decode_png_4px", |b| {
        b.iter(|| qr::decode_png(black_box(&png)).unwrap())
    });
    g.finish();
}

criterion_group!(certify, benches);
criterion_main!(certify);
