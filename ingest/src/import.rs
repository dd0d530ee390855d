//! Bulk import of pre-registrations from CSV (a province's list, a portal's export).
//!
//! ```text
//! person_code,name,birth_date,phone,province,district,commune,priority_group
//! 001090012345,Nguyễn Văn An,1980-05-01,0901234567,01,001,00001,5
//! ```
//!
//! Rows are checked one by one; a bad row is reported with its line number and skipped, the
//! rest are imported. Writes go to the store in chunks, each chunk one durable write per shard.

use std::io::Read;

use serde::Deserialize;
use store::{Area, AreaCode, PersonCode, Registration, Store};
use time::Date;

/// Rows written per store call.
pub const CHUNK: usize = 20_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    person_code: String,
    name: String,
    birth_date: String,
    #[serde(default)]
    phone: Option<String>,
    province: String,
    district: String,
    #[serde(default)]
    commune: Option<String>,
    #[serde(default)]
    priority_group: Option<u8>,
}

/// A row that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub created: u64,
    pub already_present: u64,
    /// The first bad rows (at most 100 kept), and how many there were in all.
    pub errors: Vec<RowError>,
    pub error_count: u64,
}

fn parse_row(
    row: Row,
    registered_at: time::OffsetDateTime,
    today: Date,
) -> Result<Registration, String> {
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    let birth_date = Date::parse(row.birth_date.trim(), &date_format)
        .map_err(|_| "birth_date: use YYYY-MM-DD".to_owned())?;
    let field = |e: store::InvalidField| e.to_string();
    let registration = Registration {
        person_code: PersonCode::new(row.person_code.trim()).map_err(field)?,
        name: row.name.trim().to_owned(),
        birth_date,
        phone: row
            .phone
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty()),
        area: Area {
            province: AreaCode::new(row.province.trim()).map_err(field)?,
            district: AreaCode::new(row.district.trim()).map_err(field)?,
            commune: row
                .commune
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .map(AreaCode::new)
                .transpose()
                .map_err(field)?,
        },
        priority_group: row.priority_group.unwrap_or(10),
        registered_at,
    };
    registration.validate(today).map_err(field)?;
    Ok(registration)
}

/// Imports every valid row of `csv` into `store`. `progress` is called after each chunk with the
/// rows read so far.
///
/// # Errors
/// Store failures (a chunk that failed is not acknowledged; re-running the import is safe,
/// because registration is insert-if-absent). Bad rows are reported, not errors.
pub async fn import_registrations(
    store: &dyn Store,
    csv: impl Read,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, store::StoreError> {
    let registered_at = store::embedded::now_seconds();
    let today = registered_at.date();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(csv);
    let mut report = ImportReport::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    for (index, row) in reader.deserialize::<Row>().enumerate() {
        report.rows += 1;
        // Line 1 is the header.
        let line = index as u64 + 2;
        match row
            .map_err(|e| e.to_string())
            .and_then(|row| parse_row(row, registered_at, today))
        {
            Ok(registration) => chunk.push(registration),
            Err(message) => {
                report.error_count += 1;
                if report.errors.len() < 100 {
                    report.errors.push(RowError { line, message });
                }
            }
        }
        if chunk.len() == CHUNK {
            let counts = store.import_registrations(&chunk).await?;
            report.created += counts.created;
            report.already_present += counts.already_present;
            chunk.clear();
            progress(report.rows);
        }
    }
    if !chunk.is_empty() {
        let counts = store.import_registrations(&chunk).await?;
        report.created += counts.created;
        report.already_present += counts.already_present;
    }
    progress(report.rows);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use store::{EmbeddedOptions, EmbeddedStore};

    #[tokio::test]
    async fn good_rows_are_imported_and_bad_rows_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::create(
                dir.path(),
                &EmbeddedOptions {
                    shards: 2,
                    ..Default::default()
                },
            )
            .expect("store"),
        );
        let csv = "person_code,name,birth_date,phone,province,district,commune,priority_group\n\
                   P1,Nguyễn Văn An,1980-05-01,0901234567,01,001,00001,5\n\
                   P2,Trần Thị Bình,1990-13-01,,01,001,,\n\
                   P 3,Lê Văn Cường,1985-01-01,,01,001,,\n\
                   P4,Phạm Thị Dung,1975-07-15,,79,760,,2\n\
                   P1,Nguyễn Văn An,1980-05-01,0901234567,01,001,00001,5\n";
        let mut calls = 0;
        let report = import_registrations(store.as_ref(), csv.as_bytes(), |_| calls += 1)
            .await
            .expect("import");
        assert_eq!(
            (
                report.rows,
                report.created,
                report.already_present,
                report.error_count
            ),
            (5, 2, 1, 2)
        );
        assert_eq!(report.errors[0].line, 3);
        assert!(
            report.errors[0].message.contains("birth_date"),
            "{:?}",
            report.errors
        );
        assert_eq!(report.errors[1].line, 4);
        assert!(calls >= 1);
        let p4 = store
            .person(&PersonCode::new("P4").expect("valid"))
            .await
            .expect("read")
            .expect("present");
        assert_eq!((p4.priority_group, p4.area.commune), (2, None));
    }
}
