//! Every service of the platform, in start order: a service's subscriptions exist before a
//! later one publishes to them.

use std::net::TcpListener;

use anyhow::Context;
use common::bus::SharedBus;
use common::config::Sources;
use common::http::{ServiceHandle, SharedHttp};
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

/// How many worker threads the one HTTP server of services run together gets: the most any
/// of them asks for, `http.workers = 0` (the default) meaning one per core. One server for
/// all rather than one each: each idle worker wakes several times a second (actix's date
/// timer), so a server per service made an idle platform's cost grow with the number of
/// services and, at one worker per core each, with the machine's cores.
pub fn shared_workers(loaded: &mut [Box<dyn Loaded>], cores: usize) -> usize {
    loaded
        .iter_mut()
        .map(|service| match service.settings().http.workers {
            0 => cores,
            asked => asked,
        })
        .max()
        .unwrap_or(cores)
        .max(1)
}

/// Binds each service's configured port, then starts them in order, each told where the
/// others listen, and serves them all from one HTTP server ([`shared_workers`]).
pub async fn start(
    mut loaded: Vec<Box<dyn Loaded>>,
    bus: Option<SharedBus>,
) -> anyhow::Result<Vec<ServiceHandle>> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = shared_workers(&mut loaded, cores);
    let server = SharedHttp::new();
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
            listener: listener.into(),
            peers: peers.clone(),
            bus: bus.clone(),
        }
        .sharing(&server);
        let handle = service
            .start(launch)
            .await
            .with_context(|| format!("{name}: start"))?;
        handles.push(handle);
    }
    server
        .run(workers)
        .context("starting the HTTP server of the services")?;
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
    fn services_together_get_the_workers_the_most_demanding_asks_for() {
        let folder = tempfile::tempdir().unwrap();
        let sources = Sources {
            config_dir: folder.path().to_owned(),
            environment: false,
            service_defaults: Vec::new(),
            overrides: Vec::new(),
        };
        let mut loaded = load(&select(&[]).unwrap(), &sources).unwrap();
        assert_eq!(shared_workers(&mut loaded, 2), 2, "one per core by default");
        assert_eq!(shared_workers(&mut loaded, 8), 8);
        for service in &mut loaded {
            service.settings().http.workers = 1;
        }
        loaded[1].settings().http.workers = 3;
        assert_eq!(shared_workers(&mut loaded, 8), 3);
    }
}
