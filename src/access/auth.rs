//! API keys: their format, generation, hashing, the `Authorization` header, and the per-worker
//! cache of key records.
//!
//! A key is `fk_live_` or `fk_test_` followed by 32 base62 characters from the OS CSPRNG. Only
//! its SHA-256 leaves this module; the plain key is shown once, at creation, and never logged,
//! echoed in an error, or stored. Each worker caches the records of known keys by hash for at
//! most `KEY_CACHE_TTL_MS`, and drops its whole cache the moment the store's revocation
//! generation changes, so a revoked key stops working at once on this node. Keys the store did
//! not know are remembered apart (`access::refused_keys`), so a flood of them never evicts a
//! known key.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::errors::{ApiError, ErrorKind};
use crate::limits::{KEY_CACHE_MAX_ENTRIES, KEY_CACHE_TTL_MS};
use crate::store::{KeyHash, KeyKind, KeyRecord};

pub const LIVE_PREFIX: &str = "fk_live_";
pub const TEST_PREFIX: &str = "fk_test_";
/// Random base62 characters after the prefix.
pub const KEY_RANDOM_CHARS: usize = 32;
/// Total length of a key.
pub const KEY_LEN: usize = 8 + KEY_RANDOM_CHARS;

/// A new key of `kind`: the plain key (to show once) and its hash (to store).
pub fn generate_key(kind: KeyKind) -> (String, KeyHash) {
    let prefix = match kind {
        KeyKind::Live => LIVE_PREFIX,
        KeyKind::Test => TEST_PREFIX,
    };
    let key = format!("{prefix}{}", crate::ids::random_base62(KEY_RANDOM_CHARS));
    let hash = hash_key(key.as_bytes());
    (key, hash)
}

pub fn hash_key(key: &[u8]) -> KeyHash {
    Sha256::digest(key).into()
}

/// A well-formed key taken from an `Authorization` header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PresentedKey<'a> {
    pub key: &'a [u8],
    pub kind: KeyKind,
}

/// Checks the `Authorization` header's shape without looking the key up. The error messages name
/// the problem and never contain the key.
pub fn parse_authorization(header: Option<&[u8]>) -> Result<PresentedKey<'_>, ApiError<'static>> {
    let header = match header {
        None => return Err(ApiError::new(ErrorKind::MissingApiKey)),
        Some(value) => trim_ascii(value),
    };
    if header.is_empty() || header.eq_ignore_ascii_case(b"bearer") {
        return Err(ApiError::new(ErrorKind::MissingApiKey));
    }
    let Some(space) = header.iter().position(|&b| b == b' ') else {
        return Err(ApiError::with_text(
            ErrorKind::InvalidApiKey,
            "The Authorization header must be 'Bearer <API key>'.",
        ));
    };
    if !header[..space].eq_ignore_ascii_case(b"bearer") {
        return Err(ApiError::with_text(
            ErrorKind::InvalidApiKey,
            "The Authorization header must use the Bearer scheme: 'Bearer <API key>'.",
        ));
    }
    let key = trim_ascii(&header[space + 1..]);
    if key.is_empty() {
        return Err(ApiError::new(ErrorKind::MissingApiKey));
    }
    // A well-formed key (nearly every request) passes each check below, so it is told by one
    // pass over it; only a malformed one walks the checks in turn for its message.
    let well_formed = key.len() == KEY_LEN && key[8..].iter().all(u8::is_ascii_alphanumeric);
    if well_formed && key.starts_with(LIVE_PREFIX.as_bytes()) {
        return Ok(PresentedKey { key, kind: KeyKind::Live });
    }
    if well_formed && key.starts_with(TEST_PREFIX.as_bytes()) {
        return Ok(PresentedKey { key, kind: KeyKind::Test });
    }
    if key.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::with_text(
            ErrorKind::InvalidApiKey,
            "The API key contains whitespace; send exactly one key after 'Bearer '.",
        ));
    }
    if key.iter().any(|&b| b == b'"' || b == b'\'') {
        return Err(ApiError::with_text(
            ErrorKind::InvalidApiKey,
            "The API key contains quote characters; send it without quotes.",
        ));
    }
    let kind = if key.starts_with(LIVE_PREFIX.as_bytes()) {
        KeyKind::Live
    } else if key.starts_with(TEST_PREFIX.as_bytes()) {
        KeyKind::Test
    } else {
        return Err(ApiError::with_text(
            ErrorKind::InvalidApiKey,
            "Incorrect API key provided: Fikra keys start with 'fk_live_' or 'fk_test_'.",
        ));
    };
    if key.len() != KEY_LEN || !key[8..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(ApiError::with_text(
            ErrorKind::InvalidApiKey,
            "Incorrect API key provided: the key is malformed (a Fikra key is its prefix and 32 letters or digits).",
        ));
    }
    Ok(PresentedKey { key, kind })
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The refusal for a key the store does not know.
pub const UNKNOWN_KEY: ApiError<'static> =
    ApiError::with_text(ErrorKind::InvalidApiKey, "Incorrect API key provided. Check the key or create a new one.");
/// The refusal for a revoked key.
pub const REVOKED_KEY: ApiError<'static> = ApiError::new(ErrorKind::RevokedApiKey);

/// What a worker remembers about one known key hash.
#[derive(Clone, Debug)]
pub struct CachedKey {
    pub record: KeyRecord,
    pub fetched_at_ms: u64,
}

/// One worker's cache of known keys (unknown ones are `refused_keys`'). Never shared between
/// threads.
#[derive(Default)]
pub struct KeyCache {
    entries: HashMap<KeyHash, CachedKey, BuildHasherDefault<DigestHasher>>,
    generation: u64,
}

/// Hashes a SHA-256 digest by its own leading bytes: they are already uniformly spread, and only
/// keys the store knows are ever inserted, so no caller can choose what collides. (SipHash of
/// 32 bytes cost more than the rest of a cache hit.)
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let len = bytes.len().min(8);
        word[..len].copy_from_slice(&bytes[..len]);
        self.0 = self.0.rotate_left(8) ^ u64::from_le_bytes(word);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl KeyCache {
    /// The cached answer for `hash`, if fresh and the store's revocation generation is unchanged.
    pub fn get(&mut self, hash: &KeyHash, now_ms: u64, generation: u64) -> Option<&CachedKey> {
        if generation != self.generation {
            self.entries.clear();
            self.generation = generation;
            return None;
        }
        let entry = self.entries.get(hash)?;
        if now_ms.saturating_sub(entry.fetched_at_ms) >= KEY_CACHE_TTL_MS || now_ms < entry.fetched_at_ms {
            return None;
        }
        Some(entry)
    }

    /// The cached answer for `hash` however old, unless a revocation has been seen since
    /// (used only while the store is unreachable).
    pub fn get_stale(&self, hash: &KeyHash, generation: u64) -> Option<&CachedKey> {
        if generation != self.generation {
            return None;
        }
        self.entries.get(hash)
    }

    pub fn put(&mut self, hash: KeyHash, record: KeyRecord, now_ms: u64, generation: u64) {
        if generation != self.generation {
            self.entries.clear();
            self.generation = generation;
        }
        if self.entries.len() >= KEY_CACHE_MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(hash, CachedKey { record, fetched_at_ms: now_ms });
    }
}

/// The identity of an authenticated request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: Arc<str>,
    pub account_id: Arc<str>,
    pub kind: KeyKind,
    /// The key's spend cap, as its record said when it was cached.
    pub spend_cap: Option<crate::store::SpendCap>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(header: &[u8]) -> &'static str {
        match parse_authorization(Some(header)) {
            Ok(_) => "ok",
            Err(error) => error.kind.spec().code,
        }
    }

    // Goal: each malformed Authorization header gets the right 401 code, well-formed keys pass.
    #[test]
    fn classifies_authorization_headers() {
        let (live, _) = generate_key(KeyKind::Live);
        let (test, _) = generate_key(KeyKind::Test);
        assert_eq!(parse_authorization(None).unwrap_err().kind, ErrorKind::MissingApiKey);
        assert_eq!(code(format!("Bearer {live}").as_bytes()), "ok");
        assert_eq!(code(format!("bearer {test}").as_bytes()), "ok");
        assert_eq!(parse_authorization(Some(format!("Bearer {test}").as_bytes())).unwrap().kind, KeyKind::Test);
        assert_eq!(code(b""), "missing_api_key");
        assert_eq!(code(b"Bearer "), "missing_api_key");
        assert_eq!(code(format!("Basic {live}").as_bytes()), "invalid_api_key");
        assert_eq!(code(live.as_bytes()), "invalid_api_key");
        assert_eq!(code(format!("Bearer \"{live}\"").as_bytes()), "invalid_api_key");
        assert_eq!(code(format!("Bearer {} {}", &live[..20], &live[20..]).as_bytes()), "invalid_api_key");
        assert_eq!(code(b"Bearer sk-abc123"), "invalid_api_key");
        assert_eq!(code(format!("Bearer {}", &live[..39]).as_bytes()), "invalid_api_key");
        assert_eq!(code(format!("Bearer {}-", &live[..39]).as_bytes()), "invalid_api_key");
    }

    // Goal: no refusal message ever contains the presented key.
    #[test]
    fn refusals_never_echo_the_key() {
        let (live, _) = generate_key(KeyKind::Live);
        for header in [format!("Basic {live}"), format!("Bearer \"{live}\""), format!("Bearer {live}x")] {
            let error = parse_authorization(Some(header.as_bytes())).unwrap_err();
            let mut body = Vec::new();
            crate::errors::write_body(&mut body, &error);
            assert!(!String::from_utf8(body).unwrap().contains(&live[8..]));
        }
    }

    // Goal: generated keys have the documented shape and differ.
    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let (a, hash_a) = generate_key(KeyKind::Live);
        let (b, _) = generate_key(KeyKind::Live);
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_LEN);
        assert!(a.starts_with(LIVE_PREFIX));
        assert_eq!(hash_a, hash_key(a.as_bytes()));
    }

    // Goal: the cache expires entries after the TTL and drops everything on a revocation.
    #[test]
    fn cache_honours_ttl_and_generation() {
        let mut cache = KeyCache::default();
        let hash = [7u8; 32];
        let (key_id, account_id) = ("key_1".into(), "acct".into());
        let record = KeyRecord { key_id, account_id, kind: KeyKind::Live, name: None, revoked: false, spend_cap: None };
        cache.put(hash, record.clone(), 1_000, 0);
        assert!(cache.get(&hash, 1_000 + KEY_CACHE_TTL_MS - 1, 0).is_some());
        assert!(cache.get(&hash, 1_000 + KEY_CACHE_TTL_MS, 0).is_none());
        cache.put(hash, record, 5_000, 0);
        assert!(cache.get(&hash, 5_001, 1).is_none());
        assert!(cache.get(&hash, 5_001, 1).is_none());
    }
}
