//! A service as the platform hosts it: its descriptor, its own settings type, and its one
//! start-up function. [`Host`] erases the settings type, so that one registry can list
//! every service (`platform up`, `platform dlq`, the cross-service tests).

use std::marker::PhantomData;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::{Launch, ServiceDescriptor};
use crate::config::{ConfigError, Settings, Sources};
use crate::http::ServiceHandle;

pub trait Service: Send + Sync + 'static {
    /// The service's own settings (its sections beside the shared ones).
    type Settings: DeserializeOwned + Clone + Send + Sync + 'static;
    const DESCRIPTOR: &'static ServiceDescriptor;
    /// Defaults of its own settings, as commented TOML.
    const OWN_DEFAULTS: &'static str;
    /// Its own settings that hold secrets: taken from the environment only.
    const OWN_SECRETS: &'static [&'static str] = &[];

    /// Opens the adapters, starts the background work and serves HTTP.
    fn start(
        settings: Settings,
        own: Self::Settings,
        launch: Launch,
    ) -> BoxFuture<'static, anyhow::Result<ServiceHandle>>;

    /// Checks what types alone cannot say about the service's own settings.
    fn validate(_own: &Self::Settings) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Built-in defaults, then `config/<service>.toml`, then `PLATFORM__*` and
    /// `<SERVICE>__*`, then `sources`' overrides; the service's port is its default one.
    fn load(sources: &Sources) -> Result<(Settings, Self::Settings), ConfigError> {
        let mut sources = sources.clone();
        sources.service_defaults.insert(
            0,
            (
                "http.port".to_owned(),
                Self::DESCRIPTOR.default_port.to_string(),
            ),
        );
        let (settings, own) = Settings::load_with::<Self::Settings>(
            Self::DESCRIPTOR.name,
            Self::OWN_DEFAULTS,
            Self::OWN_SECRETS,
            &sources,
        )?;
        Self::validate(&own)?;
        Ok((settings, own))
    }
}

/// A service whose settings are loaded, ready to start.
pub trait Loaded: Send {
    fn descriptor(&self) -> &'static ServiceDescriptor;
    /// The shared settings, to adjust before the start (tests, command-line flags).
    fn settings(&mut self) -> &mut Settings;
    fn start(self: Box<Self>, launch: Launch) -> BoxFuture<'static, anyhow::Result<ServiceHandle>>;
}

/// One entry of a registry of services.
pub trait Hosted: Send + Sync {
    fn descriptor(&self) -> &'static ServiceDescriptor;
    fn load(&self, sources: &Sources) -> Result<Box<dyn Loaded>, ConfigError>;
}

/// Hosts service `S`.
pub struct Host<S>(PhantomData<fn() -> S>);

impl<S> Host<S> {
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<S> Default for Host<S> {
    fn default() -> Self {
        Self::new()
    }
}

struct LoadedService<S: Service> {
    settings: Settings,
    own: S::Settings,
}

impl<S: Service> Loaded for LoadedService<S> {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        S::DESCRIPTOR
    }

    fn settings(&mut self) -> &mut Settings {
        &mut self.settings
    }

    fn start(self: Box<Self>, launch: Launch) -> BoxFuture<'static, anyhow::Result<ServiceHandle>> {
        S::start(self.settings, self.own, launch)
    }
}

impl<S: Service> Hosted for Host<S> {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        S::DESCRIPTOR
    }

    fn load(&self, sources: &Sources) -> Result<Box<dyn Loaded>, ConfigError> {
        let (settings, own) = S::load(sources)?;
        Ok(Box::new(LoadedService::<S> { settings, own }))
    }
}
