//! Fixed test vectors (certify/testdata/vectors.json): from a fixed seed and payload, our output
//! must equal the committed text byte for byte, and the committed text must verify.
//!
//! Regenerate (only when the format deliberately changes) with
//! `VAXCAMP_WRITE_VECTORS=1 cargo test -p vaxcamp-certify --test vectors`.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use vaxcamp_certify::verify::cose_bytes;
use vaxcamp_certify::{
    IssuerKey, KeyPurpose, Limits, RegistrationPass, Signer, TrustList, VaccinationCertificate,
    ZLIB_LEVEL, verify_certificate, verify_registration,
};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/vectors.json");
const TRUST_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/trust_list.json");

fn seed(v: &Value) -> [u8; 32] {
    let mut s = [0u8; 32];
    hex::decode_to_slice(v["seed_hex"].as_str().unwrap(), &mut s).unwrap();
    s
}

/// The inputs of the vectors; everything else in the file is derived from these.
fn inputs() -> Value {
    json!({
        "certificate": {
            "seed_hex": "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
            "purpose": "certificate",
            "valid_from": 1_690_000_000,
            "content": {
                "certificate_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                "issuer": "VN-MOH",
                "issued_at": 1_700_000_000,
                "expires_at": 1_731_622_400,
                "holder": { "name": "Nguyen Van An", "birth_date": "1990-02-28" },
                "doses": [
                    { "product": "EU/1/20/1528", "lot": "FK1234", "dose_number": 1, "total_doses": 2,
                      "date": "2021-08-01", "site": "VN-HN-0042", "country": "VN" },
                    { "product": "EU/1/20/1528", "lot": "FK2234", "dose_number": 2, "total_doses": 2,
                      "date": "2021-09-01", "site": "VN-HN-0042", "country": "VN" }
                ],
                "status": "complete"
            }
        },
        "registration": {
            "seed_hex": "2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40",
            "purpose": "registration",
            "valid_from": 1_690_000_000,
            "content": {
                "person_code": "VN-079-1990-000042",
                "issuer": "VN-MOH",
                "issued_at": 1_700_000_000,
                "expires_at": 1_702_592_000
            }
        }
    })
}

fn keys(inputs: &Value) -> (IssuerKey, IssuerKey, TrustList) {
    let cert = &inputs["certificate"];
    let reg = &inputs["registration"];
    let cert_key = IssuerKey::from_seed(
        KeyPurpose::Certificate,
        seed(cert),
        cert["valid_from"].as_i64().unwrap(),
    );
    let reg_key = IssuerKey::from_seed(
        KeyPurpose::Registration,
        seed(reg),
        reg["valid_from"].as_i64().unwrap(),
    );
    let mut trust = TrustList::new("VN-MOH");
    trust.add(cert_key.trusted_key()).unwrap();
    trust.add(reg_key.trusted_key()).unwrap();
    (cert_key, reg_key, trust)
}

/// Build the whole vector file from the inputs with the current code.
fn generate() -> (Value, TrustList) {
    let mut doc = inputs();
    let (cert_key, reg_key, trust) = keys(&doc);
    let limits = Limits::default();

    let cert: VaccinationCertificate =
        serde_json::from_value(doc["certificate"]["content"].clone()).unwrap();
    let cert_text = Signer::new(cert_key.clone(), &trust)
        .unwrap()
        .sign_certificate(&cert)
        .unwrap();
    let pass: RegistrationPass =
        serde_json::from_value(doc["registration"]["content"].clone()).unwrap();
    let pass_text = Signer::new(reg_key.clone(), &trust)
        .unwrap()
        .sign_registration(&pass)
        .unwrap();

    for (name, key, text) in [
        ("certificate", &cert_key, &cert_text),
        ("registration", &reg_key, &pass_text),
    ] {
        let cose = cose_bytes(text, &limits).unwrap();
        let v = &mut doc[name];
        v["public_key_hex"] = json!(hex::encode(key.public_key()));
        v["kid"] = json!(key.kid().to_string());
        v["cose_sign1_hex"] = json!(hex::encode(&cose));
        v["text"] = json!(text);
    }
    doc["description"] = json!(
        "vaxcamp certify test vectors. Ed25519 is deterministic, so cose_sign1_hex is \
         reproducible by any implementation from seed + content (claim layout in \
         certify/README.md). `text` is additionally pinned to this implementation's zlib \
         (flate2 rust_backend / miniz_oxide, level 1): another deflate encoder may produce a \
         different but equally valid text. Verify at verify_at."
    );
    doc["zlib_level"] = json!(ZLIB_LEVEL);
    doc["verify_at"] = json!(1_700_000_100);
    (doc, trust)
}

#[test]
fn vectors_match_byte_for_byte_and_verify() {
    let (generated, trust) = generate();
    if std::env::var_os("VAXCAMP_WRITE_VECTORS").is_some() {
        std::fs::write(
            PATH,
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(TRUST_PATH, trust.to_json()).unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let committed_trust =
        TrustList::from_json(&std::fs::read_to_string(TRUST_PATH).unwrap()).unwrap();
    assert_eq!(
        committed_trust, trust,
        "testdata/trust_list.json differs from the vector keys"
    );

    for name in ["certificate", "registration"] {
        let (want, got) = (&committed[name], &generated[name]);
        for field in ["public_key_hex", "kid", "cose_sign1_hex", "text"] {
            assert_eq!(
                want[field], got[field],
                "{name}.{field}: our output differs from the committed vector"
            );
        }
    }

    let now = committed["verify_at"].as_i64().unwrap();
    let limits = Limits::default();
    let cert_text = committed["certificate"]["text"].as_str().unwrap();
    let verified = verify_certificate(cert_text, &committed_trust, None, now, &limits).unwrap();
    let content: VaccinationCertificate =
        serde_json::from_value(committed["certificate"]["content"].clone()).unwrap();
    assert_eq!(verified.content, content);
    assert_eq!(verified.kid.to_string(), committed["certificate"]["kid"]);

    let pass_text = committed["registration"]["text"].as_str().unwrap();
    let verified = verify_registration(pass_text, &committed_trust, now, &limits).unwrap();
    let content: RegistrationPass =
        serde_json::from_value(committed["registration"]["content"].clone()).unwrap();
    assert_eq!(verified.content, content);
}

#[test]
fn secret_key_text_of_the_vector_key() {
    // The documented secret key format, for the vector key, loads back to the same kid.
    let (cert_key, _, _) = keys(&inputs());
    let text = cert_key.to_secret_text();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "vaxcamp-issuer-key/1");
    assert_eq!(v["seed"], inputs()["certificate"]["seed_hex"]);
    assert_eq!(
        IssuerKey::from_secret_text(&text).unwrap().kid(),
        cert_key.kid()
    );
}
