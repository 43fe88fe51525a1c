//! The key directory: this node's in-memory copy of every key in the store (hash to key id,
//! account, kind, revoked), so that authentication needs no store call, and while Redis is
//! unreachable every `fk_test_` key is served by whichever worker or node receives it (SPEC §13),
//! not only where it was cached.
//!
//! This file is the directory and its messages; the store's calls on it (lookup, the full
//! sync) are in `accounts`. Kept current three ways: a key created or revoked through this node is written here at
//! once; one created or revoked through another node arrives on the `keys` and `revocations`
//! channels (the subscriber thread applies it); and a full sync (`SCAN` of every master) at
//! start-up and every `KEY_DIRECTORY_SYNC_INTERVAL_MS` repairs anything a lost message missed.
//! Keys are never deleted, only revoked, so a sync only adds and updates.
//!
//! It holds every key, live and test: a worker whose key cache misses asks the directory, not
//! the store (SPEC §13: authentication needs no store round trip on the hot path), and while
//! the store is down it is the only place a key can be recognised. It is trusted on the hot
//! path only while `synced` (a full read completed since the subscription last started; until
//! then a missed revocation message could hide there), and workers reach it at most once per key
//! per cache TTL, so its lock is rarely taken and never held across an await. It never sees a plain key, only SHA-256 hashes.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::limits::KEY_DIRECTORY_MAX_KEYS;
use crate::store::types::{KeyHash, KeyKind, KeyRecord};

/// The directory itself: test keys by hash.
#[derive(Default)]
pub(super) struct KeyDirectory {
    keys: RwLock<HashMap<KeyHash, KeyRecord>>,
    /// A full read completed since the key channels were last (re)subscribed.
    synced: AtomicBool,
    /// Bumped by every (re)subscription: a full read that started before it proves nothing.
    epoch: AtomicU64,
}

impl KeyDirectory {
    /// The record of `hash` as this node knows it, synced or not (for when the store is down).
    pub fn lookup(&self, hash: &KeyHash) -> Option<KeyRecord> {
        self.keys.read().ok()?.get(hash).cloned()
    }

    /// The record of `hash` if the directory may stand in for the store now (it is synced).
    pub fn lookup_synced(&self, hash: &KeyHash) -> Option<KeyRecord> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        self.lookup(hash)
    }

    /// Whether a full read completed since the channels were last subscribed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Messages may have been missed (a new subscription): distrust until the next full read.
    pub fn mark_unsynced(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.synced.store(false, Ordering::Release);
    }

    /// The subscription epoch a full read starts in.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A full read that started in `epoch` completed: trusted, unless a new subscription began
    /// meanwhile (its missed messages may predate what the read saw).
    pub fn mark_synced_since(&self, epoch: u64) {
        if self.epoch() == epoch {
            self.synced.store(true, Ordering::Release);
        }
    }

    /// Adds or updates a key. A revocation already known stays: a revoked key is never made
    /// usable again by a late or replayed creation message. Returns whether workers may hold a
    /// stale copy: it replaced a different record of the key (its cap changed, say), or the
    /// directory cannot tell (full, or a capped key it did not know). A new uncapped key, or a
    /// repeated message, returns false.
    pub fn remember(&self, hash: KeyHash, record: KeyRecord) -> bool {
        let Ok(mut keys) = self.keys.write() else { return true };
        if keys.len() >= KEY_DIRECTORY_MAX_KEYS && !keys.contains_key(&hash) {
            crate::log_warn_every!(
                "the key directory is full ({KEY_DIRECTORY_MAX_KEYS} keys); newer keys are read from the store"
            );
            return true;
        }
        let revoked = record.revoked || keys.get(&hash).is_some_and(|known| known.revoked);
        let record = KeyRecord { revoked, ..record };
        let capped = record.spend_cap.is_some();
        match keys.insert(hash, record.clone()) {
            Some(earlier) => earlier != record,
            None => capped,
        }
    }

    /// Marks the key with this id revoked (a linear walk: revocations are rare).
    pub fn revoke(&self, key_id: &str) {
        let Ok(mut keys) = self.keys.write() else { return };
        for record in keys.values_mut().filter(|record| &*record.key_id == key_id) {
            record.revoked = true;
        }
    }

    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |keys| keys.len())
    }
}

/// A `keys` channel message: `HEX KEY_ID ACCOUNT_ID KIND[ NAME]` for a new or changed key (64
/// hex digits of its hash, kind `l` or `t`, followed by `,CAP_NANOS,PERIOD` when the key has a
/// spend cap; ids never hold spaces, the name, last, may). Without the name a node that learned
/// the key from the channel would show it unnamed (`GET /v1/account`).
pub(super) fn creation_message(hash: &KeyHash, record: &KeyRecord) -> String {
    let kind = if record.kind == KeyKind::Live { "l" } else { "t" };
    let kind = match record.spend_cap {
        Some(cap) => format!("{kind},{},{}", cap.limit.0, cap.period.letter()),
        None => kind.to_string(),
    };
    match &record.name {
        Some(name) if !name.is_empty() => {
            format!("{} {} {} {kind} {name}", hex(hash), record.key_id, record.account_id)
        }
        _ => format!("{} {} {} {kind}", hex(hash), record.key_id, record.account_id),
    }
}

/// The key a `keys` channel message announces, if it is well formed.
pub(super) fn parse_creation_message(message: &[u8]) -> Option<(KeyHash, KeyRecord)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.splitn(5, ' ');
    let (hash, key_id, account_id, kind) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let name = parts.next();
    let (kind, spend_cap) = match kind.split_once(',') {
        Some((kind, cap)) => {
            let (limit, period) = cap.split_once(',')?;
            (kind, Some(super::replies::cap_of(Some(limit), Some(period))?))
        }
        None => (kind, None),
    };
    let kind = match kind {
        "l" => KeyKind::Live,
        "t" => KeyKind::Test,
        _ => return None,
    };
    if key_id.is_empty() || account_id.is_empty() {
        return None;
    }
    // An empty name is none, as in the stored record.
    let name = name.filter(|name| !name.is_empty()).map(Into::into);
    let record =
        KeyRecord { key_id: key_id.into(), account_id: account_id.into(), kind, name, revoked: false, spend_cap };
    Some((parse_hex(hash)?, record))
}

pub(super) fn hex(hash: &KeyHash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(64);
    for byte in hash {
        text.push(DIGITS[(byte >> 4) as usize] as char);
        text.push(DIGITS[(byte & 0xf) as usize] as char);
    }
    text
}

pub(super) fn parse_hex(text: &str) -> Option<KeyHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut hash = [0u8; 32];
    for (index, pair) in bytes.chunks(2).enumerate() {
        hash[index] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key_id: &str, kind: KeyKind, revoked: bool) -> KeyRecord {
        KeyRecord { key_id: key_id.into(), account_id: "acct_1".into(), kind, name: None, revoked, spend_cap: None }
    }

    // Goal: creation messages round-trip exactly and malformed ones are refused.
    #[test]
    fn creation_messages_round_trip() {
        let hash: KeyHash = std::array::from_fn(|i| (i * 37) as u8);
        let message = creation_message(&hash, &record("key_9", KeyKind::Test, false));
        assert_eq!(message.len(), 64 + 1 + 5 + 1 + 6 + 2);
        assert_eq!(parse_creation_message(message.as_bytes()), Some((hash, record("key_9", KeyKind::Test, false))));
        let live = record("key_8", KeyKind::Live, false);
        assert_eq!(parse_creation_message(creation_message(&hash, &live).as_bytes()), Some((hash, live)));
        // A name travels last, spaces and all.
        let named = KeyRecord { name: Some("ci runner 2".into()), ..record("key_7", KeyKind::Live, false) };
        let message = creation_message(&hash, &named);
        assert!(message.ends_with(" l ci runner 2"), "{message}");
        assert_eq!(parse_creation_message(message.as_bytes()), Some((hash, named)));
        // A spend cap travels with the kind.
        let cap = crate::store::types::SpendCap {
            limit: crate::money::Nanos(5_000_000_001),
            period: crate::store::types::CapPeriod::Month,
        };
        let capped = KeyRecord { spend_cap: Some(cap), ..record("key_6", KeyKind::Live, false) };
        let message = creation_message(&hash, &capped);
        assert!(message.ends_with(" l,5000000001,m"), "{message}");
        assert_eq!(parse_creation_message(message.as_bytes()), Some((hash, capped)));
        for bad in ["", "zz key acct t", &format!("{} key acct", hex(&hash)), &format!("{} key acct x", hex(&hash))] {
            assert_eq!(parse_creation_message(bad.as_bytes()), None, "{bad}");
        }
    }

    // Goal: every key is kept; a revocation sticks even if the creation is replayed; the hot
    // path trusts the directory only while synced.
    #[test]
    fn remembers_keys_and_revocations() {
        let directory = KeyDirectory::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        directory.remember(a, record("key_a", KeyKind::Test, false));
        directory.remember(b, record("key_b", KeyKind::Live, false));
        assert_eq!(directory.lookup(&a), Some(record("key_a", KeyKind::Test, false)));
        assert_eq!(directory.lookup(&b), Some(record("key_b", KeyKind::Live, false)));
        assert_eq!(directory.lookup_synced(&b), None, "not synced yet");
        let epoch = directory.epoch();
        directory.mark_synced_since(epoch);
        assert_eq!(directory.lookup_synced(&b), Some(record("key_b", KeyKind::Live, false)));
        directory.mark_unsynced();
        assert_eq!(directory.lookup_synced(&b), None);
        // A read that began before the new subscription does not make it trusted.
        directory.mark_synced_since(epoch);
        assert_eq!(directory.lookup_synced(&b), None);
        directory.revoke("key_a");
        directory.remember(a, record("key_a", KeyKind::Test, false));
        assert_eq!(directory.lookup(&a), Some(record("key_a", KeyKind::Test, true)));
        assert_eq!(directory.len(), 2);
    }

    // Goal: workers are told to drop cached records only when one may be stale: a changed
    // record (a new cap) or a capped key the directory did not know; never for a new uncapped
    // key or a repeated message (each drop costs every worker a store read per key).
    #[test]
    fn remember_says_when_cached_records_may_be_stale() {
        let directory = KeyDirectory::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(!directory.remember(a, record("key_a", KeyKind::Live, false)), "a new uncapped key");
        assert!(!directory.remember(a, record("key_a", KeyKind::Live, false)), "the same message again");
        let cap = crate::store::types::SpendCap {
            limit: crate::money::Nanos(1_000),
            period: crate::store::types::CapPeriod::Day,
        };
        let capped = KeyRecord { spend_cap: Some(cap), ..record("key_a", KeyKind::Live, false) };
        assert!(directory.remember(a, capped.clone()), "the cap changed");
        assert!(!directory.remember(a, capped.clone()), "the same cap again");
        assert!(directory.remember(a, record("key_a", KeyKind::Live, false)), "the cap was cleared");
        let new_capped = KeyRecord { spend_cap: Some(cap), ..record("key_b", KeyKind::Live, false) };
        assert!(directory.remember(b, new_capped), "a capped key not known before");
    }
}
