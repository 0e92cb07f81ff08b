//! What this process asked of its store and bus, by kind of operation: the figures a cost
//! estimate starts from (the saga benchmark prints them per order; `docs/cost.md` turns them
//! into request units and money). Every adapter counts: the embedded ones do one operation
//! where Cosmos DB or Service Bus would bill one.

use std::sync::atomic::{AtomicU64, Ordering};

/// Operations by kind, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Point reads (`read_many` counts each item).
    pub point_reads: u64,
    /// Queries, one per page.
    pub queries: u64,
    /// Change-feed reads, one per page asked for (empty ones too).
    pub change_reads: u64,
    /// Items created, replaced, upserted or deleted (a batch counts each operation).
    pub writes: u64,
    /// Serialized size of the items written.
    pub written_bytes: u64,
    /// Messages published (one send each).
    pub published: u64,
    /// Messages received (Service Bus's REST receive takes one per call).
    pub received: u64,
    /// Receives that found nothing (on Service Bus, each a billed call).
    pub empty_receives: u64,
    /// Completions, abandons and dead-letterings.
    pub settled: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            point_reads: self.point_reads - earlier.point_reads,
            queries: self.queries - earlier.queries,
            change_reads: self.change_reads - earlier.change_reads,
            writes: self.writes - earlier.writes,
            written_bytes: self.written_bytes - earlier.written_bytes,
            published: self.published - earlier.published,
            received: self.received - earlier.received,
            empty_receives: self.empty_receives - earlier.empty_receives,
            settled: self.settled - earlier.settled,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Counted {
    PointReads,
    Queries,
    ChangeReads,
    Writes,
    WrittenBytes,
    Published,
    Received,
    EmptyReceives,
    Settled,
}

static COUNTS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

pub(crate) fn count(kind: Counted, n: u64) {
    COUNTS[kind as usize].fetch_add(n, Ordering::Relaxed);
}

/// The counts so far.
pub fn usage() -> Usage {
    let get = |kind: Counted| COUNTS[kind as usize].load(Ordering::Relaxed);
    Usage {
        point_reads: get(Counted::PointReads),
        queries: get(Counted::Queries),
        change_reads: get(Counted::ChangeReads),
        writes: get(Counted::Writes),
        written_bytes: get(Counted::WrittenBytes),
        published: get(Counted::Published),
        received: get(Counted::Received),
        empty_receives: get(Counted::EmptyReceives),
        settled: get(Counted::Settled),
    }
}
