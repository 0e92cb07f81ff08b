//! Gauges whose value needs an await (a look at the bus or the store): sampled before the
//! metrics are read or pushed, never on a hot path.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, ObservableGauge};

/// One gauge's current points: attributes and value.
pub type Points = Vec<(Vec<KeyValue>, f64)>;

/// Looks the figures up, one [`Points`] per gauge it feeds, in the order the gauges were
/// declared; a failed look answers no points (the gauge then shows nothing rather than a
/// stale or invented value).
pub type GaugeProbe = Arc<dyn Fn() -> BoxFuture<'static, Vec<Points>> + Send + Sync>;

/// A gauge: name, unit, description.
pub type GaugeSpec = (&'static str, &'static str, &'static str);

pub struct Probes {
    meter: Meter,
    entries: Mutex<Vec<Entry>>,
}

struct Entry {
    probe: GaugeProbe,
    slots: Vec<Arc<Mutex<Points>>>,
    // Kept so that the callbacks live as long as the service.
    _gauges: Vec<ObservableGauge<f64>>,
}

impl Probes {
    pub(super) fn new(meter: &Meter) -> Self {
        Self {
            meter: meter.clone(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Registers the gauges of `specs`, valued by one `probe` at each sampling.
    pub fn gauges(&self, specs: &[GaugeSpec], probe: GaugeProbe) {
        let mut slots = Vec::with_capacity(specs.len());
        let mut gauges = Vec::with_capacity(specs.len());
        for (name, unit, description) in specs {
            let slot: Arc<Mutex<Points>> = Arc::default();
            let read = slot.clone();
            gauges.push(
                self.meter
                    .f64_observable_gauge(*name)
                    .with_unit(*unit)
                    .with_description(*description)
                    .with_callback(move |observer| {
                        if let Ok(points) = read.lock() {
                            for (attributes, value) in points.iter() {
                                observer.observe(*value, attributes);
                            }
                        }
                    })
                    .build(),
            );
            slots.push(slot);
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.push(Entry {
                probe,
                slots,
                _gauges: gauges,
            });
        }
    }

    /// Runs every probe (one after another: they share the store and the bus with the
    /// service's own work) and keeps their points for the next collection.
    pub async fn sample(&self) {
        let probes: Vec<(GaugeProbe, Vec<Arc<Mutex<Points>>>)> = match self.entries.lock() {
            Ok(entries) => entries
                .iter()
                .map(|entry| (entry.probe.clone(), entry.slots.clone()))
                .collect(),
            Err(_) => return,
        };
        for (probe, slots) in probes {
            let mut sampled = probe().await.into_iter();
            for slot in slots {
                let points = sampled.next().unwrap_or_default();
                if let Ok(mut slot) = slot.lock() {
                    *slot = points;
                }
            }
        }
    }
}
