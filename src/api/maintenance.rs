//! The maintenance phase: while the operator has the API in maintenance (`PUT
//! /admin/maintenance`), every client route answers 503 with `retry-after` once the key is
//! known, so the answer still carries the caller's request id and rate headers.
//!
//! It never decides anything else; the switch itself is `shared::Maintenance`.

use crate::api::rescue::Refusal;
use crate::errors::{ApiError, ErrorKind};
use crate::worker::Worker;

/// 503 while the operator has the API in maintenance.
pub fn refuse_during_maintenance(worker: &Worker) -> Result<(), Refusal<'static>> {
    match worker.shared.maintenance.retry_after_ms() {
        None => Ok(()),
        Some(retry_after_ms) => Err(Refusal::from(ApiError::with_text(
            ErrorKind::ServiceUnavailable,
            "The API is in scheduled maintenance. Please retry after the time in the retry-after header.",
        ))
        .retry_after_ms(retry_after_ms)),
    }
}
