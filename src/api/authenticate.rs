//! The authenticate phase: the `Authorization` header to the caller it stands for.
//!
//! Resolves the presented key through this worker's memory of keys just found unknown (a
//! repeat is refused before it is even hashed), its key cache, then the store. While the store
//! is unreachable a key this worker already knew stays usable (revocations need the store too,
//! so none can have happened unseen), and any other key is found in the node's key directory;
//! paid requests still fail closed at admission. On a cache miss the directory answers first
//! (no store round trip) while it is synced and subscribed. It never echoes or logs the key.

use crate::access::auth::{self, Caller};
use crate::errors::{ApiError, ErrorKind};
use crate::metrics::WorkerMetrics;
use crate::store::{KeyKind, KeyRecord, StoreError};
use crate::worker::Worker;

/// The caller behind `authorization`, or the 401/503 to answer.
pub async fn authenticate(worker: &Worker, authorization: Option<&[u8]>) -> Result<Caller, ApiError<'static>> {
    let record = authenticate_key(worker, authorization).await?;
    Ok(Caller { key_id: record.key_id, account_id: record.account_id, kind: record.kind, spend_cap: record.spend_cap })
}

/// The usable (unrevoked, of the presented kind) key record behind `authorization`, or the
/// 401/503 to answer: `authenticate` for the routes that show the key itself.
pub async fn authenticate_key(worker: &Worker, authorization: Option<&[u8]>) -> Result<KeyRecord, ApiError<'static>> {
    let presented = auth::parse_authorization(authorization)?;
    let store = worker.store();
    let now_ms = worker.shared.clock.now_ms();
    let generation = store.revocation_generation();
    // A repeat of a key the store just said it does not know: no hash, no store call.
    if worker.refused_keys.borrow().contains(presented.key, now_ms, generation) {
        return Err(auth::UNKNOWN_KEY);
    }
    let hash = auth::hash_key(presented.key);
    let cached = worker.key_cache.borrow_mut().get(&hash, now_ms, generation).map(|entry| entry.record.clone());
    if let Some(record) = cached {
        return usable_record(record, presented.kind);
    }
    // The node's key directory answers for the store while it is trusted; a key it does not
    // know (created a moment ago on another node, or unknown) is asked of the store.
    let resolved = match store.directory_lookup_trusted(&hash) {
        Some(record) => Ok(record),
        None => store.resolve_key(&hash).await,
    };
    match resolved {
        Ok(record) => {
            worker.key_cache.borrow_mut().put(hash, record.clone(), now_ms, generation);
            usable_record(record, presented.kind)
        }
        Err(StoreError::NotFound) => {
            worker.refused_keys.borrow_mut().remember(presented.key, now_ms, generation);
            Err(auth::UNKNOWN_KEY)
        }
        Err(_) => {
            WorkerMetrics::add(&worker.metrics.store_unavailable, 1);
            if let Some(record) = worker.key_cache.borrow().get_stale(&hash, generation).map(|e| e.record.clone()) {
                return usable_record(record, presented.kind);
            }
            // A key this worker never saw: the node's key directory knows it, even if it could
            // not be read again since the channels were last subscribed.
            if let Some(record) = store.directory_lookup(&hash) {
                WorkerMetrics::add(&worker.metrics.key_directory_hits, 1);
                return usable_record(record, presented.kind);
            }
            Err(ApiError::with_text(
                ErrorKind::ServiceUnavailable,
                "The key store is unreachable right now. Please retry shortly.",
            ))
        }
    }
}

/// The key record, if it may be used with the presented key's kind.
fn usable_record(record: KeyRecord, presented: KeyKind) -> Result<KeyRecord, ApiError<'static>> {
    if record.revoked {
        Err(auth::REVOKED_KEY)
    } else if record.kind != presented {
        Err(auth::UNKNOWN_KEY)
    } else {
        Ok(record)
    }
}
