//! Glue every service's start-up shares: the store adapter and the authenticator that the
//! settings ask for.

use std::sync::Arc;

use crate::auth::{Authenticator, DevSecretError, load_or_create_dev_secret};
use crate::config::{Settings, StoreKind};
use crate::store::embedded::EmbeddedStore;
use crate::store::{SharedStore, StoreError, cosmos};

/// Opens the store: `<data_dir>/<service>.db` when embedded, the Cosmos account otherwise.
pub async fn open_store(
    settings: &Settings,
    service: &str,
    containers: &[&str],
) -> Result<SharedStore, StoreError> {
    match settings.store.kind {
        StoreKind::Embedded => {
            let store =
                EmbeddedStore::open(&settings.store_file(service), settings.store.durability)?;
            Ok(Arc::new(store))
        }
        StoreKind::Cosmos => Ok(Arc::new(
            cosmos::connect(&settings.store.cosmos, containers).await?,
        )),
    }
}

/// The authenticator for the settings; HS256 without a configured secret uses the
/// development secret in the data directory.
pub fn authenticator(settings: &Settings) -> Result<Authenticator, DevSecretError> {
    Authenticator::from_settings(&settings.auth, || {
        load_or_create_dev_secret(&settings.data_dir)
    })
}
