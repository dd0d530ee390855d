//! Property-based fuzzing of the decoders: random and mutated input never panics and is never
//! accepted (except a redundant deflate re-encoding of the genuine message, see tamper.rs).
//!
//! 20,000 cases per byte/text property by default; set `VAXCAMP_FUZZ_CASES` to change it
//! (e.g. 200000 for a long soak).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::LazyLock;

use ciborium::value::Value;
use common::*;
use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
use ed25519_dalek::{Signer as _, SigningKey};
use proptest::prelude::*;
use proptest::sample::Index;
use vaxcamp_certify::verify::{cose_bytes, wrap_cose_bytes};
use vaxcamp_certify::{
    Limits, decode_certificate_unverified, decode_registration_unverified, qr, verify_certificate,
    verify_registration,
};

const BASE45: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

fn cases(default: u32) -> u32 {
    std::env::var("VAXCAMP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // Failures are reported with the minimal input; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

static GENUINE: LazyLock<String> =
    LazyLock::new(|| cert_signer().sign_certificate(&certificate()).unwrap());
static GENUINE_COSE: LazyLock<Vec<u8>> =
    LazyLock::new(|| cose_bytes(&GENUINE, &Limits::default()).unwrap());
static GENUINE_PASS: LazyLock<String> =
    LazyLock::new(|| reg_signer().sign_registration(&pass()).unwrap());

/// Run every decoder on `text`. Returns whether the certificate verifier accepted it.
fn run_all(text: &str) -> bool {
    let limits = Limits::default();
    let trust = trust();
    let _ = decode_certificate_unverified(text, &limits);
    let _ = decode_registration_unverified(text, &limits);
    let _ = cose_bytes(text, &limits);
    assert!(verify_registration(text, &trust, NOW, &limits).is_err() || text.starts_with("RG1:"));
    verify_certificate(text, &trust, None, NOW, &limits).is_ok()
}

/// Accepting a mutated text is allowed only if it carries the genuine signed message.
fn accepted_only_if_genuine(text: &str) -> bool {
    !run_all(text) || cose_bytes(text, &Limits::default()).is_ok_and(|c| c == *GENUINE_COSE)
}

fn sign_raw(payload: Vec<u8>) -> String {
    // The genuine certificate key, signing arbitrary claims: checks the claims decoder on
    // hostile input that passes every layer below it.
    let key = SigningKey::from_bytes(&[0x11; 32]);
    let cose = CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::EdDSA)
                .key_id(cert_key().kid().0.to_vec())
                .build(),
        )
        .payload(payload)
        .create_signature(&[], |tbs| key.sign(tbs).to_bytes().to_vec())
        .build()
        .to_tagged_vec()
        .unwrap();
    wrap_cose_bytes("VC1:", &cose)
}

/// Arbitrary CBOR values, nested a few levels, biased towards our claim keys.
fn cbor_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| Value::Integer(i.into())),
        prop::sample::select(vec![1i64, 2, 4, 6, 7, -65537, 0, -1])
            .prop_map(|i| Value::Integer(i.into())),
        any::<f64>().prop_map(Value::Float),
        ".{0,12}".prop_map(Value::Text),
        prop::sample::select(vec![
            "v",
            "st",
            "dob",
            "nam",
            "co",
            "dn",
            "dt",
            "lo",
            "mp",
            "sd",
            "si",
            "partial",
            "complete",
            "2021-08-01",
            "VN"
        ])
        .prop_map(|s| Value::Text(s.to_owned())),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((inner.clone(), inner.clone()), 0..8).prop_map(Value::Map),
            (any::<u64>(), inner).prop_map(|(t, v)| Value::Tag(t, Box::new(v))),
        ]
    })
}

proptest! {
    #![proptest_config(config(20_000))]

    #[test]
    fn random_strings(s in "\\PC{0,600}") {
        prop_assert!(!run_all(&s));
        let prefixed = format!("VC1:{s}");
        prop_assert!(!run_all(&prefixed));
    }

    #[test]
    fn random_base45_texts(chars in prop::collection::vec(prop::sample::select(BASE45.to_vec()), 0..700)) {
        let text = format!("VC1:{}", String::from_utf8(chars).unwrap());
        prop_assert!(!run_all(&text));
    }

    #[test]
    fn random_bytes_as_zlib(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let text = format!("VC1:{}", base45::encode(&bytes));
        prop_assert!(!run_all(&text));
    }

    #[test]
    fn random_bytes_as_cose(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(!run_all(&wrap_cose_bytes("VC1:", &bytes)));
        // Behind a valid-looking tag and array header, too.
        let mut tagged = vec![0xd2, 0x84];
        tagged.extend_from_slice(&bytes);
        prop_assert!(!run_all(&wrap_cose_bytes("VC1:", &tagged)));
    }

    #[test]
    fn mutated_texts(edits in prop::collection::vec((any::<Index>(), 0u8..4, prop::sample::select(BASE45.to_vec())), 1..6)) {
        let mut text = GENUINE.as_bytes().to_vec();
        for (at, op, c) in edits {
            if text.is_empty() { break; }
            let i = at.index(text.len());
            match op {
                0 | 1 => text[i] = c,
                2 => { text.remove(i); }
                _ => text.insert(i, c),
            }
        }
        let text = String::from_utf8(text).unwrap();
        prop_assert!(accepted_only_if_genuine(&text), "accepted: {}", text);
    }

    #[test]
    fn mutated_cose(edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..5)) {
        let mut cose = GENUINE_COSE.clone();
        for (at, byte, op) in edits {
            if cose.is_empty() { break; }
            let i = at.index(cose.len());
            match op {
                0 | 1 => cose[i] = byte,
                2 => cose.truncate(i),
                _ => cose.insert(i, byte),
            }
        }
        // Edits can cancel out (a byte set, then set back): only the result counts.
        let changed = cose != *GENUINE_COSE;
        let accepted = run_all(&wrap_cose_bytes("VC1:", &cose));
        prop_assert!(!accepted || !changed, "mutated COSE accepted");
    }

    #[test]
    fn mutated_pass_texts(edits in prop::collection::vec((any::<Index>(), prop::sample::select(BASE45.to_vec())), 1..4)) {
        let mut text = GENUINE_PASS.as_bytes().to_vec();
        for (at, c) in edits {
            let i = at.index(text.len());
            text[i] = c;
        }
        let text = String::from_utf8(text).unwrap();
        let limits = Limits::default();
        if verify_registration(&text, &trust(), NOW, &limits).is_ok() {
            prop_assert_eq!(
                cose_bytes(&text, &limits).unwrap(),
                cose_bytes(&GENUINE_PASS, &limits).unwrap()
            );
        }
    }
}

proptest! {
    // Each case costs an Ed25519 signature; fewer cases, still thousands.
    #![proptest_config(config(5_000))]

    #[test]
    fn signed_arbitrary_claims(claims in cbor_value()) {
        let mut payload = Vec::new();
        ciborium::ser::into_writer(&claims, &mut payload).unwrap();
        let text = sign_raw(payload);
        // Whatever the verifier makes of it, it must not panic; if it accepts, the content
        // obeys every rule.
        if let Ok(v) = verify_certificate(&text, &trust(), None, NOW, &Limits::default()) {
            prop_assert!(v.content.validate().is_ok());
        }
        let _ = decode_certificate_unverified(&text, &Limits::default());
    }

    #[test]
    fn signed_mutated_claims(edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4)) {
        // Take the genuine claims, corrupt them, and sign them properly: only the claims
        // decoder stands between this and acceptance.
        let opened = coset::CoseSign1::from_tagged_slice(&GENUINE_COSE).unwrap();
        let mut payload = opened.payload.unwrap();
        for (at, byte) in edits {
            let i = at.index(payload.len());
            payload[i] = byte;
        }
        let text = sign_raw(payload);
        if let Ok(v) = verify_certificate(&text, &trust(), None, NOW, &Limits::default()) {
            prop_assert!(v.content.validate().is_ok());
            // Whatever it decoded to is content our signer accepts and round-trips.
            let again = cert_signer().sign_certificate(&v.content).unwrap();
            let back = verify_certificate(&again, &trust(), None, NOW, &Limits::default()).unwrap();
            prop_assert_eq!(back.content, v.content);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(depth in 1usize..2000) {
        let mut payload = vec![0x81u8; depth]; // [[[[...
        payload.push(0x01);
        let text = sign_raw(payload);
        prop_assert!(verify_certificate(&text, &trust(), None, NOW, &Limits::default()).is_err());
    }
}

proptest! {
    // PNG decoding plus QR detection is milliseconds per case.
    #![proptest_config(config(300))]

    #[test]
    fn random_png_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&bytes);
        prop_assert!(qr::decode_png(&png).is_err());
    }

    #[test]
    fn mutated_png_pixels(edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..400)) {
        // Valid PNG files with hostile pixels: exercises the QR detector, not the PNG checksums.
        static PIXELS: LazyLock<(u32, Vec<u8>)> = LazyLock::new(|| {
            let png = qr::to_png(&GENUINE, 2).unwrap();
            let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut buf).unwrap();
            (info.width, buf)
        });
        let (side, mut pixels) = PIXELS.clone();
        for (at, v) in edits {
            let i = at.index(pixels.len());
            pixels[i] = v;
        }
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&pixels).unwrap();
        w.finish().unwrap();
        if let Ok(text) = qr::decode_png(&out) {
            // Error correction may recover the genuine text; anything it returns is just text
            // and must still pass verification to mean anything.
            let _ = run_all(&text);
        }
    }
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // CBOR headers that declare 2^64-1 byte strings, arrays and maps inside a small message.
    for header in [
        &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
    ] {
        let mut cose = vec![0xd2, 0x84, 0x4d];
        cose.extend_from_slice(header);
        assert!(!run_all(&wrap_cose_bytes("VC1:", &cose)));
        let text = sign_raw(header.to_vec());
        assert!(!run_all(&text));
    }
}
