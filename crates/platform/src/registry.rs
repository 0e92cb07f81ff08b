//! Every service of the platform, in start order: a service's subscriptions exist before a
//! later one publishes to them.

use std::net::TcpListener;

use anyhow::Context;
use common::bus::SharedBus;
use common::config::Sources;
use common::http::ServiceHandle;
use common::runtime::{Host, Hosted, Launch, Loaded, Peers, ServiceDescriptor};

static CATALOG: Host<catalog::startup::CatalogService> = Host::new();
static ORDERS: Host<orders::startup::OrdersService> = Host::new();
static SYNC: Host<sync::startup::SyncService> = Host::new();
static NOTIFICATIONS: Host<notifications::startup::NotificationsService> = Host::new();

/// The platform's services, in start order.
pub fn services() -> [&'static dyn Hosted; 4] {
    [&CATALOG, &ORDERS, &SYNC, &NOTIFICATIONS]
}

/// Their descriptors.
pub fn descriptors() -> Vec<&'static ServiceDescriptor> {
    services().iter().map(|s| s.descriptor()).collect()
}

/// The services named in `only` (all when empty), in start order; an unknown name is an
/// error that lists the known ones.
pub fn select(only: &[String]) -> anyhow::Result<Vec<&'static dyn Hosted>> {
    let all = services();
    for name in only {
        anyhow::ensure!(
            all.iter().any(|s| s.descriptor().name == name),
            "unknown service {name:?}; the platform has {}",
            all.iter()
                .map(|s| s.descriptor().name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|s| only.is_empty() || only.iter().any(|n| n == s.descriptor().name))
        .collect())
}

/// Loads every selected service's settings (all first, so that a bad key stops everything
/// before anything starts).
pub fn load(
    selected: &[&'static dyn Hosted],
    sources: &Sources,
) -> anyhow::Result<Vec<Box<dyn Loaded>>> {
    selected
        .iter()
        .map(|service| {
            service
                .load(sources)
                .with_context(|| format!("{}: configuration", service.descriptor().name))
        })
        .collect()
}

/// Services run together on one machine share its cores: a service whose `http.workers` is
/// left at 0 (one per core) gets its share instead, at least one. Each worker wakes several
/// times a second when idle (actix's date timer), so one per core per service made an idle
/// platform's cost grow with the machine.
pub fn share_cores(loaded: &mut [Box<dyn Loaded>], cores: usize) {
    let share = (cores / loaded.len().max(1)).max(1);
    for service in loaded {
        let http = &mut service.settings().http;
        if http.workers == 0 {
            http.workers = share;
        }
    }
}

/// Binds each service's configured port, then starts them in order, each told where the
/// others listen.
pub async fn start(
    mut loaded: Vec<Box<dyn Loaded>>,
    bus: Option<SharedBus>,
) -> anyhow::Result<Vec<ServiceHandle>> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut peers = Peers::default();
    for service in &mut loaded {
        let name = service.descriptor().name;
        let settings = service.settings();
        let listener = common::http::bind(settings).with_context(|| {
            format!(
                "{name}: binding {}:{}",
                settings.http.host, settings.http.port
            )
        })?;
        let mut address = listener.local_addr()?;
        // A service listening on every interface is reached on loopback from here.
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        peers.insert(name, format!("http://{address}"));
        listeners.push(listener);
    }
    let mut handles = Vec::new();
    for (service, listener) in loaded.into_iter().zip(listeners) {
        let name = service.descriptor().name;
        let launch = Launch {
            listener,
            peers: peers.clone(),
            bus: bus.clone(),
        };
        let handle = service
            .start(launch)
            .await
            .with_context(|| format!("{name}: start"))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// The URL of the service `name` among `handles`.
pub fn url(handles: &[ServiceHandle], name: &str) -> Option<String> {
    handles
        .iter()
        .find(|h| h.name == name)
        .map(ServiceHandle::url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_together_share_the_cores_and_keep_what_is_configured() {
        let folder = tempfile::tempdir().unwrap();
        let sources = Sources {
            config_dir: folder.path().to_owned(),
            environment: false,
            service_defaults: Vec::new(),
            overrides: Vec::new(),
        };
        let mut loaded = load(&select(&[]).unwrap(), &sources).unwrap();
        loaded[0].settings().http.workers = 3;
        share_cores(&mut loaded, 8);
        let workers: Vec<usize> = loaded
            .iter_mut()
            .map(|s| s.settings().http.workers)
            .collect();
        assert_eq!(workers, [3, 2, 2, 2]);
        let mut few = load(&select(&[]).unwrap(), &sources).unwrap();
        share_cores(&mut few, 2);
        assert!(few.iter_mut().all(|s| s.settings().http.workers == 1));
    }
}
