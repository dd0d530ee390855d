//! Tampering: every single change to a genuine certificate, at the text layer and at the COSE
//! layer, is refused. None may verify, none may panic.
//!
//! One nuance at the text layer: deflate (RFC 1951) is not a canonical encoding. A few bit
//! changes inside the compressed stream (in a dynamic Huffman table entry no symbol uses, for
//! example) inflate to exactly the same COSE bytes, Adler-32 and all. Such a text carries the
//! identical signed message, so it verifies to the identical certificate; that is not a
//! forgery, and no decoder of deflate can tell. The test therefore allows acceptance only when
//! the inflated COSE message is byte-identical to the genuine one, and counts those cases.
//! At the COSE layer, where every byte has meaning, nothing at all may be accepted.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::BTreeMap;
use vaxcamp_certify::verify::{cose_bytes, wrap_cose_bytes};
use vaxcamp_certify::{Limits, RevocationList, verify_certificate, verify_registration};

const BASE45: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

/// Codes that a tampered text may legitimately produce.
const EXPECTED: &[&str] = &[
    "bad_prefix",
    "bad_base45",
    "bad_zlib",
    "too_large",
    "bad_cose",
    "bad_claims",
    "unknown_kid",
    "wrong_purpose",
    "key_not_valid_at_issue",
    "wrong_issuer",
    "bad_signature",
    "expired",
    "not_yet_valid",
];

fn check(
    text: &str,
    genuine_cose: Option<&[u8]>,
    tally: &mut BTreeMap<&'static str, usize>,
    what: &str,
) {
    let revoked = RevocationList::default();
    match verify_certificate(text, &trust(), Some(&revoked), NOW, &Limits::default()) {
        Ok(v) => {
            let same = genuine_cose
                .is_some_and(|g| cose_bytes(text, &Limits::default()).is_ok_and(|c| c == g));
            assert!(same, "{what}: tampered text was accepted: {v:?}");
            assert_eq!(v.content, certificate());
            *tally.entry("same_signed_message").or_default() += 1;
        }
        Err(e) => {
            assert!(EXPECTED.contains(&e.code()), "{what}: unexpected {e:?}");
            *tally.entry(e.code()).or_default() += 1;
        }
    }
}

#[test]
fn every_base45_character_substituted() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let genuine = cose_bytes(&text, &Limits::default()).unwrap();
    let bytes = text.as_bytes();
    let mut tally = BTreeMap::new();
    let mut cases = 0;
    for i in 0..bytes.len() {
        // Every other alphabet character (covers every in-alphabet change of this position)
        // and every single-bit flip that stays ASCII.
        let mut replacements: Vec<u8> = BASE45.iter().copied().filter(|&c| c != bytes[i]).collect();
        replacements.extend((0..7).map(|bit| bytes[i] ^ (1 << bit)));
        for r in replacements {
            let mut t = bytes.to_vec();
            t[i] = r;
            let t = String::from_utf8(t).unwrap();
            check(
                &t,
                Some(&genuine),
                &mut tally,
                &format!("position {i} -> {:?}", r as char),
            );
            cases += 1;
        }
    }
    // Deletions and insertions at every position.
    for i in 0..bytes.len() {
        let mut t = text.clone();
        t.remove(i);
        check(&t, Some(&genuine), &mut tally, &format!("delete {i}"));
        let mut t = text.clone();
        t.insert(i, 'A');
        check(&t, Some(&genuine), &mut tally, &format!("insert {i}"));
        cases += 2;
    }
    println!(
        "{cases} text mutations of a {}-char certificate: {tally:?}",
        text.len()
    );
    // Most changes break the zlib stream (Adler-32 catches payload changes before the signature
    // is even looked at); identical-message cases stay a small minority.
    assert!(tally["bad_zlib"] > cases / 2);
    assert!(tally.get("same_signed_message").copied().unwrap_or(0) < cases / 100);
}

#[test]
fn every_cose_byte_flipped() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let cose = cose_bytes(&text, &Limits::default()).unwrap();
    let mut tally = BTreeMap::new();
    let mut cases = 0;
    for i in 0..cose.len() {
        for mask in [0xffu8, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
            let mut c = cose.clone();
            c[i] ^= mask;
            check(
                &wrap_cose_bytes("VC1:", &c),
                None,
                &mut tally,
                &format!("COSE byte {i} ^ {mask:#04x}"),
            );
            cases += 1;
        }
    }
    println!("{cases} COSE mutations of {} bytes: {tally:?}", cose.len());
    // Every byte of the payload and signature is covered by the signature.
    assert!(tally["bad_signature"] >= 64 * 9);
}

#[test]
fn registration_pass_tampering() {
    let text = reg_signer().sign_registration(&pass()).unwrap();
    let cose = cose_bytes(&text, &Limits::default()).unwrap();
    for i in 0..cose.len() {
        for bit in 0..8 {
            let mut c = cose.clone();
            c[i] ^= 1 << bit;
            let t = wrap_cose_bytes("RG1:", &c);
            assert!(
                verify_registration(&t, &trust(), NOW, &Limits::default()).is_err(),
                "byte {i} bit {bit} accepted"
            );
        }
    }
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        for &r in BASE45.iter().filter(|&&c| c != bytes[i]) {
            let mut t = bytes.to_vec();
            t[i] = r;
            let t = String::from_utf8(t).unwrap();
            if verify_registration(&t, &trust(), NOW, &Limits::default()).is_ok() {
                // Only a redundant deflate encoding of the identical message may pass.
                assert_eq!(
                    cose_bytes(&t, &Limits::default()).unwrap(),
                    cose,
                    "position {i} -> {:?} accepted",
                    r as char
                );
            }
        }
    }
}
