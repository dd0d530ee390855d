//! The campaign file: everything the generator needs to act as many vaccination sites at once.
//!
//! Site tokens cannot be read back from the server (it stores only their hashes), so whoever creates a
//! campaign (`vaxcamp demo`, or an operator's script) writes this file, and the generator reads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A campaign as the load generator sees it: where the server is, how to act as each site, and which
/// people are registered.
///
/// Written as JSON by whoever creates the campaign; unknown fields are rejected so that a typo in a
/// hand-edited file is an error rather than a silently ignored setting.
///
/// ```json
/// {"server": "http://127.0.0.1:8080", "admin_token": "adm-...",
///  "sites": [{"site_id": "S001", "token": "site-...",
///             "area": {"province": "01", "district": "001", "commune": "00001"},
///             "lots": [{"lot": "L001", "product": "COMIRNATY", "dose_interval_days": 21}]}],
///  "people": {"first": 0, "count": 1000000, "code_prefix": "P"}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignFile {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080` (plain HTTP; no path).
    pub server: String,
    /// Bearer token of an admin (used for discovery and for the ledger check).
    pub admin_token: String,
    /// The vaccination sites the generator acts as. Each has its own token and lots.
    pub sites: Vec<CampaignSite>,
    /// The registered population the generator draws citizens from.
    pub people: Population,
}

/// One vaccination site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSite {
    /// The server's id for the site.
    pub site_id: String,
    /// The site's bearer token (as issued; the server keeps only a hash).
    pub token: String,
    /// Where the site is. Optional: used only to spread generated registrations over the sites'
    /// provinces and districts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<Area>,
    /// Vaccine lots on hand at the site.
    pub lots: Vec<CampaignLot>,
}

/// A vaccine lot allocated to a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignLot {
    /// The lot id as the server knows it.
    pub lot: String,
    /// Product name, e.g. `COMIRNATY`.
    pub product: String,
    /// Minimum days between doses of this product. Paper-ledger uploads are back-dated by more than
    /// this, so that the citizens in them can legally come back for their next dose during the run.
    pub dose_interval_days: u32,
}

/// The registered population: people with indices `first .. first + count`, whose person codes are
/// `format!("{code_prefix}{index:09}")`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Index of the first person.
    pub first: u64,
    /// Number of people.
    pub count: u64,
    /// Prefix of every person code, e.g. `P`.
    pub code_prefix: String,
}

impl Population {
    /// The person code of the person with this index: the prefix and the index zero-padded to nine
    /// digits (`P000000042`).
    pub fn person_code(&self, index: u64) -> String {
        crate::population::person_code(&self.code_prefix, index)
    }
}

/// An administrative area, with the codes of Vietnam's General Statistics Office: a 2-digit province,
/// a 3-digit district and a 5-digit commune.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    /// Province code, e.g. `01` (Hà Nội).
    pub province: String,
    /// District code, e.g. `001`.
    pub district: String,
    /// Commune code, e.g. `00001`.
    pub commune: String,
}

/// Why a campaign file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The file could not be read or written.
    #[error("campaign file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid campaign JSON.
    #[error("campaign file {path} is not a valid campaign (see loadtest/README.md): {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// The file parsed but cannot drive a workload.
    #[error("campaign is unusable: {0}")]
    Invalid(String),
}

impl CampaignFile {
    /// A campaign with only a server: enough for the `healthz` scenario, which needs no tokens.
    pub fn server_only(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            admin_token: String::new(),
            sites: Vec::new(),
            people: Population {
                first: 0,
                count: 0,
                code_prefix: "P".to_owned(),
            },
        }
    }

    /// Reads and parses a campaign file.
    ///
    /// # Errors
    /// The file cannot be read or is not a campaign (unknown fields are errors).
    pub fn load(path: &Path) -> Result<Self, CampaignError> {
        let text = std::fs::read(path).map_err(|source| CampaignError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| CampaignError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the campaign as pretty JSON.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), CampaignError> {
        let io = |source| CampaignError::Io {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(e.into()))?;
        std::fs::write(path, text).map_err(io)
    }

    /// Checks that the campaign can drive a site workload: at least one site, every site with a token
    /// and at least one lot, and a non-empty population.
    ///
    /// # Errors
    /// Names the first thing missing.
    pub fn validate_for_sites(&self) -> Result<(), CampaignError> {
        if self.sites.is_empty() {
            return Err(CampaignError::Invalid("it lists no sites".into()));
        }
        for site in &self.sites {
            if site.token.is_empty() {
                return Err(CampaignError::Invalid(format!(
                    "site {} has no token",
                    site.site_id
                )));
            }
            if site.lots.is_empty() {
                return Err(CampaignError::Invalid(format!(
                    "site {} has no lots",
                    site.site_id
                )));
            }
        }
        if self.people.count == 0 {
            return Err(CampaignError::Invalid(
                "its population is empty (people.count = 0)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"server": "http://127.0.0.1:8080", "admin_token": "adm",
        "sites": [{"site_id": "S1", "token": "t1",
                   "lots": [{"lot": "L1", "product": "COMIRNATY", "dose_interval_days": 21}]}],
        "people": {"first": 0, "count": 1000000, "code_prefix": "P"}}"#;

    #[test]
    fn parses_the_documented_shape() {
        let campaign: CampaignFile = serde_json::from_str(EXAMPLE).expect("parse");
        assert_eq!(campaign.sites[0].lots[0].dose_interval_days, 21);
        assert_eq!(campaign.people.person_code(42), "P000000042");
        campaign.validate_for_sites().expect("valid");
    }

    #[test]
    fn rejects_unknown_fields() {
        let typo = EXAMPLE.replace("\"admin_token\"", "\"admin_tokn\"");
        assert!(serde_json::from_str::<CampaignFile>(&typo).is_err());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("campaign.json");
        let campaign: CampaignFile = serde_json::from_str(EXAMPLE).expect("parse");
        campaign.save(&path).expect("save");
        assert_eq!(CampaignFile::load(&path).expect("load"), campaign);
    }
}
