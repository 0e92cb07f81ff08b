//! One change at a time to a SKU's stock within this process.
//!
//! Concurrent orders of one SKU would otherwise read the same stock record, and all but one
//! would lose the ETag race and read and write again: under load that was more than one
//! wasted read and batch per order. Taking turns here costs nothing of that; between
//! processes (several instances on Azure) the ETag still decides.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use tokio::sync::{Mutex, MutexGuard};

/// Striped rather than one lock per SKU: bounded memory whatever the catalog's size, and a
/// SKU sharing a stripe with another only waits for it, which is rare and harmless.
const STRIPES: usize = 256;

pub struct StockGate {
    stripes: Box<[Mutex<()>]>,
}

impl Default for StockGate {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl StockGate {
    /// Waits for this process's turn at `sku`'s stock; the turn lasts while the guard lives.
    pub async fn turn(&self, sku: &str) -> MutexGuard<'_, ()> {
        self.stripes[stripe_of(sku)].lock().await
    }
}

fn stripe_of(sku: &str) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(sku);
    // Only the low bits matter; dropping the high ones on a 32-bit target is fine for a hash.
    (hash as usize) % STRIPES
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn one_sku_takes_turns_and_another_does_not_wait() {
        let gate = StockGate::default();
        let held = gate.turn("A-1").await;
        assert!(
            gate.turn("A-1").now_or_never().is_none(),
            "a second turn at the same SKU did not wait"
        );
        let other = (0..100)
            .map(|n| format!("B-{n}"))
            .find(|sku| stripe_of(sku) != stripe_of("A-1"))
            .unwrap();
        assert!(
            gate.turn(&other).now_or_never().is_some(),
            "another SKU waited for A-1"
        );
        drop(held);
        assert!(
            gate.turn("A-1").now_or_never().is_some(),
            "the turn was not given back"
        );
    }
}
