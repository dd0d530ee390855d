//! Names of provinces and districts, for people to read.
//!
//! Areas are identified by the national registry's codes everywhere in vaxcamp (registrations,
//! sites, analytics, plans); names are for display only: the console's area tables and
//! breadcrumbs. They come from a CSV, such as the General Statistics Office's list, imported with
//! `vaxcamp import areas FILE`:
//!
//! ```text
//! province,district,name
//! 01,,Hà Nội
//! 01,001,Ba Đình
//! 79,760,Quận 1
//! ```
//!
//! A row with an empty `district` names the province. An import replaces the whole list, and a
//! file with any bad row is refused whole (with every bad line listed): a reference list is
//! better fixed than half imported. The list is kept in the store as one setting
//! ([`SETTING`], JSON), so every server of the campaign reads the same names at start-up.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use store::{AreaCode, District, Site};

use crate::import::RowError;

/// The store setting that holds the names.
pub const SETTING: &str = "area_names";
/// Areas a list may name: Viet Nam has had some 63 provinces and 700 districts; room to spare.
pub const MAX_AREAS: usize = 20_000;
/// Characters in one name.
pub const MAX_NAME_CHARS: usize = 100;

/// Province and district names by code: `01` for a province, `01/001` for a district (district
/// codes are unique only within their province).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AreaNames(BTreeMap<String, String>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    province: String,
    #[serde(default)]
    district: Option<String>,
    name: String,
}

impl AreaNames {
    /// Reads a CSV with the header `province,district,name`.
    ///
    /// # Errors
    /// Every bad row, with its line number (header = line 1), when there is one; nothing is
    /// taken from a file with errors.
    pub fn from_csv(reader: impl Read) -> Result<Self, Vec<RowError>> {
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        let mut names = BTreeMap::new();
        let mut errors = Vec::new();
        for (index, row) in csv.deserialize::<Row>().enumerate() {
            let line = index as u64 + 2;
            let parsed = row
                .map_err(|e| format!("not a row of province,district,name: {e}"))
                .and_then(parse_row);
            match parsed {
                Ok((key, name)) => {
                    if names.insert(key.clone(), name).is_some() {
                        errors.push(RowError {
                            line,
                            message: format!("area {key} is named twice"),
                        });
                    }
                }
                Err(message) => errors.push(RowError { line, message }),
            }
            if names.len() > MAX_AREAS {
                errors.push(RowError {
                    line,
                    message: format!("more than {MAX_AREAS} areas; is this the right file?"),
                });
                break;
            }
        }
        if errors.is_empty() {
            Ok(Self(names))
        } else {
            Err(errors)
        }
    }

    /// A list as the admin API takes it and `GET /v1/areas` gives it: `{"01": "Hà Nội",
    /// "01/001": "Ba Đình"}`.
    ///
    /// # Errors
    /// What is wrong with each bad entry; nothing is taken from a list with errors.
    pub fn from_map(map: BTreeMap<String, String>) -> Result<Self, Vec<String>> {
        if map.len() > MAX_AREAS {
            return Err(vec![format!(
                "{} areas; at most {MAX_AREAS} can be named",
                map.len()
            )]);
        }
        let mut names = BTreeMap::new();
        let mut errors = Vec::new();
        for (key, name) in map {
            let (province, district) = match key.split_once('/') {
                Some((_, district)) if district.trim().is_empty() => {
                    errors.push(format!("{key:?}: no district code after the /"));
                    continue;
                }
                Some((province, district)) => (province.trim(), Some(district.trim())),
                None => (key.trim(), None),
            };
            match parse_area(province, district, name.trim().to_owned()) {
                Ok((key, name)) => {
                    if names.insert(key.clone(), name).is_some() {
                        errors.push(format!("area {key} is named twice"));
                    }
                }
                Err(e) => errors.push(format!("{key:?}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(Self(names))
        } else {
            Err(errors)
        }
    }

    /// The whole list, by key.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The list as stored in [`SETTING`].
    pub fn to_setting(&self) -> String {
        // A map of strings always serializes.
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// The list from [`SETTING`].
    ///
    /// # Errors
    /// When the setting is not what [`to_setting`](Self::to_setting) writes.
    pub fn from_setting(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("the stored area names are unreadable: {e}"))
    }

    /// Names a province (set-up code that knows its areas, like the demo's).
    pub fn name_province(&mut self, province: &AreaCode, name: &str) {
        self.0.insert(province.to_string(), name.to_owned());
    }

    /// Names a district.
    pub fn name_district(&mut self, district: &District, name: &str) {
        self.0.insert(district.to_string(), name.to_owned());
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn province(&self, province: &AreaCode) -> Option<&str> {
        self.0.get(province.as_str()).map(String::as_str)
    }

    pub fn district(&self, district: &District) -> Option<&str> {
        self.0.get(&district.to_string()).map(String::as_str)
    }

    /// The names of the provinces and districts `sites` stand in: what the console needs.
    pub fn of_sites<'a>(
        &self,
        sites: impl IntoIterator<Item = &'a Site>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.0.is_empty() {
            return out;
        }
        for site in sites {
            if let Some(name) = self.province(&site.area.province) {
                out.insert(site.area.province.to_string(), name.to_owned());
            }
            let district = site.area.district_key();
            if let Some(name) = self.district(&district) {
                out.insert(district.to_string(), name.to_owned());
            }
        }
        out
    }
}

/// One row's key (`01` or `01/001`) and name.
fn parse_row(row: Row) -> Result<(String, String), String> {
    parse_area(&row.province, row.district.as_deref(), row.name)
}

/// An area's key (`01` or `01/001`) and name, checked.
fn parse_area(
    province: &str,
    district: Option<&str>,
    name: String,
) -> Result<(String, String), String> {
    let province = AreaCode::new(province).map_err(|e| format!("province: {e}"))?;
    let key = match district.filter(|d| !d.is_empty()) {
        None => province.to_string(),
        Some(district) => District {
            province,
            district: AreaCode::new(district).map_err(|e| format!("district: {e}"))?,
        }
        .to_string(),
    };
    if name.is_empty() {
        return Err(format!("area {key} has an empty name"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "the name of area {key} is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "the name of area {key} contains a control character"
        ));
    }
    Ok((key, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(province: &str, district: &str) -> Site {
        Site {
            site_id: store::SiteId::new(format!("s{province}{district}")).expect("valid"),
            name: "Trạm y tế".into(),
            area: store::Area {
                province: AreaCode::new(province).expect("valid"),
                district: AreaCode::new(district).expect("valid"),
                commune: None,
            },
            daily_capacity: 100,
        }
    }

    #[test]
    fn a_list_names_provinces_and_their_districts() {
        let csv = "province,district,name\n01,,Hà Nội\n01,001, Ba Đình \n79,760,Quận 1\n79,,TP. Hồ Chí Minh\n";
        let names = AreaNames::from_csv(csv.as_bytes()).expect("valid");
        assert_eq!(names.len(), 4);
        assert_eq!(
            names.province(&AreaCode::new("01").expect("code")),
            Some("Hà Nội")
        );
        let district = site("01", "001").area.district_key();
        assert_eq!(names.district(&district), Some("Ba Đình"), "trimmed");
        // What the console gets: only the areas with sites.
        let shown = names.of_sites(&[site("79", "760"), site("48", "490")]);
        assert_eq!(
            shown.into_iter().collect::<Vec<_>>(),
            vec![
                ("79".to_owned(), "TP. Hồ Chí Minh".to_owned()),
                ("79/760".to_owned(), "Quận 1".to_owned()),
            ]
        );
        let stored = AreaNames::from_setting(&names.to_setting()).expect("round trip");
        assert_eq!(stored, names);
    }

    #[test]
    fn the_api_list_is_checked_like_the_file() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let names =
            AreaNames::from_map(map(&[("01", " Hà Nội "), ("01/001", "Ba Đình")])).expect("valid");
        assert_eq!(
            names.as_map(),
            &map(&[("01", "Hà Nội"), ("01/001", "Ba Đình")])
        );
        let errors = AreaNames::from_map(map(&[
            ("01", "Hà Nội"),
            (" 01", "Hà Nội again"),
            ("01/0 01", "Space"),
            ("79/", "No district"),
            ("48", ""),
        ]))
        .expect_err("bad entries");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("no district code")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("named twice")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("\"01/0 01\": district")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("empty name")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_file_with_bad_rows_is_refused_whole_with_each_line_said() {
        let csv = "province,district,name\n01,,Hà Nội\n01,,Hà Nội again\n,001,No province\n79,760,\n01,0 01,Space\n48,490,Liên Chiểu,extra\n";
        let errors = AreaNames::from_csv(csv.as_bytes()).expect_err("bad rows");
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7], "{errors:?}");
        assert!(errors[0].message.contains("named twice"), "{errors:?}");
        assert!(errors[2].message.contains("empty name"), "{errors:?}");
        assert!(
            AreaNames::from_csv("name\nHà Nội\n".as_bytes()).is_err(),
            "no codes"
        );
        assert!(AreaNames::from_setting("[1, 2]").is_err());
    }
}
