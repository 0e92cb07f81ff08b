//! When a timer is due: the latest time its schedule names that has not run yet.

/// The scheduled time to run now, if any: the latest occurrence at or before `now_ms` that
/// is after `last_ms` (several missed while nothing ran are one run). Without a `last_ms`
/// (a timer never seen before) nothing was missed: the first run is the next occurrence.
pub fn due(latest_at_or_before_now: Option<i64>, last_ms: Option<i64>) -> Option<i64> {
    match (latest_at_or_before_now, last_ms) {
        (Some(latest), Some(last)) if latest > last => Some(latest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_occurrences_run_once_and_a_new_timer_waits_for_its_first() {
        assert_eq!(due(Some(3_000), Some(1_000)), Some(3_000));
        assert_eq!(due(Some(3_000), Some(3_000)), None);
        assert_eq!(due(Some(3_000), None), None);
        assert_eq!(due(None, Some(1_000)), None);
    }
}
