//! Type rules kept to what a subscriber wants now, for a subscription made `types_by_rule`
//! (notifications: the event types its webhook endpoints ask for), so that the broker drops
//! what nobody wants instead of every instance receiving, reading and completing it.
//!
//! A rule is named after its types and the ten-minute period it was added in
//! (`wants-<hash>-<period>`), and never changes. Asking for types adds the rule of the
//! current period before the wish is committed (a change that asks for nothing new adds a
//! rule that exists already, which costs nothing). Instances only ever add rules, except
//! [`reconcile`], which reads every wish first and then removes a rule that is either
//! superseded by a newer rule of the same types, or wanted by none and from two periods ago
//! or older. A rule that a wish committed after that read relies on was added in the read's
//! period or later (see [`ask`]), so it is never one of them: every event published after a
//! wish was committed (and answered) is let in.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{BusError, EventBus};
use crate::clock::now_ms;

const PREFIX: &str = "wants-";

/// How long a rule is the one added for its types.
pub const PERIOD: Duration = Duration::from_secs(600);

/// A reconcile that took longer than this between reading the wishes and removing rules
/// removes nothing (what it read may be stale by a period).
const MAX_PASS: Duration = Duration::from_secs(60);

/// A rule both adapters take: a name Service Bus takes, and at least one type.
pub fn check_rule(name: &str, event_types: &[String]) -> Result<(), BusError> {
    check_name(name)?;
    if event_types.is_empty() {
        return Err(BusError::Rejected(
            "a type rule names at least one type".into(),
        ));
    }
    Ok(())
}

/// What Service Bus takes as a rule name, which the embedded bus holds to as well.
fn check_name(name: &str) -> Result<(), BusError> {
    let fits = !name.is_empty()
        && name.len() <= 50
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if fits {
        Ok(())
    } else {
        Err(BusError::Rejected(
            format!("{name:?} is not a rule name (letters, digits, -, . and _; at most 50)").into(),
        ))
    }
}

fn period(at_ms: i64) -> i64 {
    at_ms.div_euclid(PERIOD.as_millis() as i64)
}

/// The types sorted and each once; `None` when there are none.
fn normalized(event_types: &[String]) -> Option<Vec<String>> {
    let set: BTreeSet<&String> = event_types.iter().collect();
    (!set.is_empty()).then(|| set.into_iter().cloned().collect())
}

fn hash(types: &[String]) -> String {
    let digest = Sha256::digest(types.join("\n").as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn name(hash: &str, period: i64) -> String {
    format!("{PREFIX}{hash}-{period}")
}

/// The rule that lets `event_types` in, as added at `at_ms`.
pub fn rule_name(event_types: &[String], at_ms: i64) -> Option<String> {
    normalized(event_types).map(|types| name(&hash(&types), period(at_ms)))
}

/// A rule's types hash and period, when it is one of these rules.
fn parse(name: &str) -> Option<(&str, i64)> {
    let (hash, period) = name.strip_prefix(PREFIX)?.split_once('-')?;
    Some((hash, period.parse().ok()?))
}

/// What to change so that a subscription whose rules are `present` lets in each of `wanted`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Vec<(String, Vec<String>)>,
    pub remove: Vec<String>,
}

/// The plan for `present` rules and the `wanted` type sets as read at `read_at_ms`.
pub fn plan(present: &[String], wanted: &[Vec<String>], read_at_ms: i64) -> Plan {
    let wanted: HashMap<String, Vec<String>> = wanted
        .iter()
        .filter_map(|types| normalized(types))
        .map(|types| (hash(&types), types))
        .collect();
    let ours: Vec<(&String, &str, i64)> = present
        .iter()
        .filter_map(|name| parse(name).map(|(hash, period)| (name, hash, period)))
        .collect();
    let newest = |of: &str| {
        ours.iter()
            .filter(|(_, hash, _)| *hash == of)
            .map(|(_, _, period)| *period)
            .max()
    };
    let now = period(read_at_ms);
    let mut plan = Plan::default();
    for (hash, types) in &wanted {
        if newest(hash).is_none() {
            plan.add.push((name(hash, now), types.clone()));
        }
    }
    for (name, hash, period) in &ours {
        let superseded = newest(hash).is_some_and(|newest| newest > *period);
        let unwanted_and_old = !wanted.contains_key(*hash) && *period <= now - 2;
        if (wanted.contains_key(*hash) && superseded) || unwanted_and_old {
            plan.remove.push((*name).clone());
        }
    }
    plan.add.sort();
    plan.remove.sort();
    plan
}

/// Lets `event_types` in from now on: call before committing the wish that asks for them,
/// and [`asked`] after.
pub async fn ask(
    bus: &dyn EventBus,
    topic: &str,
    subscription: &str,
    event_types: &[String],
) -> Result<Asked, BusError> {
    let at = now_ms();
    if let Some(name) = rule_name(event_types, at) {
        bus.add_type_rule(topic, subscription, &name, event_types)
            .await?;
    }
    Ok(Asked { period: period(at) })
}

/// When [`ask`] added its rule.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    period: i64,
}

/// After the wish was committed: when that happened a period after the rule was added, a
/// [`reconcile`] that read the wishes before the commit may remove the rule, so the
/// current one is added.
pub async fn asked(
    asked: Asked,
    bus: &dyn EventBus,
    topic: &str,
    subscription: &str,
    event_types: &[String],
) -> Result<(), BusError> {
    if period(now_ms()) != asked.period {
        ask(bus, topic, subscription, event_types).await?;
    }
    Ok(())
}

/// Makes the subscription's rules those `wanted` (read from where the wishes are kept at
/// `read_at_ms`, just before): adds what is missing, removes what is superseded or old and
/// unwanted. Returns the plan carried out.
pub async fn reconcile(
    bus: &dyn EventBus,
    topic: &str,
    subscription: &str,
    wanted: &[Vec<String>],
    read_at_ms: i64,
) -> Result<Plan, BusError> {
    let present = bus.type_rules(topic, subscription).await?;
    let mut plan = plan(&present, wanted, read_at_ms);
    for (name, types) in &plan.add {
        bus.add_type_rule(topic, subscription, name, types).await?;
    }
    if now_ms() - read_at_ms > MAX_PASS.as_millis() as i64 {
        plan.remove.clear();
    }
    for name in &plan.remove {
        bus.remove_type_rule(topic, subscription, name).await?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    const PERIOD_MS: i64 = 600_000;

    #[test]
    fn a_rule_is_named_after_its_types_whatever_their_order_and_its_period() {
        let at = 1_000 * PERIOD_MS + 5;
        let one = rule_name(&types(&["b.v1", "a.v1", "a.v1"]), at).unwrap();
        assert_eq!(one, rule_name(&types(&["a.v1", "b.v1"]), at).unwrap());
        assert!(one.starts_with("wants-") && one.ends_with("-1000"), "{one}");
        assert!(check_name(&one).is_ok());
        assert_ne!(one, rule_name(&types(&["a.v1"]), at).unwrap());
        assert_eq!(rule_name(&[], at), None);
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(51)).is_err());
    }

    #[test]
    fn what_is_wanted_and_missing_is_added_in_the_current_period() {
        let now = 50 * PERIOD_MS;
        let plan = plan(&[], &[types(&["a.v1"]), types(&["a.v1"]), vec![]], now);
        assert_eq!(
            plan.add,
            vec![(rule_name(&types(&["a.v1"]), now).unwrap(), types(&["a.v1"]))]
        );
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn an_unwanted_rule_goes_only_from_two_periods_back() {
        let now = 50 * PERIOD_MS;
        let last_period = rule_name(&types(&["a.v1"]), now - PERIOD_MS).unwrap();
        let older = rule_name(&types(&["b.v1"]), now - 2 * PERIOD_MS).unwrap();
        let present = vec![last_period.clone(), older.clone(), "not-ours".to_owned()];
        let plan = plan(&present, &[], now);
        assert_eq!(plan.remove, vec![older]);
        assert!(plan.add.is_empty());
    }

    #[test]
    fn a_wanted_rule_stays_unless_a_newer_one_has_its_types() {
        let now = 50 * PERIOD_MS;
        let wanted = [types(&["a.v1"])];
        let old = rule_name(&wanted[0], now - 9 * PERIOD_MS).unwrap();
        assert_eq!(
            plan(std::slice::from_ref(&old), &wanted, now),
            Plan::default()
        );
        let newer = rule_name(&wanted[0], now).unwrap();
        let plan = plan(&[old.clone(), newer], &wanted, now);
        assert_eq!(plan.remove, vec![old]);
        assert!(plan.add.is_empty());
    }
}
