//! A synthetic registered population: person codes, and registrations as CSV for bulk import.
//!
//! Every field of person *i* is a pure function of `(seed, i)`, so any slice of the population can be
//! regenerated without the rest, and two runs with the same seed write byte-identical files. The
//! generator uses its own tiny mixing function (splitmix64) rather than a `rand` RNG for this, so the
//! files stay the same across `rand` upgrades.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

use time::Date;

use crate::campaign::{Area, CampaignFile, Population};

/// The person code of person `index`: the prefix and the index zero-padded to nine digits.
///
/// ```
/// assert_eq!(vaxcamp_loadtest::population::person_code("P", 42), "P000000042");
/// ```
pub fn person_code(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:09}")
}

/// One generated pre-registration, as written to the CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `format!("{prefix}{index:09}")`.
    pub person_code: String,
    /// Full name in Vietnamese order: family, middle, given.
    pub name: String,
    /// Aged 18 to 90 in 2026.
    pub birth_date: Date,
    /// A ten-digit Vietnamese mobile number.
    pub phone: String,
    /// Where the person lives: one of the campaign's site areas.
    pub area: Area,
    /// 1..=10; 5 ("over 65") for everyone aged 65 or more, otherwise mostly 9 (general population).
    pub priority_group: u8,
}

/// Writes a generated population as the CSV that `vaxcamp import registrations` reads.
///
/// Columns: [`RegistrationCsv::HEADER`]. Deterministic from the seed; people are spread over the
/// given areas (normally the campaign sites' areas, so every site has citizens nearby).
#[derive(Debug, Clone)]
pub struct RegistrationCsv {
    population: Population,
    areas: Vec<Area>,
    seed: u64,
}

impl RegistrationCsv {
    /// The CSV header line (without the newline).
    pub const HEADER: &'static str =
        "person_code,name,birth_date,phone,province,district,commune,priority_group";

    /// A writer for `population`, spreading people over `areas` (a few plausible Vietnamese areas if
    /// empty).
    pub fn new(population: Population, areas: Vec<Area>, seed: u64) -> Self {
        let areas = if areas.is_empty() {
            default_areas()
        } else {
            areas
        };
        Self {
            population,
            areas,
            seed,
        }
    }

    /// A writer for a campaign's population, spread over the distinct areas of its sites.
    pub fn from_campaign(campaign: &CampaignFile, seed: u64) -> Self {
        let mut areas: Vec<Area> = Vec::new();
        for area in campaign.sites.iter().filter_map(|site| site.area.as_ref()) {
            if !areas.contains(area) {
                areas.push(area.clone());
            }
        }
        Self::new(campaign.people.clone(), areas, seed)
    }

    /// The registration of person `index` (any index, not only those in the population).
    pub fn registration(&self, index: u64) -> Registration {
        let mut bits = Mixer::new(self.seed, index);
        let female = bits.next().is_multiple_of(2);
        let family = weighted(FAMILY_NAMES, bits.next());
        let (middles, givens) = if female {
            (FEMALE_MIDDLE, FEMALE_GIVEN)
        } else {
            (MALE_MIDDLE, MALE_GIVEN)
        };
        let middle = pick(middles, bits.next());
        let given = pick(givens, bits.next());

        let first_day = EARLIEST_BIRTH.to_julian_day();
        let span = u64::try_from(LATEST_BIRTH.to_julian_day() - first_day).unwrap_or(1);
        let offset = i32::try_from(bits.next() % span).unwrap_or(0);
        let birth_date = Date::from_julian_day(first_day + offset).unwrap_or(EARLIEST_BIRTH);

        let mut phone = String::from(*pick(PHONE_PREFIXES, bits.next()));
        let _ = write!(phone, "{:07}", bits.next() % 10_000_000);

        let area = pick(&self.areas, bits.next()).clone();
        let priority_group = if birth_date < OVER_65 {
            5
        } else {
            weighted(PRIORITY_WEIGHTS, bits.next())
        };

        Registration {
            person_code: self.population.person_code(index),
            name: format!("{family} {middle} {given}"),
            birth_date,
            phone,
            area,
            priority_group,
        }
    }

    /// Writes the header and every person of the population. Returns the number of rows.
    ///
    /// # Errors
    /// Writing fails.
    pub fn write_to(&self, out: impl Write) -> io::Result<u64> {
        let first = self.population.first;
        self.write_range(out, first..first.saturating_add(self.population.count))
    }

    /// Writes the header and the people with indices in `indices`. Returns the number of rows.
    ///
    /// # Errors
    /// Writing fails.
    pub fn write_range(&self, out: impl Write, indices: Range<u64>) -> io::Result<u64> {
        let mut out = io::BufWriter::with_capacity(1 << 16, out);
        writeln!(out, "{}", Self::HEADER)?;
        let mut line = String::with_capacity(128);
        let mut rows = 0;
        for index in indices {
            let r = self.registration(index);
            line.clear();
            // Generated fields never need quoting; area codes come from the campaign file, so they
            // go through `csv_field` in case someone put a comma in one.
            let _ = writeln!(
                line,
                "{},{},{},{},{},{},{},{}",
                r.person_code,
                r.name,
                r.birth_date,
                r.phone,
                csv_field(&r.area.province),
                csv_field(&r.area.district),
                csv_field(&r.area.commune),
                r.priority_group
            );
            out.write_all(line.as_bytes())?;
            rows += 1;
        }
        out.flush()?;
        Ok(rows)
    }

    /// Writes the whole population to a file (created or truncated). Returns the number of rows.
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn write_file(&self, path: &Path) -> io::Result<u64> {
        self.write_to(std::fs::File::create(path)?)
    }
}

/// Quotes a CSV field if it contains a separator, a quote or a line break (RFC 4180).
fn csv_field(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\"")).into()
    } else {
        value.into()
    }
}

/// A stream of well-mixed 64-bit values derived from `(seed, index)` (splitmix64).
struct Mixer(u64);

impl Mixer {
    fn new(seed: u64, index: u64) -> Self {
        Self(splitmix64(seed ^ splitmix64(index)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }
}

/// The splitmix64 finaliser: a bijective mix with good avalanche, enough for synthetic data.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<T>(items: &[T], bits: u64) -> &T {
    // `items` is never empty: the name tables are constants and `areas` falls back to defaults.
    let len = u64::try_from(items.len()).unwrap_or(1).max(1);
    &items[usize::try_from(bits % len).unwrap_or(0)]
}

fn weighted<T: Copy>(table: &[(T, u32)], bits: u64) -> T {
    let total: u64 = table.iter().map(|&(_, w)| u64::from(w)).sum();
    let mut roll = bits % total.max(1);
    for &(item, weight) in table {
        if roll < u64::from(weight) {
            return item;
        }
        roll -= u64::from(weight);
    }
    table[0].0
}

const EARLIEST_BIRTH: Date = time::macros::date!(1936 - 01 - 01);
const LATEST_BIRTH: Date = time::macros::date!(2008 - 12 - 31);
/// Born before this date: 65 or older during a 2026 campaign.
const OVER_65: Date = time::macros::date!(1961 - 01 - 01);

/// Family names with their approximate share (per mille) of Vietnam's population.
const FAMILY_NAMES: &[(&str, u32)] = &[
    ("Nguyễn", 380),
    ("Trần", 110),
    ("Lê", 95),
    ("Phạm", 70),
    ("Hoàng", 35),
    ("Huỳnh", 16),
    ("Phan", 45),
    ("Vũ", 25),
    ("Võ", 14),
    ("Đặng", 21),
    ("Bùi", 20),
    ("Đỗ", 14),
    ("Hồ", 13),
    ("Ngô", 13),
    ("Dương", 10),
    ("Lý", 5),
    ("Đinh", 8),
    ("Trương", 8),
    ("Mai", 5),
    ("Lâm", 5),
];

const MALE_MIDDLE: &[&str] = &[
    "Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Công", "Gia", "Xuân", "Đình", "Quang", "Trọng",
];
const FEMALE_MIDDLE: &[&str] = &[
    "Thị", "Ngọc", "Thu", "Thanh", "Minh", "Phương", "Kim", "Hồng", "Bảo", "Mai", "Khánh", "Diệu",
];
const MALE_GIVEN: &[&str] = &[
    "An", "Anh", "Bảo", "Bình", "Cường", "Dũng", "Duy", "Đạt", "Hải", "Hiếu", "Hoàng", "Hùng",
    "Huy", "Khang", "Khánh", "Long", "Minh", "Nam", "Nghĩa", "Phong", "Phúc", "Quang", "Quân",
    "Sơn", "Tài", "Thắng", "Thành", "Thịnh", "Trung", "Tuấn", "Tùng", "Việt", "Vinh",
];
const FEMALE_GIVEN: &[&str] = &[
    "An", "Anh", "Châu", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hiền", "Hoa", "Hồng",
    "Huyền", "Hương", "Lan", "Linh", "Loan", "Mai", "My", "Nga", "Ngân", "Ngọc", "Nhung", "Oanh",
    "Phương", "Quyên", "Tâm", "Thảo", "Thu", "Thủy", "Trang", "Trinh", "Uyên", "Vân", "Vy", "Yến",
];
/// Mobile prefixes of the Vietnamese carriers (ten-digit numbers since 2018).
const PHONE_PREFIXES: &[&str] = &[
    "032", "033", "034", "035", "036", "037", "038", "039", "056", "058", "070", "076", "077",
    "078", "079", "081", "082", "083", "084", "085", "086", "088", "089", "090", "091", "093",
    "094", "096", "097", "098",
];
/// Priority groups of people under 65 (group 5 is "over 65"): mostly the general population (9).
const PRIORITY_WEIGHTS: &[(u8, u32)] = &[
    (1, 3),
    (2, 3),
    (3, 5),
    (4, 4),
    (6, 10),
    (7, 5),
    (8, 5),
    (9, 55),
    (10, 10),
];

/// Used when the campaign's sites carry no areas: wards of Hà Nội, Hồ Chí Minh City and Đà Nẵng.
fn default_areas() -> Vec<Area> {
    [
        ("01", "001", "00001"),
        ("01", "001", "00004"),
        ("01", "002", "00037"),
        ("79", "760", "26734"),
        ("79", "760", "26737"),
        ("48", "492", "20194"),
    ]
    .into_iter()
    .map(|(province, district, commune)| Area {
        province: province.into(),
        district: district.into(),
        commune: commune.into(),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(seed: u64, count: u64) -> String {
        let population = Population {
            first: 1000,
            count,
            code_prefix: "P".into(),
        };
        let mut out = Vec::new();
        let rows = RegistrationCsv::new(population, Vec::new(), seed)
            .write_to(&mut out)
            .expect("write");
        assert_eq!(rows, count);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_people() {
        assert_eq!(csv(7, 200), csv(7, 200));
        assert_ne!(csv(7, 200), csv(8, 200));
    }

    #[test]
    fn rows_have_the_documented_columns() {
        let text = csv(1, 500);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(RegistrationCsv::HEADER));
        for (i, line) in lines.enumerate() {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 8, "{line}");
            assert_eq!(fields[0], format!("P{:09}", 1000 + i));
            assert_eq!(
                fields[1].split(' ').count(),
                3,
                "family middle given: {line}"
            );
            Date::parse(
                fields[2],
                &time::format_description::well_known::Iso8601::DATE,
            )
            .expect("YYYY-MM-DD birth date");
            assert_eq!(fields[3].len(), 10, "ten-digit phone: {line}");
            assert!(fields[3].starts_with('0'));
            assert_eq!(
                (fields[4].len(), fields[5].len(), fields[6].len()),
                (2, 3, 5)
            );
            let group: u8 = fields[7].parse().expect("priority group");
            assert!((1..=10).contains(&group));
        }
    }

    #[test]
    fn people_are_spread_over_the_given_areas() {
        let areas: Vec<Area> = ["01", "79"]
            .iter()
            .map(|p| Area {
                province: (*p).into(),
                district: "001".into(),
                commune: "00001".into(),
            })
            .collect();
        let population = Population {
            first: 0,
            count: 1000,
            code_prefix: "X".into(),
        };
        let generator = RegistrationCsv::new(population, areas.clone(), 3);
        let in_first = (0..1000)
            .filter(|&i| generator.registration(i).area == areas[0])
            .count();
        assert!(
            (350..=650).contains(&in_first),
            "{in_first} of 1000 in the first area"
        );
    }

    #[test]
    fn the_over_65s_are_priority_group_5() {
        let generator = RegistrationCsv::new(
            Population {
                first: 0,
                count: 0,
                code_prefix: "P".into(),
            },
            vec![],
            9,
        );
        for i in 0..2000 {
            let r = generator.registration(i);
            assert_eq!(r.birth_date < OVER_65, r.priority_group == 5, "{r:?}");
        }
    }

    #[test]
    fn quotes_fields_with_commas() {
        assert_eq!(csv_field("01"), "01");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
