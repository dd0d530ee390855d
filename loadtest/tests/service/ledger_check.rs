//! `check_ledger` against a fake `/v1/doses:lookup`: stored once, lost, duplicated, misattributed.

use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;
use vaxcamp_loadtest::{CheckLedgerArgs, check_ledger};

use crate::fake::{ADMIN_TOKEN, Fake, StoredDose, app};
use crate::serve;

fn store(fake: &Fake, id: Uuid, person: &str, copies: u64) {
    let dose = StoredDose {
        person_code: person.to_owned(),
        dose_number: 1,
        administered_at: OffsetDateTime::now_utc(),
        copies,
    };
    fake.doses
        .lock()
        .expect("lock")
        .insert(id, (json!({}), dose));
}

fn args(server: &str, ledger: &std::path::Path, token: &str, chunk: usize) -> CheckLedgerArgs {
    CheckLedgerArgs {
        ledger: ledger.to_owned(),
        campaign: None,
        server: Some(server.to_owned()),
        admin_token: Some(token.to_owned()),
        chunk,
        json: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_missing_duplicated_and_misattributed_doses_in_chunks() {
    let fake = Arc::new(Fake::default());
    let ids: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate().take(7) {
        store(&fake, *id, &format!("P{i:09}"), 1);
    }
    store(&fake, ids[7], "P000000007", 2); // stored twice
    store(&fake, ids[8], "P999999999", 1); // stored under someone else
    // ids[9] was acknowledged but never stored: lost.
    let server = serve(app(Arc::clone(&fake))).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.csv");
    let mut text = String::from("# acknowledged doses\n");
    for (i, id) in ids.iter().enumerate() {
        text.push_str(&format!("{id},P{i:09}\n"));
    }
    // A dose acknowledged twice (a retry answered 200) is one dose.
    text.push_str(&format!("{},P000000000\n", ids[0]));
    std::fs::write(&path, text).expect("write ledger");

    // The library function; the CLI's entry point, check_ledger, is exercised below.
    let check = vaxcamp_loadtest::ledger::check(&server, ADMIN_TOKEN, &path, 3)
        .await
        .expect("check");
    assert_eq!((check.entries, check.unique), (11, 10));
    assert_eq!(check.stored_once, 7);
    assert_eq!(check.missing, vec![ids[9]]);
    assert_eq!(check.duplicated.len(), 1);
    assert_eq!(
        (check.duplicated[0].dose_id, check.duplicated[0].copies),
        (ids[7], 2)
    );
    assert_eq!(check.misattributed.len(), 1);
    assert_eq!(check.misattributed[0].stored_person, "P999999999");
    assert!(!check.is_ok());
    assert!(check.to_string().contains("FAILED"));
    // Ten distinct ids in chunks of three: four lookups, none larger than asked.
    assert_eq!(*fake.lookups.lock().expect("lock"), vec![3, 3, 3, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_ledger_passes_and_a_refused_lookup_is_an_error_not_a_verdict() {
    let fake = Arc::new(Fake::default());
    let id = Uuid::new_v4();
    store(&fake, id, "P000000001", 1);
    let server = serve(app(Arc::clone(&fake))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.csv");
    std::fs::write(&path, format!("{id},P000000001\n")).expect("write ledger");

    let check = check_ledger(&args(&server, &path, ADMIN_TOKEN, 10_000))
        .await
        .expect("check");
    assert!(check.is_ok(), "{check}");

    let error = check_ledger(&args(&server, &path, "wrong-token", 10_000))
        .await
        .expect_err("401 is an error");
    assert!(error.to_string().contains("unauthorized"), "{error}");
}
