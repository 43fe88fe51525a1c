//! The key directory: this node's in-memory copy of every test key in the store (hash to key
//! id, account, revoked), so that while Redis is unreachable a `fk_test_` key is served by
//! whichever worker or node receives it (SPEC §13), not only where it was cached.
//!
//! This file is the directory and its messages; the store's calls on it (lookup, the full
//! sync) are in `accounts`. Kept current three ways: a key created or revoked through this node is written here at
//! once; one created or revoked through another node arrives on the `keys` and `revocations`
//! channels (the subscriber thread applies it); and a full sync (`SCAN` of every master) at
//! start-up and every `KEY_DIRECTORY_SYNC_INTERVAL_MS` repairs anything a lost message missed.
//! Keys are never deleted, only revoked, so a sync only adds and updates.
//!
//! Only test keys are kept: paid requests fail closed while the store is down whatever the key
//! (the wallet lives in the store), so a live key here would serve nothing. It is consulted
//! only on the failure path (the store did not answer), never on the hot path; its lock is
//! never held across an await. It never sees a plain key, only SHA-256 hashes.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::limits::KEY_DIRECTORY_MAX_KEYS;
use crate::store::types::{KeyHash, KeyKind, KeyRecord};

/// The directory itself: test keys by hash.
#[derive(Default)]
pub(super) struct KeyDirectory {
    keys: RwLock<HashMap<KeyHash, KeyRecord>>,
}

impl KeyDirectory {
    /// The record of `hash`, if it is a test key this node knows.
    pub fn lookup(&self, hash: &KeyHash) -> Option<KeyRecord> {
        self.keys.read().ok()?.get(hash).cloned()
    }

    /// Adds or updates a key (live keys are ignored). A revocation already known stays: a
    /// revoked key is never made usable again by a late or replayed creation message.
    pub fn remember(&self, hash: KeyHash, record: KeyRecord) {
        if record.kind != KeyKind::Test {
            return;
        }
        let Ok(mut keys) = self.keys.write() else { return };
        if keys.len() >= KEY_DIRECTORY_MAX_KEYS && !keys.contains_key(&hash) {
            crate::log_warn_every!(
                "the key directory is full ({KEY_DIRECTORY_MAX_KEYS} test keys); newer keys are not served while the store is down"
            );
            return;
        }
        let revoked = record.revoked || keys.get(&hash).is_some_and(|known| known.revoked);
        keys.insert(hash, KeyRecord { revoked, ..record });
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

/// A `keys` channel message: `HEX KEY_ID ACCOUNT_ID` for a new test key (64 hex digits of its
/// hash; ids never hold spaces).
pub(super) fn creation_message(hash: &KeyHash, record: &KeyRecord) -> String {
    format!("{} {} {}", hex(hash), record.key_id, record.account_id)
}

/// The key a `keys` channel message announces, if it is well formed.
pub(super) fn parse_creation_message(message: &[u8]) -> Option<(KeyHash, KeyRecord)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.split(' ');
    let (hash, key_id, account_id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || key_id.is_empty() || account_id.is_empty() {
        return None;
    }
    let record = KeyRecord {
        key_id: key_id.into(),
        account_id: account_id.into(),
        kind: KeyKind::Test,
        name: None,
        revoked: false,
    };
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
        KeyRecord { key_id: key_id.into(), account_id: "acct_1".into(), kind, name: None, revoked }
    }

    // Goal: creation messages round-trip exactly and malformed ones are refused.
    #[test]
    fn creation_messages_round_trip() {
        let hash: KeyHash = std::array::from_fn(|i| (i * 37) as u8);
        let message = creation_message(&hash, &record("key_9", KeyKind::Test, false));
        assert_eq!(message.len(), 64 + 1 + 5 + 1 + 6);
        assert_eq!(parse_creation_message(message.as_bytes()), Some((hash, record("key_9", KeyKind::Test, false))));
        for bad in ["", "zz key acct", &format!("{} key", hex(&hash)), &format!("{} key acct extra", hex(&hash))] {
            assert_eq!(parse_creation_message(bad.as_bytes()), None, "{bad}");
        }
    }

    // Goal: only test keys are kept; a revocation sticks even if the creation is replayed.
    #[test]
    fn remembers_test_keys_and_revocations() {
        let directory = KeyDirectory::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        directory.remember(a, record("key_a", KeyKind::Test, false));
        directory.remember(b, record("key_b", KeyKind::Live, false));
        assert_eq!(directory.lookup(&a), Some(record("key_a", KeyKind::Test, false)));
        assert_eq!(directory.lookup(&b), None);
        directory.revoke("key_a");
        directory.remember(a, record("key_a", KeyKind::Test, false));
        assert_eq!(directory.lookup(&a), Some(record("key_a", KeyKind::Test, true)));
        assert_eq!(directory.len(), 1);
    }
}
