//! The campaign's catalogue in memory: sites, products, lots and stock on hand.
//!
//! Small (thousands of rows) and read on every dose, so it is loaded from the store at start-up
//! and kept here; set-up changes write the store first, then this copy. Stock is counted with an
//! atomic per lot so shard writers can reserve doses without a lock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use store::{Lot, LotKey, LotNumber, Product, ProductCode, Site, SiteId, Store};

use crate::areas::AreaNames;

/// A lot at a site and how many of its doses are used.
#[derive(Debug)]
pub struct LotStock {
    pub lot: Lot,
    used: AtomicU64,
}

impl LotStock {
    fn new(lot: Lot, used: u64) -> Self {
        Self {
            lot,
            used: AtomicU64::new(used),
        }
    }

    /// Takes one dose from the lot. False when none is left.
    pub fn reserve(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.lot.quantity).then_some(used + 1)
            })
            .is_ok()
    }

    /// Gives back a dose reserved for a write that did not happen.
    pub fn release(&self) {
        // Saturating: a release never follows anything but a reserve, but stay total anyway.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(1))
            });
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn remaining(&self) -> u64 {
        self.lot.quantity.saturating_sub(self.used())
    }
}

#[derive(Default)]
struct Catalogue {
    sites: HashMap<SiteId, Site>,
    products: Arc<HashMap<ProductCode, Product>>,
    lots: HashMap<LotKey, Arc<LotStock>>,
    lot_numbers: HashSet<LotNumber>,
}

/// The catalogue, shared by handlers and shard writers.
#[derive(Default)]
pub struct Campaign {
    catalogue: RwLock<Catalogue>,
    pub issuer: String,
    pub country: String,
    /// Province and district names for display (`vaxcamp import areas`, `PUT /v1/areas`).
    area_names: RwLock<Arc<AreaNames>>,
}

impl std::fmt::Debug for Campaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaign")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// How a lot number typed at a site resolved.
#[derive(Debug, Clone)]
pub enum LotLookup {
    Found(Arc<LotStock>),
    /// The lot exists, but at other sites only.
    ElsewhereOnly,
    Unknown,
}

impl Campaign {
    /// Loads the catalogue and stock counters from the store.
    ///
    /// # Errors
    /// Store read failures.
    pub async fn load(store: &dyn Store) -> store::Result<Self> {
        let issuer = store
            .setting("issuer")
            .await?
            .unwrap_or_else(|| "VN-MOH".to_owned());
        let country = store
            .setting("country")
            .await?
            .unwrap_or_else(|| "VN".to_owned());
        // Names are for display: unreadable ones are logged, never a reason not to start.
        let area_names = match store.setting(crate::areas::SETTING).await? {
            None => AreaNames::default(),
            Some(text) => AreaNames::from_setting(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "area names ignored; import them again with `vaxcamp import areas`");
                AreaNames::default()
            }),
        };
        let usage = store.totals().await?.lot_usage;
        let mut catalogue = Catalogue {
            sites: store
                .sites()
                .await?
                .into_iter()
                .map(|s| (s.site_id.clone(), s))
                .collect(),
            products: Arc::new(
                store
                    .products()
                    .await?
                    .into_iter()
                    .map(|p| (p.code.clone(), p))
                    .collect(),
            ),
            ..Catalogue::default()
        };
        for lot in store.lots().await? {
            let used = usage.get(&lot.key()).copied().unwrap_or(0);
            catalogue.lot_numbers.insert(lot.lot_number.clone());
            catalogue
                .lots
                .insert(lot.key(), Arc::new(LotStock::new(lot, used)));
        }
        Ok(Self {
            catalogue: RwLock::new(catalogue),
            issuer,
            country,
            area_names: RwLock::new(Arc::new(area_names)),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalogue> {
        // Writers replace whole entries; a panic mid-update cannot leave a torn entry.
        self.catalogue
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Catalogue> {
        self.catalogue
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn site(&self, id: &SiteId) -> Option<Site> {
        self.read().sites.get(id).cloned()
    }

    /// Whether `id` is one of the campaign's sites: [`Campaign::site`] without the copy.
    pub fn has_site(&self, id: &SiteId) -> bool {
        self.read().sites.contains_key(id)
    }

    /// The province and district names, as they are now.
    pub fn area_names(&self) -> Arc<AreaNames> {
        self.area_names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the names (after the store has them).
    pub fn set_area_names(&self, names: AreaNames) {
        *self
            .area_names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(names);
    }

    pub fn sites(&self) -> Vec<Site> {
        let mut sites: Vec<Site> = self.read().sites.values().cloned().collect();
        sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));
        sites
    }

    /// The product catalogue, as one shared map (cheap to clone).
    pub fn products(&self) -> Arc<HashMap<ProductCode, Product>> {
        self.read().products.clone()
    }

    pub fn lot(&self, lot_number: &LotNumber, site: &SiteId) -> LotLookup {
        let catalogue = self.read();
        let key = LotKey {
            lot_number: lot_number.clone(),
            site_id: site.clone(),
        };
        match catalogue.lots.get(&key) {
            Some(stock) => LotLookup::Found(stock.clone()),
            None if catalogue.lot_numbers.contains(lot_number) => LotLookup::ElsewhereOnly,
            None => LotLookup::Unknown,
        }
    }

    /// The stock entry for a lot key, if the lot is known.
    pub fn stock(&self, key: &LotKey) -> Option<Arc<LotStock>> {
        self.read().lots.get(key).cloned()
    }

    /// Every lot with its stock, ordered by site then lot number.
    pub fn lots(&self) -> Vec<Arc<LotStock>> {
        let mut lots: Vec<Arc<LotStock>> = self.read().lots.values().cloned().collect();
        lots.sort_by_key(|s| s.lot.key());
        lots
    }

    pub fn upsert_site(&self, site: Site) {
        self.write().sites.insert(site.site_id.clone(), site);
    }

    pub fn upsert_product(&self, product: Product) {
        let mut catalogue = self.write();
        let mut products = (*catalogue.products).clone();
        products.insert(product.code.clone(), product);
        catalogue.products = Arc::new(products);
    }

    /// Adds a lot, or replaces its details keeping the doses already used.
    pub fn upsert_lot(&self, lot: Lot) {
        let mut catalogue = self.write();
        let used = catalogue.lots.get(&lot.key()).map_or(0, |s| s.used());
        catalogue.lot_numbers.insert(lot.lot_number.clone());
        catalogue
            .lots
            .insert(lot.key(), Arc::new(LotStock::new(lot, used)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn lot(quantity: u64) -> Lot {
        Lot {
            lot_number: LotNumber::new("FK1").expect("valid"),
            site_id: SiteId::new("s1").expect("valid"),
            product: ProductCode::new("COMIRNATY").expect("valid"),
            expires: date!(2027 - 01 - 01),
            quantity,
        }
    }

    #[test]
    fn stock_is_never_overdrawn() {
        let stock = Arc::new(LotStock::new(lot(1000), 0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stock = stock.clone();
                std::thread::spawn(move || (0..400).filter(|_| stock.reserve()).count())
            })
            .collect();
        let reserved: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(reserved, 1000);
        assert_eq!(stock.remaining(), 0);
        stock.release();
        assert_eq!(stock.remaining(), 1);
    }

    #[test]
    fn lots_resolve_by_site() {
        let campaign = Campaign::default();
        campaign.upsert_lot(lot(5));
        assert!(matches!(
            campaign.lot(
                &LotNumber::new("FK1").expect("valid"),
                &SiteId::new("s1").expect("valid")
            ),
            LotLookup::Found(_)
        ));
        assert!(matches!(
            campaign.lot(
                &LotNumber::new("FK1").expect("valid"),
                &SiteId::new("s2").expect("valid")
            ),
            LotLookup::ElsewhereOnly
        ));
        assert!(matches!(
            campaign.lot(
                &LotNumber::new("XX").expect("valid"),
                &SiteId::new("s1").expect("valid")
            ),
            LotLookup::Unknown
        ));
    }
}
