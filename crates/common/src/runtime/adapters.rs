//! The adapters the settings ask for: store, bus, authenticator.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::embedded::EmbeddedBus;
use crate::bus::worker::WorkerSettings;
use crate::bus::{BusError, SharedBus, SubscriptionOptions};

use crate::auth::{Authenticator, DevSecretError, load_or_create_dev_secret};
use crate::config::{BusKind, Settings, StoreKind};
use crate::metrics::Metrics;
use crate::store::embedded::EmbeddedStore;
use crate::store::measured::MeasuredStore;
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
            if settings.store.max_size_mb > 0 {
                let bytes = settings.store.max_size_mb.saturating_mul(1024 * 1024);
                store.set_size_limit(Some(bytes)).await?;
            }
            Ok(Arc::new(store))
        }
        StoreKind::Cosmos => Ok(Arc::new(
            cosmos::connect(&settings.store.cosmos, containers).await?,
        )),
    }
}

/// `store`, timed and counted into the service's metrics.
pub fn measured_store(store: SharedStore, settings: &Settings, metrics: &Metrics) -> SharedStore {
    let system = match settings.store.kind {
        StoreKind::Embedded => "sqlite",
        StoreKind::Cosmos => "azure.cosmosdb",
    };
    Arc::new(MeasuredStore::new(store, system, metrics))
}

/// Opens the bus the settings ask for.
pub fn open_bus(settings: &Settings) -> Result<SharedBus, BusError> {
    match settings.bus.kind {
        BusKind::Embedded => {
            let bus = EmbeddedBus::open_with_window(
                &settings.bus_file(),
                Duration::from_secs(settings.bus.duplicate_window_seconds),
            )?;
            bus.watch_every(Duration::from_millis(settings.bus.poll_interval_ms));
            Ok(Arc::new(bus))
        }
        BusKind::Servicebus => {
            use crate::bus::servicebus::{EntraTransport, ReqwestTransport, ServiceBusBus};
            use crate::config::ServiceBusCredentialKind;

            let servicebus = &settings.bus.servicebus;
            let transport: Arc<dyn azure_core_legacy::HttpClient> =
                Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
            let (transport, key) = match servicebus.credential {
                ServiceBusCredentialKind::Sas => {
                    let key = servicebus.key.clone().ok_or_else(|| {
                        BusError::Unavailable(("bus.servicebus.key is not set").into())
                    })?;
                    (transport, key)
                }
                ServiceBusCredentialKind::ManagedIdentity => {
                    let credential =
                        azure_identity::ManagedIdentityCredential::new(None).map_err(|e| {
                            BusError::Unavailable((format!("managed identity: {e}")).into())
                        })?;
                    // The crate still signs with SAS; the transport replaces it with a token.
                    let unused_key = secrecy::SecretString::from("entra".to_owned());
                    (
                        Arc::new(EntraTransport::new(transport, credential))
                            as Arc<dyn azure_core_legacy::HttpClient>,
                        unused_key,
                    )
                }
            };
            Ok(Arc::new(ServiceBusBus::new(
                transport,
                &servicebus.namespace,
                &servicebus.policy,
                key,
            )))
        }
    }
}

/// Subscription options from the settings.
pub fn subscription_options(settings: &Settings) -> SubscriptionOptions {
    SubscriptionOptions {
        max_delivery_count: settings.bus.max_delivery_count,
        lock_duration: Duration::from_secs(settings.bus.lock_seconds),
        event_types: Vec::new(),
        types_by_rule: false,
    }
}

/// Worker settings for one subscription, from the settings.
pub fn worker_settings(settings: &Settings, topic: &str, subscription: &str) -> WorkerSettings {
    let mut worker = WorkerSettings::new(topic, subscription);
    worker.poll_interval = Duration::from_millis(settings.bus.poll_interval_ms);
    worker.retry_backoff = settings
        .bus
        .retry_backoff_ms
        .iter()
        .copied()
        .map(Duration::from_millis)
        .collect();
    worker
}

/// The authenticator for the settings; HS256 without a configured secret uses the
/// development secret in the data directory.
pub fn authenticator(settings: &Settings) -> Result<Authenticator, DevSecretError> {
    Authenticator::from_settings(&settings.auth, || {
        load_or_create_dev_secret(&settings.data_dir)
    })
}
