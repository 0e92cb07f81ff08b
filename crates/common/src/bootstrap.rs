//! Glue every service's start-up shares: the store adapter and the authenticator that the
//! settings ask for.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::embedded::EmbeddedBus;
use crate::bus::worker::WorkerSettings;
use crate::bus::{BusError, SharedBus, SubscriptionOptions};

use crate::auth::{Authenticator, DevSecretError, load_or_create_dev_secret};
use crate::config::{BusKind, Settings, StoreKind};
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

/// Opens the bus the settings ask for.
pub fn open_bus(settings: &Settings) -> Result<SharedBus, BusError> {
    match settings.bus.kind {
        BusKind::Embedded => Ok(Arc::new(EmbeddedBus::open_with_window(
            &settings.bus_file(),
            Duration::from_secs(settings.bus.duplicate_window_seconds),
        )?)),
        BusKind::Servicebus => {
            use crate::bus::servicebus::{EntraTransport, ReqwestTransport, ServiceBusBus};
            use crate::config::ServiceBusCredentialKind;

            let servicebus = &settings.bus.servicebus;
            let transport: Arc<dyn azure_core_legacy::HttpClient> =
                Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
            let (transport, key) = match servicebus.credential {
                ServiceBusCredentialKind::Sas => {
                    let key = servicebus.key.clone().ok_or_else(|| {
                        BusError::Unavailable("bus.servicebus.key is not set".into())
                    })?;
                    (transport, key)
                }
                ServiceBusCredentialKind::ManagedIdentity => {
                    let credential = azure_identity::ManagedIdentityCredential::new(None)
                        .map_err(|e| BusError::Unavailable(format!("managed identity: {e}")))?;
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

/// What an event-driven service runs: its store, the bus, and the authenticator, opened
/// from the settings, with its subscription ensured.
pub struct ServiceRuntime {
    pub settings: Settings,
    pub store: SharedStore,
    pub bus: SharedBus,
    pub authenticator: crate::auth::Authenticator,
    pub signal: crate::bus::outbox::OutboxSignal,
}

/// The subscription a service handles and the container its outbox lives in.
pub struct Messaging {
    pub topic: &'static str,
    pub subscription: &'static str,
    pub outbox_container: &'static str,
}

impl ServiceRuntime {
    /// Opens the store and the bus the settings ask for; `bus` replaces the latter (tests
    /// that run the services on another broker).
    pub async fn open(
        settings: Settings,
        service: &str,
        containers: &[&str],
        messaging: &Messaging,
        bus: Option<SharedBus>,
    ) -> anyhow::Result<Self> {
        let store = open_store(&settings, service, containers).await?;
        let bus = match bus {
            Some(bus) => bus,
            None => open_bus(&settings)?,
        };
        bus.ensure_subscription(
            messaging.topic,
            messaging.subscription,
            subscription_options(&settings),
        )
        .await?;
        let authenticator = authenticator(&settings)?;
        Ok(Self {
            settings,
            store,
            bus,
            authenticator,
            signal: crate::bus::outbox::OutboxSignal::default(),
        })
    }

    /// Starts the outbox relay and the subscription's worker; they stop with the service.
    pub fn background(
        &self,
        messaging: &Messaging,
        handler: Arc<dyn crate::bus::worker::MessageHandler>,
    ) -> crate::http::Background {
        let (shutdown, stopped) = tokio::sync::watch::channel(false);
        let relay = crate::bus::outbox::OutboxRelay {
            store: self.store.clone(),
            bus: self.bus.clone(),
            container: messaging.outbox_container,
            signal: self.signal.clone(),
            poll_interval: Duration::from_millis(self.settings.bus.poll_interval_ms),
        }
        .spawn(stopped.clone());
        let worker = crate::bus::worker::spawn_worker(
            self.bus.clone(),
            worker_settings(&self.settings, messaging.topic, messaging.subscription),
            handler,
            stopped,
        );
        crate::http::Background {
            shutdown,
            tasks: vec![relay, worker],
        }
    }

    /// The shared HTTP layer's context: readiness checks the store and the bus.
    pub fn http_context(
        &self,
        name: &'static str,
        openapi: serde_json::Value,
    ) -> crate::http::HttpContext {
        crate::http::HttpContext {
            name,
            settings: self.settings.clone(),
            authenticator: self.authenticator.clone(),
            readiness: vec![
                Arc::new(crate::http::StoreReadiness(self.store.clone())),
                Arc::new(crate::http::BusReadiness(self.bus.clone())),
            ],
            openapi,
        }
    }
}
