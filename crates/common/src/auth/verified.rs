//! Tokens already verified, kept until they expire: a client sends the same bearer token
//! with every request, and checking its signature again (tens of microseconds for RS256)
//! would tell nothing new. Only a token that passed every check is kept, keyed by its whole
//! text, and only until its `exp` (plus the leeway the checks allow).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use super::Principal;

/// Shards, so that actix's workers rarely wait on one another.
const SHARDS: usize = 16;
/// Tokens kept per shard; a full shard first drops what expired, then everything.
const PER_SHARD: usize = 256;

struct Verified {
    principal: Arc<Principal>,
    /// Unix seconds after which the token is no longer accepted.
    good_until: u64,
}

pub(super) struct VerifiedTokens {
    shards: Vec<Mutex<HashMap<Box<str>, Verified>>>,
    hasher: RandomState,
}

impl VerifiedTokens {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, token: &str) -> &Mutex<HashMap<Box<str>, Verified>> {
        let index = self.hasher.hash_one(token) as usize % SHARDS;
        &self.shards[index]
    }

    /// The principal of `token` if it was verified and is still good at `now`.
    pub(super) fn get(&self, token: &str, now: u64) -> Option<Arc<Principal>> {
        let shard = self.shard(token).lock().ok()?;
        let verified = shard.get(token)?;
        (now <= verified.good_until).then(|| verified.principal.clone())
    }

    pub(super) fn put(&self, token: &str, principal: Arc<Principal>, good_until: u64, now: u64) {
        let Ok(mut shard) = self.shard(token).lock() else {
            return;
        };
        if shard.len() >= PER_SHARD {
            shard.retain(|_, verified| verified.good_until >= now);
            if shard.len() >= PER_SHARD {
                shard.clear();
            }
        }
        shard.insert(
            token.into(),
            Verified {
                principal,
                good_until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str) -> Arc<Principal> {
        Arc::new(Principal {
            subject: subject.into(),
            scopes: Default::default(),
        })
    }

    #[test]
    fn a_token_is_kept_until_it_expires_and_no_longer() {
        let tokens = VerifiedTokens::new();
        tokens.put("t", principal("a"), 100, 50);
        assert_eq!(tokens.get("t", 100).unwrap().subject, "a");
        assert!(tokens.get("t", 101).is_none());
        assert!(tokens.get("other", 50).is_none());
    }

    #[test]
    fn a_full_shard_makes_room() {
        let tokens = VerifiedTokens::new();
        for n in 0..(SHARDS * PER_SHARD * 4) {
            tokens.put(&format!("t{n}"), principal("a"), 100, 50);
        }
        let kept: usize = tokens.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(kept <= SHARDS * PER_SHARD);
        tokens.put("fresh", principal("b"), 100, 50);
        assert_eq!(tokens.get("fresh", 60).unwrap().subject, "b");
    }
}
