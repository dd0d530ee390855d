//! The checks every [`Store`] backend must pass.
//!
//! Each backend's test calls [`run_all`] with a factory that makes a fresh, empty store (its own
//! temporary directory, its own keyspace). A failing check panics with the check's name, so the
//! test output says which promise the backend broke.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use time::macros::{date, datetime};

use crate::model::*;
use crate::{Registered, Store, shard_of};

/// Runs every check, each against a fresh store from `make`.
///
/// # Panics
/// When a check fails; the message names the check.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    catalogue_round_trips(make().await).await;
    registration_is_insert_if_absent(make().await).await;
    bulk_import_counts(make().await).await;
    people_are_paged_in_code_order(make().await).await;
    doses_are_found_by_person_and_by_id(make().await).await;
    committing_a_dose_twice_counts_once(make().await).await;
    one_dose_id_for_two_people_is_a_conflict(make().await).await;
    concurrent_commits_on_all_shards(make().await).await;
    audit_log_is_newest_first(make().await).await;
    corrections_replace_records_and_move_stock(make().await).await;
    revocations_round_trip(make().await).await;
}

/// A real ScyllaDB cluster for the ScyllaDB backend's tests (the store's and the server's), from
/// the variables `vaxcamp` itself reads: `VAXCAMP_SCYLLA_NODES` (comma-separated `host:port`),
/// `_RF` (default 3), `_DC`, `_USER`, `_PASSWORD`, `_TLS`, `_TLS_CA_FILE`, laid over `base`.
/// `None` when `VAXCAMP_SCYLLA_NODES` is unset: the tests then use the CQL test node.
#[cfg(feature = "scylla")]
pub fn scylla_cluster_from_env(base: crate::ScyllaConfig) -> Option<crate::ScyllaConfig> {
    let nodes = std::env::var("VAXCAMP_SCYLLA_NODES").ok()?;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(crate::ScyllaConfig {
        nodes: nodes.split(',').map(|n| n.trim().to_owned()).collect(),
        datacenter: var("VAXCAMP_SCYLLA_DC"),
        replication_factor: var("VAXCAMP_SCYLLA_RF")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
        username: var("VAXCAMP_SCYLLA_USER"),
        password: var("VAXCAMP_SCYLLA_PASSWORD"),
        tls: var("VAXCAMP_SCYLLA_TLS").is_some_and(|v| {
            // As clap reads `vaxcamp`'s flag: anything but a "falsey" word is on.
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off" | "n" | "f"
            )
        }),
        tls_ca_file: var("VAXCAMP_SCYLLA_TLS_CA_FILE").map(Into::into),
        ..base
    })
}

fn area(province: &str, district: &str) -> Area {
    Area {
        province: AreaCode::new(province).expect("valid"),
        district: AreaCode::new(district).expect("valid"),
        commune: None,
    }
}

/// A registration for tests: person `P{n:09}` in Ha Noi.
pub fn sample_registration(n: u32) -> Registration {
    Registration {
        person_code: PersonCode::new(format!("P{n:09}")).expect("valid"),
        name: format!("Nguyễn Văn {n}"),
        birth_date: date!(1980 - 05 - 01),
        phone: Some("0901234567".into()),
        area: area("01", "001"),
        priority_group: 5,
        registered_at: datetime!(2026-11-01 08:00 UTC),
    }
}

/// A dose for tests, given at `hn-01` from lot `FK5618`.
pub fn sample_dose(person: &PersonCode, dose_number: u8) -> Dose {
    Dose {
        dose_id: DoseId(uuid::Uuid::new_v4()),
        person_code: person.clone(),
        product: ProductCode::new("COMIRNATY").expect("valid"),
        lot_number: LotNumber::new("FK5618").expect("valid"),
        dose_number,
        site_id: SiteId::new("hn-01").expect("valid"),
        vaccinator: "nurse-7".into(),
        administered_at: datetime!(2026-11-20 09:30 UTC),
        recorded_at: datetime!(2026-11-20 09:30:01 UTC),
    }
}

async fn catalogue_round_trips(store: Arc<dyn Store>) {
    let site = Site {
        site_id: SiteId::new("hn-01").expect("valid"),
        name: "Bach Mai".into(),
        area: area("01", "001"),
        daily_capacity: 2000,
    };
    store.put_site(&site).await.expect("put_site");
    let mut renamed = site.clone();
    renamed.name = "Bạch Mai Hospital".into();
    store.put_site(&renamed).await.expect("put_site again");
    assert_eq!(
        store.sites().await.expect("sites"),
        vec![renamed],
        "catalogue: a site is replaced, not duplicated"
    );

    for product in builtin_products() {
        store.put_product(&product).await.expect("put_product");
    }
    assert_eq!(
        store.products().await.expect("products").len(),
        builtin_products().len(),
        "catalogue: products"
    );

    let lot = Lot {
        lot_number: LotNumber::new("FK5618").expect("valid"),
        site_id: site.site_id.clone(),
        product: ProductCode::new("COMIRNATY").expect("valid"),
        expires: date!(2027 - 06 - 30),
        quantity: 5000,
    };
    store.put_lot(&lot).await.expect("put_lot");
    let mut elsewhere = lot.clone();
    elsewhere.site_id = SiteId::new("hcm-01").expect("valid");
    store
        .put_lot(&elsewhere)
        .await
        .expect("put_lot at another site");
    assert_eq!(
        store.lots().await.expect("lots").len(),
        2,
        "catalogue: one lot number at two sites is two lots"
    );

    let credential = Credential {
        token_sha256: [7; 32],
        role: Role::Site,
        site_id: Some(site.site_id.clone()),
        label: "site hn-01".into(),
        created_at: datetime!(2026-11-01 08:00 UTC),
        revoked: false,
    };
    store
        .put_credential(&credential)
        .await
        .expect("put_credential");
    assert_eq!(
        store.credentials().await.expect("credentials"),
        vec![credential],
        "catalogue: credentials"
    );

    assert_eq!(
        store.setting("issuer").await.expect("setting"),
        None,
        "settings: absent"
    );
    store
        .put_setting("issuer", "VN-MOH")
        .await
        .expect("put_setting");
    assert_eq!(
        store.setting("issuer").await.expect("setting").as_deref(),
        Some("VN-MOH"),
        "settings: round trip"
    );
}

async fn registration_is_insert_if_absent(store: Arc<dyn Store>) {
    let first = sample_registration(1);
    assert_eq!(
        store.register(&first).await.expect("register"),
        Registered::Created(first.clone()),
        "register: new"
    );
    let mut different = first.clone();
    different.name = "Somebody Else".into();
    assert_eq!(
        store.register(&different).await.expect("register again"),
        Registered::Existing(first.clone()),
        "register: an existing person is returned unchanged"
    );
    assert_eq!(
        store.person(&first.person_code).await.expect("person"),
        Some(first),
        "register: the first one stays"
    );
    assert_eq!(
        store.totals().await.expect("totals").registrations,
        1,
        "register: counted once"
    );
    let unknown = PersonCode::new("NOBODY").expect("valid");
    assert_eq!(
        store.person(&unknown).await.expect("person"),
        None,
        "person: unknown code"
    );
}

async fn bulk_import_counts(store: Arc<dyn Store>) {
    let batch: Vec<Registration> = (0..500).map(sample_registration).collect();
    let counts = store.import_registrations(&batch).await.expect("import");
    assert_eq!(
        (counts.created, counts.already_present),
        (500, 0),
        "import: all new"
    );
    let again: Vec<Registration> = (250..750).map(sample_registration).collect();
    let counts = store
        .import_registrations(&again)
        .await
        .expect("import again");
    assert_eq!(
        (counts.created, counts.already_present),
        (250, 250),
        "import: overlap counted"
    );
    let totals = store.totals().await.expect("totals");
    assert_eq!(totals.registrations, 750, "import: totals");
    assert_eq!(
        totals
            .registrations_by_district
            .get(&area("01", "001").district_key())
            .copied(),
        Some(750),
        "import: registrations counted in their district"
    );
    let mut duplicate_in_batch = vec![sample_registration(900), sample_registration(900)];
    duplicate_in_batch[1].name = "Other".into();
    let counts = store
        .import_registrations(&duplicate_in_batch)
        .await
        .expect("import dup");
    assert_eq!(
        (counts.created, counts.already_present),
        (1, 1),
        "import: a code twice in one batch is one person"
    );
    let stored = store
        .person(&duplicate_in_batch[0].person_code)
        .await
        .expect("person")
        .expect("present");
    assert_eq!(
        stored.name, duplicate_in_batch[0].name,
        "import: the first of a duplicated code wins"
    );
}

async fn people_are_paged_in_code_order(store: Arc<dyn Store>) {
    let batch: Vec<Registration> = (0..100).map(sample_registration).collect();
    store.import_registrations(&batch).await.expect("import");
    let mut seen = Vec::new();
    let mut after: Option<PersonCode> = None;
    loop {
        let page = store.people(after.as_ref(), 30).await.expect("people");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 30, "people: page size respected");
        after = page.last().map(|r| r.person_code.clone());
        seen.extend(page.into_iter().map(|r| r.person_code));
    }
    let expected: Vec<PersonCode> = batch.iter().map(|r| r.person_code.clone()).collect();
    assert_eq!(
        seen, expected,
        "people: every person once, in code order, across shards"
    );
}

async fn doses_are_found_by_person_and_by_id(store: Arc<dyn Store>) {
    let person = sample_registration(1).person_code;
    let other = sample_registration(2).person_code;
    let first = sample_dose(&person, 1);
    let mut second = sample_dose(&person, 2);
    second.administered_at = datetime!(2026-12-12 09:30 UTC);
    let theirs = sample_dose(&other, 1);
    let shards = store.shard_count();
    // Commit out of order: doses_of must order by dose number.
    store
        .commit_doses(shard_of(&person, shards), &[second.clone()])
        .await
        .expect("commit");
    store
        .commit_doses(shard_of(&person, shards), std::slice::from_ref(&first))
        .await
        .expect("commit");
    store
        .commit_doses(shard_of(&other, shards), std::slice::from_ref(&theirs))
        .await
        .expect("commit");
    assert_eq!(
        store.doses_of(&person).await.expect("doses_of"),
        vec![first.clone(), second.clone()],
        "doses_of: ordered"
    );
    assert_eq!(
        store.doses_of(&other).await.expect("doses_of"),
        vec![theirs.clone()],
        "doses_of: only that person's"
    );

    let missing = DoseId(uuid::Uuid::new_v4());
    let found = store
        .find_doses(&[first.dose_id, missing, theirs.dose_id])
        .await
        .expect("find_doses");
    assert_eq!(
        found.len(),
        2,
        "find_doses: the two stored ids, not the missing one"
    );
    assert!(
        found.contains(&first) && found.contains(&theirs),
        "find_doses: the stored records"
    );

    let totals = store.totals().await.expect("totals");
    assert_eq!(totals.doses, 3, "totals: doses");
    assert_eq!(
        totals.lot_usage.get(&first.lot_key()).copied(),
        Some(3),
        "totals: lot usage"
    );
}

async fn committing_a_dose_twice_counts_once(store: Arc<dyn Store>) {
    let person = sample_registration(3).person_code;
    let dose = sample_dose(&person, 1);
    let shard = shard_of(&person, store.shard_count());
    store
        .commit_doses(shard, &[dose.clone(), dose.clone()])
        .await
        .expect("commit with a repeat");
    store
        .commit_doses(shard, std::slice::from_ref(&dose))
        .await
        .expect("commit again");
    assert_eq!(
        store.find_doses(&[dose.dose_id]).await.expect("find").len(),
        1,
        "retry: one copy"
    );
    let totals = store.totals().await.expect("totals");
    assert_eq!(totals.doses, 1, "retry: counted once");
    assert_eq!(
        totals.lot_usage.get(&dose.lot_key()).copied(),
        Some(1),
        "retry: stock used once"
    );
}

/// The same dose id sent for two people, committed one after the other: the first is
/// recorded; the second is not written, whatever shard it lands in, and is reported as a
/// conflict, while the rest of its write goes through. (The shard writer normally catches this
/// before committing; this is the store's own guarantee underneath.)
async fn one_dose_id_for_two_people_is_a_conflict(store: Arc<dyn Store>) {
    let shards = store.shard_count();
    let first_person = sample_registration(20).person_code;
    let first_shard = shard_of(&first_person, shards);
    // Another person in another shard when there is one, and a third in the second's shard.
    let people: Vec<PersonCode> = (21..200)
        .map(|n| sample_registration(n).person_code)
        .collect();
    let second_person = people
        .iter()
        .find(|p| shards == 1 || shard_of(p, shards) != first_shard)
        .cloned()
        .expect("a person in another shard");
    let second_shard = shard_of(&second_person, shards);
    let bystander = people
        .iter()
        .find(|p| **p != second_person && shard_of(p, shards) == second_shard)
        .cloned()
        .expect("a third person");
    let first = sample_dose(&first_person, 1);
    let mut copied = sample_dose(&second_person, 1);
    copied.dose_id = first.dose_id;
    let other = sample_dose(&bystander, 1);
    store
        .commit_doses(first_shard, std::slice::from_ref(&first))
        .await
        .expect("commit the first");
    for attempt in ["the second", "the second, retried"] {
        let doses = [copied.clone(), other.clone()];
        match store.commit_doses(second_shard, &doses).await {
            Err(crate::StoreError::DoseConflict {
                dose_id,
                recorded_for,
                sent_for,
            }) => {
                assert_eq!(dose_id, first.dose_id.to_string(), "conflict: {attempt}");
                assert_eq!(recorded_for, first_person.as_str(), "conflict: {attempt}");
                assert_eq!(sent_for, second_person.as_str(), "conflict: {attempt}");
            }
            other => panic!("conflict: {attempt} answered {other:?}"),
        }
    }
    assert_eq!(
        store.find_doses(&[first.dose_id]).await.expect("find"),
        vec![first.clone()],
        "conflict: the first record stays, alone"
    );
    assert_eq!(
        store.doses_of(&second_person).await.expect("doses_of"),
        vec![],
        "conflict: nothing written for the second person"
    );
    assert_eq!(
        store.doses_of(&bystander).await.expect("doses_of"),
        vec![other.clone()],
        "conflict: the rest of the write went through"
    );
    let totals = store.totals().await.expect("totals");
    assert_eq!(totals.doses, 2, "conflict: counted once");
    assert_eq!(
        totals.lot_usage.get(&first.lot_key()).copied(),
        Some(2),
        "conflict: stock used once"
    );
}

async fn concurrent_commits_on_all_shards(store: Arc<dyn Store>) {
    let shards = store.shard_count();
    let mut by_shard: HashMap<usize, Vec<Dose>> = HashMap::new();
    for n in 0..400 {
        let person = sample_registration(n).person_code;
        by_shard
            .entry(shard_of(&person, shards))
            .or_default()
            .push(sample_dose(&person, 1));
    }
    let mut tasks = Vec::new();
    for (shard, doses) in by_shard {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in doses.chunks(17) {
                store.commit_doses(shard, chunk).await.expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    assert_eq!(
        store.totals().await.expect("totals").doses,
        400,
        "concurrent shards: all counted"
    );
}

async fn audit_log_is_newest_first(store: Arc<dyn Store>) {
    for n in 0..5 {
        let record = AuditRecord {
            at: datetime!(2026-11-20 09:00 UTC) + time::Duration::minutes(n),
            actor: "admin".into(),
            action: "correct_person".into(),
            subject: format!("P{n}"),
            reason: "typo in name".into(),
            details: serde_json::json!({"n": n}),
        };
        store.append_audit(&record).await.expect("append_audit");
    }
    let log = store.audit_log(3).await.expect("audit_log");
    let subjects: Vec<&str> = log.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["P4", "P3", "P2"], "audit: newest first, limited");
}

async fn corrections_replace_records_and_move_stock(store: Arc<dyn Store>) {
    let mut person = sample_registration(7);
    store.register(&person).await.expect("register");
    person.name = "Nguyễn Văn Bảy".into();
    store
        .correct_registration(&person)
        .await
        .expect("correct_registration");
    assert_eq!(
        store
            .person(&person.person_code)
            .await
            .expect("person")
            .map(|p| p.name),
        Some(person.name.clone()),
        "correction: registration replaced"
    );
    let moved_to = area("79", "760");
    person.area = moved_to.clone();
    store
        .correct_registration(&person)
        .await
        .expect("correct_registration area");
    let by_district = store
        .totals()
        .await
        .expect("totals")
        .registrations_by_district;
    assert_eq!(
        (
            by_district
                .get(&area("01", "001").district_key())
                .copied()
                .unwrap_or(0),
            by_district.get(&moved_to.district_key()).copied()
        ),
        (0, Some(1)),
        "correction: a corrected district moves the person's count"
    );
    assert!(
        store
            .correct_registration(&sample_registration(8))
            .await
            .is_err(),
        "correction: an unknown person is refused"
    );

    let dose = sample_dose(&person.person_code, 1);
    let shard = shard_of(&person.person_code, store.shard_count());
    store
        .commit_doses(shard, std::slice::from_ref(&dose))
        .await
        .expect("commit");
    let mut corrected = dose.clone();
    corrected.lot_number = LotNumber::new("AB0001").expect("valid");
    store
        .correct_dose(shard, &corrected)
        .await
        .expect("correct_dose");
    assert_eq!(
        store.doses_of(&person.person_code).await.expect("doses_of"),
        vec![corrected.clone()],
        "correction: dose replaced, not added"
    );
    let totals = store.totals().await.expect("totals");
    assert_eq!(totals.doses, 1, "correction: still one dose");
    assert_eq!(
        totals.lot_usage.get(&dose.lot_key()).copied(),
        Some(0),
        "correction: stock returned to the old lot"
    );
    assert_eq!(
        totals.lot_usage.get(&corrected.lot_key()).copied(),
        Some(1),
        "correction: stock taken from the new lot"
    );
}

async fn revocations_round_trip(store: Arc<dyn Store>) {
    assert!(
        store.revocations().await.expect("revocations").is_empty(),
        "revocations: none at first"
    );
    let revoked = Revocation {
        certificate_id: "URN:UVCI:01:VN:ABC".into(),
        revoked_at: datetime!(2026-11-20 10:00 UTC),
        reason: "corrected name".into(),
    };
    store
        .revoke_certificates(&[revoked.clone(), revoked.clone()])
        .await
        .expect("revoke");
    assert_eq!(
        store.revocations().await.expect("revocations"),
        vec![revoked],
        "revocations: stored once"
    );
}
