//! Round trips and every refusal the verifier and signer promise.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::Write;
use vaxcamp_certify::verify::{cose_bytes, wrap_cose_bytes};
use vaxcamp_certify::{
    IssuerKey, KeyPurpose, KeyStatus, Limits, RevocationList, SeriesStatus, SignError, Signer,
    TrustList, VerifyError, decode_certificate_unverified, decode_registration_unverified,
    verify_certificate, verify_registration,
};

fn verify(text: &str, trust: &TrustList, now: i64) -> Result<(), VerifyError> {
    verify_certificate(text, trust, None, now, &Limits::default()).map(|_| ())
}

fn code(r: Result<(), VerifyError>) -> &'static str {
    r.unwrap_err().code()
}

#[test]
fn certificate_round_trip() {
    let cert = certificate();
    let text = cert_signer().sign_certificate(&cert).unwrap();
    assert!(text.starts_with("VC1:"));
    assert!(
        text.bytes()
            .all(|c| b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".contains(&c))
    );
    let verified = verify_certificate(&text, &trust(), None, NOW, &Limits::default()).unwrap();
    assert_eq!(verified.kid, cert_key().kid());
    assert_eq!(verified.content, cert);
    assert_eq!(verified.content.status.colour(), "blue");
    // Signing is deterministic.
    assert_eq!(cert_signer().sign_certificate(&cert).unwrap(), text);
}

#[test]
fn partial_certificate_round_trip() {
    let mut cert = certificate();
    cert.doses.truncate(1);
    cert.status = SeriesStatus::Partial;
    let text = cert_signer().sign_certificate(&cert).unwrap();
    let verified = verify_certificate(&text, &trust(), None, NOW, &Limits::default()).unwrap();
    assert_eq!(verified.content.status, SeriesStatus::Partial);
    assert_eq!(verified.content.status.colour(), "yellow");
}

#[test]
fn registration_round_trip() {
    let pass = pass();
    let text = reg_signer().sign_registration(&pass).unwrap();
    assert!(text.starts_with("RG1:"));
    let verified = verify_registration(&text, &trust(), NOW, &Limits::default()).unwrap();
    assert_eq!(verified.kid, reg_key().kid());
    assert_eq!(verified.content, pass);
    // A pass without expiry.
    let open = vaxcamp_certify::RegistrationPass {
        expires_at: None,
        ..pass
    };
    let text = reg_signer().sign_registration(&open).unwrap();
    let far_future = IAT + 50 * 365 * 86_400;
    assert_eq!(
        verify_registration(&text, &trust(), far_future, &Limits::default())
            .unwrap()
            .content,
        open
    );
}

#[test]
fn unverified_decoding() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let decoded = decode_certificate_unverified(&text, &Limits::default()).unwrap();
    assert_eq!(decoded.content, certificate());
    let text = reg_signer().sign_registration(&pass()).unwrap();
    assert_eq!(
        decode_registration_unverified(&text, &Limits::default())
            .unwrap()
            .content,
        pass()
    );
    // Still enforces limits and prefix.
    assert_eq!(
        decode_certificate_unverified(&text, &Limits::default())
            .unwrap_err()
            .code(),
        "bad_prefix"
    );
}

#[test]
fn wrong_key_is_bad_signature() {
    // An attacker signs with their own key but claims the trusted kid.
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let mut cose = cose_bytes(&text, &Limits::default()).unwrap();
    let attacker = IssuerKey::from_seed(KeyPurpose::Certificate, [0x66; 32], KEYS_FROM);
    let mut attacker_trust = TrustList::new(ISSUER);
    attacker_trust.add(attacker.trusted_key()).unwrap();
    let forged = Signer::new(attacker.clone(), &attacker_trust)
        .unwrap()
        .sign_certificate(&certificate())
        .unwrap();
    let forged_cose = cose_bytes(&forged, &Limits::default()).unwrap();
    // Same length layout; swap in the genuine kid (protected header bytes 5..13 after the tag,
    // array, bstr and map headers) and keep the attacker's signature.
    let at = cose
        .windows(8)
        .position(|w| w == cert_key().kid().0)
        .unwrap();
    let mut spoofed = forged_cose.clone();
    spoofed[at..at + 8].copy_from_slice(&cert_key().kid().0);
    assert_eq!(
        code(verify(&wrap_cose_bytes("VC1:", &spoofed), &trust(), NOW)),
        "bad_signature"
    );
    // And with the genuine signature on the attacker's message.
    let sig_at = cose.len() - 64;
    cose[sig_at..].copy_from_slice(&forged_cose[forged_cose.len() - 64..]);
    assert_eq!(
        code(verify(&wrap_cose_bytes("VC1:", &cose), &trust(), NOW)),
        "bad_signature"
    );
    // The attacker's own text names a kid we do not know.
    assert_eq!(code(verify(&forged, &trust(), NOW)), "unknown_kid");
}

#[test]
fn unknown_kid() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let mut list = trust();
    list.keys.retain(|k| k.purpose != KeyPurpose::Certificate);
    assert_eq!(code(verify(&text, &list, NOW)), "unknown_kid");
    assert_eq!(
        code(verify(&text, &TrustList::new(ISSUER), NOW)),
        "unknown_kid"
    );
}

#[test]
fn wrong_purpose_both_ways() {
    // The same machinery, but each prefix demands its own key purpose.
    let cert_text = cert_signer().sign_certificate(&certificate()).unwrap();
    let pass_text = reg_signer().sign_registration(&pass()).unwrap();
    let swap = |t: &str, p: &str| format!("{p}{}", &t[4..]);
    assert_eq!(
        verify_registration(&swap(&cert_text, "RG1:"), &trust(), NOW, &Limits::default())
            .unwrap_err()
            .code(),
        "wrong_purpose"
    );
    assert_eq!(
        code(verify(&swap(&pass_text, "VC1:"), &trust(), NOW)),
        "wrong_purpose"
    );
    // Signer refuses the wrong document type.
    assert!(matches!(
        cert_signer().sign_registration(&pass()),
        Err(SignError::WrongPurpose { .. })
    ));
    assert!(matches!(
        reg_signer().sign_certificate(&certificate()),
        Err(SignError::WrongPurpose { .. })
    ));
    // A trust list that publishes the certificate key as a registration key: the signer refuses
    // it, and a verifier of certificates refuses what it signed.
    let mut mislabelled = trust();
    for k in &mut mislabelled.keys {
        if k.kid == cert_key().kid() {
            k.purpose = KeyPurpose::Registration;
        }
    }
    assert!(matches!(
        Signer::new(cert_key(), &mislabelled),
        Err(SignError::WrongPurpose { .. })
    ));
    assert_eq!(code(verify(&cert_text, &mislabelled, NOW)), "wrong_purpose");
}

#[test]
fn expired_and_not_yet_valid() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    assert_eq!(code(verify(&text, &trust(), EXP)), "expired");
    assert!(verify(&text, &trust(), EXP - 1).is_ok());
    // Up to five minutes of clock skew for an iat in the future.
    assert!(verify(&text, &trust(), IAT - 300).is_ok());
    assert_eq!(code(verify(&text, &trust(), IAT - 301)), "not_yet_valid");

    let pass_text = reg_signer().sign_registration(&pass()).unwrap();
    let exp = pass().expires_at.unwrap();
    assert_eq!(
        verify_registration(&pass_text, &trust(), exp, &Limits::default())
            .unwrap_err()
            .code(),
        "expired"
    );
}

#[test]
fn revoked_certificate_id() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let mut revoked = RevocationList::default();
    revoked.insert("someone-else");
    assert!(verify_certificate(&text, &trust(), Some(&revoked), NOW, &Limits::default()).is_ok());
    revoked.insert(certificate().certificate_id);
    let err =
        verify_certificate(&text, &trust(), Some(&revoked), NOW, &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "revoked");
    assert!(err.to_string().contains(&certificate().certificate_id));
}

#[test]
fn revoked_key_refuses_everything_it_signed() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let mut list = trust();
    list.revoke(cert_key().kid()).unwrap();
    assert_eq!(code(verify(&text, &list, NOW)), "key_revoked");
    assert!(matches!(
        Signer::new(cert_key(), &list),
        Err(SignError::NotActive {
            status: KeyStatus::Revoked,
            ..
        })
    ));
}

#[test]
fn rotation_keeps_old_certificates_valid() {
    let old_text = cert_signer().sign_certificate(&certificate()).unwrap();

    // Rotate: a new key becomes active, the old one is retired a day after the old certificate.
    let rotated_at = IAT + 86_400;
    let new_key = IssuerKey::from_seed(KeyPurpose::Certificate, [0x33; 32], rotated_at);
    let mut list = trust();
    list.retire(cert_key().kid(), rotated_at).unwrap();
    list.add(new_key.trusted_key()).unwrap();
    assert_eq!(
        list.active_key(KeyPurpose::Certificate).unwrap().kid,
        new_key.kid()
    );

    // The retired key still verifies what it signed inside its window...
    let later = rotated_at + 1000;
    let verified = verify_certificate(&old_text, &list, None, later, &Limits::default()).unwrap();
    assert_eq!(verified.kid, cert_key().kid());

    // ...but cannot sign any more.
    assert!(matches!(
        Signer::new(cert_key(), &list),
        Err(SignError::NotActive {
            status: KeyStatus::Retired,
            ..
        })
    ));

    // The new key signs; its certificates verify under the new kid.
    let mut cert = certificate();
    cert.issued_at = later;
    cert.expires_at = later + 86_400 * 365;
    let new_text = Signer::new(new_key.clone(), &list)
        .unwrap()
        .sign_certificate(&cert)
        .unwrap();
    let verified = verify_certificate(&new_text, &list, None, later, &Limits::default()).unwrap();
    assert_eq!(verified.kid, new_key.kid());

    // A certificate that claims to be issued by the old key after its retirement is refused
    // (signed here with the old key before the list was updated, i.e. a backdating attempt).
    let late = cert_signer().sign_certificate(&cert).unwrap();
    assert_eq!(code(verify(&late, &list, later)), "key_not_valid_at_issue");
}

#[test]
fn key_not_valid_at_issue_before_valid_from() {
    let mut cert = certificate();
    cert.issued_at = KEYS_FROM - 1;
    // The signer refuses too: it checks the published window.
    assert!(matches!(
        cert_signer().sign_certificate(&cert),
        Err(SignError::KeyNotValidAt { .. })
    ));
    // Sign under a list with an earlier window, verify under the real one.
    let mut early = trust();
    for k in &mut early.keys {
        k.valid_from = 0;
    }
    let text = Signer::new(cert_key(), &early)
        .unwrap()
        .sign_certificate(&cert)
        .unwrap();
    assert_eq!(code(verify(&text, &trust(), NOW)), "key_not_valid_at_issue");
}

#[test]
fn signer_refuses_unpublished_and_mismatched_keys() {
    let stranger = IssuerKey::from_seed(KeyPurpose::Certificate, [0x44; 32], KEYS_FROM);
    assert!(matches!(
        Signer::new(stranger, &trust()),
        Err(SignError::NotPublished(_))
    ));
    let mut list = trust();
    list.keys[0].public_key =
        IssuerKey::from_seed(KeyPurpose::Certificate, [0x45; 32], 0).public_key();
    assert!(matches!(
        Signer::new(cert_key(), &list),
        Err(SignError::PublicKeyMismatch(_))
    ));
    // A verifier given that inconsistent list refuses rather than trusting the foreign key.
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    assert_eq!(code(verify(&text, &list, NOW)), "bad_trusted_key");
}

#[test]
fn issuer_must_match_the_trust_list() {
    let mut cert = certificate();
    cert.issuer = "ELSEWHERE".into();
    assert!(matches!(
        cert_signer().sign_certificate(&cert),
        Err(SignError::IssuerMismatch { .. })
    ));
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let mut list = trust();
    list.issuer = "ELSEWHERE".into();
    assert_eq!(code(verify(&text, &list, NOW)), "wrong_issuer");
}

#[test]
fn signer_refuses_invalid_content() {
    let mut cert = certificate();
    cert.status = SeriesStatus::Partial; // both doses given: it is complete
    assert!(matches!(
        cert_signer().sign_certificate(&cert),
        Err(SignError::InvalidContent(_))
    ));
    let mut cert = certificate();
    cert.holder.birth_date = "1990-02-30".into();
    let err = cert_signer().sign_certificate(&cert).unwrap_err();
    assert!(err.to_string().contains("birth date"), "{err}");
}

fn zlib_max(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn zlib_bomb_is_too_large() {
    // 10 MB of zeros: ~10 KB compressed, so raise the text limit to let it reach the inflater.
    let bomb = zlib_max(&vec![0u8; 10_000_000]);
    let text = format!("VC1:{}", base45::encode(&bomb));
    let limits = Limits {
        max_text_len: 1 << 20,
        ..Limits::default()
    };
    let err = verify_certificate(&text, &trust(), None, NOW, &limits).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert_eq!(
        decode_certificate_unverified(&text, &limits)
            .unwrap_err()
            .code(),
        "too_large"
    );
    // With default limits the same text is already refused for its length.
    assert_eq!(code(verify(&text, &trust(), NOW)), "too_long");

    // A bomb that fits in a QR-sized text (1 MB of zeros) hits the inflate cap by default.
    let small_bomb = zlib_max(&vec![0u8; 1_000_000]);
    let text = format!("VC1:{}", base45::encode(&small_bomb));
    assert!(text.len() <= Limits::default().max_text_len);
    assert_eq!(code(verify(&text, &trust(), NOW)), "too_large");
}

#[test]
fn oversize_text_is_too_long() {
    let text = format!("VC1:{}", "A".repeat(5000));
    let err = verify(&text, &trust(), NOW).unwrap_err();
    assert_eq!(err.code(), "too_long");
    assert!(err.to_string().contains("5004"), "{err}");
    // The limit is the caller's to set.
    let genuine = cert_signer().sign_certificate(&certificate()).unwrap();
    let tight = Limits {
        max_text_len: genuine.len() - 1,
        ..Limits::default()
    };
    assert_eq!(
        verify_certificate(&genuine, &trust(), None, NOW, &tight)
            .unwrap_err()
            .code(),
        "too_long"
    );
    let tight = Limits {
        max_inflated_len: 100,
        ..Limits::default()
    };
    assert_eq!(
        verify_certificate(&genuine, &trust(), None, NOW, &tight)
            .unwrap_err()
            .code(),
        "too_large"
    );
}

#[test]
fn early_layer_errors() {
    let genuine = cert_signer().sign_certificate(&certificate()).unwrap();
    assert_eq!(code(verify("", &trust(), NOW)), "bad_prefix");
    assert_eq!(code(verify("HC1:ABC", &trust(), NOW)), "bad_prefix");
    assert_eq!(
        code(verify(&genuine.to_lowercase(), &trust(), NOW)),
        "bad_prefix"
    );
    assert_eq!(code(verify("VC1:", &trust(), NOW)), "bad_zlib");
    assert_eq!(code(verify("VC1:a", &trust(), NOW)), "bad_base45");
    assert_eq!(code(verify("VC1:AAAA", &trust(), NOW)), "bad_base45");
    assert_eq!(
        code(verify(&format!("{genuine}\n"), &trust(), NOW)),
        "bad_base45"
    );
    // Valid zlib of something that is not COSE.
    let not_cose = format!("VC1:{}", base45::encode(zlib_max(b"hello")));
    assert_eq!(code(verify(&not_cose, &trust(), NOW)), "bad_cose");
    // Truncated text.
    let cut = &genuine[..genuine.len() - 3];
    assert_eq!(code(verify(cut, &trust(), NOW)), "bad_zlib");
}

#[test]
fn error_messages_say_what_is_wrong() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let err = verify(&text, &TrustList::new(ISSUER), NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("key {} is not in the trust list", cert_key().kid())
    );
    let err = verify(&text, &trust(), EXP + 5).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("expired at {EXP} (now {})", EXP + 5)
    );
}
