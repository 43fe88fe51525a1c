//! One worker's memory of presented keys the store did not know: a repeat of an unknown key is
//! refused (401) without hashing it or asking the store.
//!
//! Entries are keyed by the presented key's own bytes and compared in full, so an entry can only
//! ever refuse the very key that was refused. An unknown key is no secret (it opens nothing),
//! but it is still never logged. An entry is trusted exactly as long as a cached key record
//! would be (`KEY_CACHE_TTL_MS`, and only while the store's revocation generation is the one it
//! was written under), so a key created after it was refused starts working as soon as it does
//! without this memory.
//!
//! The table is a fixed array of `REFUSED_KEY_CACHE_ENTRIES` slots, allocated once when the
//! worker starts; slots are picked by a cheap multiplicative hash seeded at random per worker,
//! two candidates per key. A slot's choice only decides what is remembered, never what is
//! answered (keys are compared in full), so colliding keys can at worst cost each other a
//! store lookup, which a flood of random keys costs anyway. A flood only overwrites slots of
//! this table: it never allocates and never evicts a known key from the key cache
//! (`auth::KeyCache`), which holds known keys only. It never decides that a key is valid.

use std::hash::BuildHasher;

use crate::access::auth::KEY_LEN;
use crate::limits::{KEY_CACHE_TTL_MS, REFUSED_KEY_CACHE_ENTRIES};

const _: () = assert!(REFUSED_KEY_CACHE_ENTRIES.is_power_of_two() && REFUSED_KEY_CACHE_ENTRIES >= 2);
// The slot hash reads the key as whole words.
const _: () = assert!(KEY_LEN.is_multiple_of(8));

/// One remembered refusal. An all-zero key marks an empty slot (a well-formed key never is).
#[derive(Copy, Clone)]
struct Slot {
    key: [u8; KEY_LEN],
    refused_at_ms: u64,
    /// The store's revocation generation when the store said "unknown".
    generation: u64,
}

const EMPTY: Slot = Slot { key: [0; KEY_LEN], refused_at_ms: 0, generation: 0 };

/// Presented keys recently found unknown, on one worker. Never shared between threads.
pub struct RefusedKeys {
    slots: Box<[Slot]>,
    /// Random per worker, so which keys share slots cannot be known from outside.
    seed: u64,
}

impl Default for RefusedKeys {
    fn default() -> RefusedKeys {
        RefusedKeys {
            slots: vec![EMPTY; REFUSED_KEY_CACHE_ENTRIES].into_boxed_slice(),
            seed: std::collections::hash_map::RandomState::new().hash_one(0u64),
        }
    }
}

impl RefusedKeys {
    /// The two slots `key` may live in (neighbours: one cache line pair).
    fn candidates(&self, key: &[u8; KEY_LEN]) -> [usize; 2] {
        const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut hash = self.seed;
        for word in key.chunks_exact(8) {
            let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
            hash = (hash ^ word).wrapping_mul(MULTIPLIER).rotate_left(29);
        }
        let first = (hash.wrapping_mul(MULTIPLIER) >> 32) as usize & (REFUSED_KEY_CACHE_ENTRIES - 1);
        [first, first ^ 1]
    }

    /// Whether `key` was found unknown less than `KEY_CACHE_TTL_MS` ago under `generation`.
    pub fn contains(&self, key: &[u8], now_ms: u64, generation: u64) -> bool {
        let Ok(key) = <&[u8; KEY_LEN]>::try_from(key) else {
            return false;
        };
        self.candidates(key).iter().any(|&index| {
            let slot = &self.slots[index];
            slot.key == *key && fresh(slot, now_ms, generation)
        })
    }

    /// Remembers that the store did not know `key` at `now_ms`, under `generation`.
    pub fn remember(&mut self, key: &[u8], now_ms: u64, generation: u64) {
        let Ok(bytes) = <[u8; KEY_LEN]>::try_from(key) else {
            return;
        };
        let [first, second] = self.candidates(&bytes);
        // The key's own slot, else a stale or empty one, else the older of the two.
        let index = if self.slots[second].key == bytes
            || (self.slots[first].key != bytes
                && (!fresh(&self.slots[second], now_ms, generation)
                    || (fresh(&self.slots[first], now_ms, generation)
                        && self.slots[second].refused_at_ms < self.slots[first].refused_at_ms)))
        {
            second
        } else {
            first
        };
        self.slots[index] = Slot { key: bytes, refused_at_ms: now_ms, generation };
    }
}

/// Whether `slot` holds a refusal still to be trusted at `now_ms` under `generation`.
fn fresh(slot: &Slot, now_ms: u64, generation: u64) -> bool {
    slot.key[0] != 0
        && slot.generation == generation
        && now_ms >= slot.refused_at_ms
        && now_ms - slot.refused_at_ms < KEY_CACHE_TTL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Vec<u8> {
        format!("fk_live_{n:0>32}").into_bytes()
    }

    // Goal: a refusal is remembered for exactly the key cache's TTL, under its generation only.
    #[test]
    fn honours_ttl_and_generation() {
        let mut refused = RefusedKeys::default();
        let unknown = key(1);
        assert!(!refused.contains(&unknown, 1_000, 0));
        refused.remember(&unknown, 1_000, 0);
        assert!(refused.contains(&unknown, 1_000, 0));
        assert!(refused.contains(&unknown, 1_000 + KEY_CACHE_TTL_MS - 1, 0));
        assert!(!refused.contains(&unknown, 1_000 + KEY_CACHE_TTL_MS, 0));
        // A revocation, a changed key or a resubscription anywhere: ask the store again.
        assert!(!refused.contains(&unknown, 1_001, 1));
        // A clock that went back never extends an entry.
        assert!(!refused.contains(&unknown, 999, 0));
    }

    // Goal: only the very key refused is refused: keys differing in one byte, or of another
    // length, are not.
    #[test]
    fn compares_the_whole_key() {
        let mut refused = RefusedKeys::default();
        let unknown = key(7);
        refused.remember(&unknown, 10, 0);
        let mut other = unknown.clone();
        other[KEY_LEN - 1] = b'8';
        assert!(!refused.contains(&other, 10, 0));
        let mut test_kind = unknown.clone();
        test_kind[3..7].copy_from_slice(b"test");
        assert!(!refused.contains(&test_kind, 10, 0));
        assert!(!refused.contains(&unknown[..KEY_LEN - 1], 10, 0));
        assert!(!refused.contains(&[0u8; KEY_LEN], 10, 0));
        assert!(refused.contains(&unknown, 10, 0));
    }

    // Goal: a flood of distinct keys stays within the fixed table (no growth) and the most
    // recent refusals stay remembered; every key refused is still refused right after.
    #[test]
    fn a_flood_stays_bounded() {
        let mut refused = RefusedKeys::default();
        let flood = REFUSED_KEY_CACHE_ENTRIES * 4;
        for n in 0..flood {
            let unknown = key(n);
            refused.remember(&unknown, 100, 0);
            assert!(refused.contains(&unknown, 100, 0), "key {n} not remembered");
        }
        assert_eq!(refused.slots.len(), REFUSED_KEY_CACHE_ENTRIES);
        let remembered = (0..flood).filter(|&n| refused.contains(&key(n), 100, 0)).count();
        assert!(remembered <= REFUSED_KEY_CACHE_ENTRIES);
        assert!(remembered >= REFUSED_KEY_CACHE_ENTRIES / 2, "only {remembered} remembered");
    }

    // Goal: remembering a key again refreshes its one entry instead of taking a second slot.
    #[test]
    fn a_repeat_refreshes_its_entry() {
        let mut refused = RefusedKeys::default();
        let unknown = key(3);
        refused.remember(&unknown, 0, 0);
        refused.remember(&unknown, KEY_CACHE_TTL_MS - 1, 0);
        assert!(refused.contains(&unknown, KEY_CACHE_TTL_MS + 5, 0));
        let copies = refused.slots.iter().filter(|slot| slot.key[..] == unknown[..]).count();
        assert_eq!(copies, 1);
    }
}
