//! The key and verification commands, as an operator and a verifier use them: `vaxcamp init`,
//! `keys list|export|rotate`, and `vaxcamp verify` on a text and on a QR image, offline.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn vaxcamp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vaxcamp"))
        // These tests are about the embedded store, even when the ScyllaDB tests are pointed at
        // a cluster through the environment.
        .env_remove("VAXCAMP_SCYLLA_NODES")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let output = vaxcamp(args);
    assert!(
        output.status.success(),
        "vaxcamp {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Signs a one-dose certificate with the data directory's active certificate key, as the server
/// would.
fn sign_with_active_key(data: &Path, issued_at: i64) -> String {
    let keys = data.join("keys");
    let trust =
        certify::TrustList::from_json(&std::fs::read_to_string(keys.join("trust.json")).unwrap())
            .unwrap();
    let kid = trust
        .active_key(certify::KeyPurpose::Certificate)
        .unwrap()
        .kid;
    let key = certify::IssuerKey::from_secret_text(
        &std::fs::read_to_string(keys.join(format!("{kid}.secret"))).unwrap(),
    )
    .unwrap();
    let doses = vec![certify::CertifiedDose {
        product: "COMIRNATY".into(),
        lot: "FK5618".into(),
        dose_number: 1,
        total_doses: 2,
        date: "2026-11-20".into(),
        site: "hn-01".into(),
        country: "VN".into(),
    }];
    let certificate = certify::VaccinationCertificate {
        certificate_id: format!("URN:UVCI:01:VN:TEST{issued_at}"),
        issuer: "VN-MOH".into(),
        issued_at,
        expires_at: issued_at + 365 * 86_400,
        holder: certify::Holder {
            name: "Nguyễn Văn An".into(),
            birth_date: "1985-03-02".into(),
        },
        status: certify::SeriesStatus::for_doses(&doses),
        doses,
    };
    certify::Signer::new(key, &trust)
        .unwrap()
        .sign_certificate(&certificate)
        .unwrap()
}

#[test]
fn keys_rotate_and_certificates_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let init = ok(&["init", "--data", data_arg, "--shards", "2"]);
    assert!(init.contains("admin token (shown once"), "{init}");

    // Private keys are readable by their owner only; the directory too.
    let keys = data.join("keys");
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&keys).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "secret") {
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                path.display()
            );
        }
    }
    let listed = ok(&["keys", "list", "--data", data_arg]);
    assert_eq!(
        listed.lines().filter(|l| l.contains("\tactive\t")).count(),
        2,
        "{listed}"
    );
    assert!(!listed.contains("seed"), "no secret in the listing");

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let old = sign_with_active_key(&data, now);
    let trust_path = dir.path().join("trust.json");
    ok(&[
        "keys",
        "export",
        "--data",
        data_arg,
        "--out",
        trust_path.to_str().unwrap(),
    ]);
    let verdict = ok(&["verify", "--trust", trust_path.to_str().unwrap(), &old]);
    assert!(
        verdict.starts_with("VALID partial certificate (yellow)"),
        "{verdict}"
    );

    // The same certificate as a QR image.
    let png = dir.path().join("cert.png");
    std::fs::write(&png, certify::qr::to_png(&old, 4).unwrap()).unwrap();
    let verdict = ok(&[
        "verify",
        "--trust",
        trust_path.to_str().unwrap(),
        "--image",
        png.to_str().unwrap(),
    ]);
    assert!(verdict.contains("Nguyễn Văn An"), "{verdict}");

    // A tampered text is refused with a non-zero exit and a reason.
    let mut tampered = old.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let refused = vaxcamp(&[
        "verify",
        "--trust",
        trust_path.to_str().unwrap(),
        std::str::from_utf8(&tampered).unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("INVALID"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Rotation: the old key retires, its private part is deleted, old certificates still verify
    // under the new trust list, and new ones are signed with the new key.
    let rotated = ok(&[
        "keys",
        "rotate",
        "--data",
        data_arg,
        "--purpose",
        "certificate",
    ]);
    assert!(rotated.starts_with("new certificate key"), "{rotated}");
    ok(&[
        "keys",
        "export",
        "--data",
        data_arg,
        "--out",
        trust_path.to_str().unwrap(),
    ]);
    let listed = ok(&["keys", "list", "--data", data_arg]);
    assert_eq!(
        listed.lines().filter(|l| l.contains("\tretired\t")).count(),
        1,
        "{listed}"
    );
    let secrets = std::fs::read_dir(&keys)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "secret")
        })
        .count();
    assert_eq!(
        secrets, 2,
        "one active key per purpose keeps its private part"
    );
    let verdict = ok(&["verify", "--trust", trust_path.to_str().unwrap(), &old]);
    assert!(
        verdict.starts_with("VALID"),
        "a certificate issued before the rotation stays valid: {verdict}"
    );
    let new = sign_with_active_key(&data, time::OffsetDateTime::now_utc().unix_timestamp());
    let verdict = ok(&["verify", "--trust", trust_path.to_str().unwrap(), &new]);
    assert!(verdict.starts_with("VALID"), "{verdict}");
}

#[test]
fn set_up_commands_refuse_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let missing = vaxcamp(&["site", "list", "--data", data_arg]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("vaxcamp init"),
        "says how to fix it"
    );
    ok(&["init", "--data", data_arg]);
    let bad_lot = vaxcamp(&[
        "lot",
        "add",
        "--data",
        data_arg,
        "--site",
        "nowhere",
        "--product",
        "COMIRNATY",
        "--lot",
        "L1",
        "--expires",
        "2099-01-01",
        "--doses",
        "10",
    ]);
    assert!(!bad_lot.status.success());
    assert!(
        String::from_utf8_lossy(&bad_lot.stderr).contains("no site nowhere"),
        "{}",
        String::from_utf8_lossy(&bad_lot.stderr)
    );
    let bad_date = vaxcamp(&[
        "lot",
        "add",
        "--data",
        data_arg,
        "--site",
        "x",
        "--product",
        "COMIRNATY",
        "--lot",
        "L1",
        "--expires",
        "31/12/2099",
        "--doses",
        "10",
    ]);
    assert!(String::from_utf8_lossy(&bad_date.stderr).contains("YYYY-MM-DD"));
    let site_token = vaxcamp(&[
        "token", "add", "--data", data_arg, "--role", "site", "--label", "x",
    ]);
    assert!(String::from_utf8_lossy(&site_token.stderr).contains("vaxcamp site add"));
}

#[test]
fn import_areas_replaces_the_names_and_refuses_a_bad_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    ok(&["init", "--data", data_arg]);
    let good = dir.path().join("areas.csv");
    std::fs::write(
        &good,
        "province,district,name\n01,,Hà Nội\n01,001,Ba Đình\n79,,TP. Hồ Chí Minh\n",
    )
    .unwrap();
    let said = ok(&[
        "import",
        "areas",
        "--data",
        data_arg,
        good.to_str().unwrap(),
    ]);
    assert!(said.starts_with("3 area names imported"), "{said}");

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "province,district,name\n48,,Đà Nẵng\n48,4 90,Liên Chiểu\n",
    )
    .unwrap();
    let refused = vaxcamp(&["import", "areas", "--data", data_arg, bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("line 3: district"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");

    // The names in the store are still the good file's.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = runtime.block_on(async {
        let store = store::EmbeddedStore::open(&data, &store::EmbeddedOptions::default()).unwrap();
        use store::Store;
        store.setting(ingest::areas::SETTING).await.unwrap()
    });
    let names = ingest::areas::AreaNames::from_setting(&stored.unwrap()).unwrap();
    assert_eq!(names.len(), 3);
}
