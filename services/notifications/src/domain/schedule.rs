//! When a failed attempt is tried again: the configured pauses, spread by jitter, never
//! sooner than a `Retry-After` the endpoint asked for (within a bound).

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// That was the last attempt.
    Fail,
}

/// The retry rules, from configuration.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    /// The pause before each attempt; the first is before the first attempt.
    pub pauses_ms: Vec<u64>,
    pub jitter_percent: u64,
    pub retry_after_max_ms: u64,
}

impl RetrySchedule {
    /// After `attempts` failed attempts (1 after the first), at `now`: `spread` in
    /// `-1.0..=1.0` picks where in the jitter band the pause lands; `retry_after_ms` is what
    /// the endpoint asked for.
    pub fn after_failure(
        &self,
        attempts: u32,
        now: i64,
        spread: f64,
        retry_after_ms: Option<u64>,
    ) -> AfterFailure {
        let Some(&pause) = self.pauses_ms.get(attempts as usize) else {
            return AfterFailure::Fail;
        };
        let band = pause as f64 * self.jitter_percent as f64 / 100.0;
        let jittered = (pause as f64 + band * spread.clamp(-1.0, 1.0)).max(0.0) as u64;
        let asked = retry_after_ms.map_or(0, |ms| ms.min(self.retry_after_max_ms));
        let wait = i64::try_from(jittered.max(asked)).unwrap_or(i64::MAX);
        AfterFailure::RetryAt(now.saturating_add(wait))
    }
}

/// A `Retry-After` value: delay seconds or an HTTP date, as milliseconds from `now_ms`.
pub fn retry_after_ms(value: &str, now_ms: i64) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
    u64::try_from(at_ms - now_ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            pauses_ms: vec![0, 5_000, 300_000],
            jitter_percent: 20,
            retry_after_max_ms: 60_000,
        }
    }

    #[test]
    fn pauses_follow_the_schedule_with_jitter_then_the_message_fails() {
        let s = schedule();
        assert_eq!(
            s.after_failure(1, 1_000, 0.0, None),
            AfterFailure::RetryAt(6_000)
        );
        assert_eq!(
            s.after_failure(1, 1_000, 1.0, None),
            AfterFailure::RetryAt(7_000)
        );
        assert_eq!(
            s.after_failure(1, 1_000, -1.0, None),
            AfterFailure::RetryAt(5_000)
        );
        assert_eq!(
            s.after_failure(2, 0, 0.0, None),
            AfterFailure::RetryAt(300_000)
        );
        assert_eq!(s.after_failure(3, 0, 0.0, None), AfterFailure::Fail);
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_bound() {
        let s = schedule();
        assert_eq!(
            s.after_failure(1, 0, 0.0, Some(30_000)),
            AfterFailure::RetryAt(30_000)
        );
        assert_eq!(
            s.after_failure(1, 0, 0.0, Some(1_000)),
            AfterFailure::RetryAt(5_000)
        );
        assert_eq!(
            s.after_failure(1, 0, 0.0, Some(86_400_000)),
            AfterFailure::RetryAt(60_000)
        );
        assert_eq!(retry_after_ms("120", 0), Some(120_000));
        assert_eq!(
            retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_470_000),
            Some(10_000)
        );
        assert_eq!(retry_after_ms("soon", 0), None);
    }
}
