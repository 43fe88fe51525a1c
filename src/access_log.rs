//! The access log (SPEC §12): one JSON line per client request on standard output, for the
//! operator to ship (`[log] access = "json"`, the default, or `"off"`).
//!
//! Owns the line's fields and format, and the road of lines to standard output: each worker
//! appends its lines to its own buffer (no lock, no allocation once warm), hands a full buffer
//! (or, from its periodic tick, any non-empty one) to one writer thread, and gets an empty one
//! back. A worker never writes to standard output itself, so a slow reader of the log can never
//! stall a request: when the writer falls behind, batches are dropped and counted.
//!
//! A line never holds a key, a body, a query string or a secret: only ids the gateway made,
//! the method and path, numbers and error codes.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::digits::push_decimal;
use crate::json::write_json_escaped;
use crate::money::TokenUsage;

/// A worker hands its buffer to the writer once it holds this many bytes.
pub const ACCESS_LOG_BATCH_BYTES: usize = 32 * 1024;
/// Batches waiting for the writer before workers start dropping theirs.
const ACCESS_LOG_QUEUED_BATCHES: usize = 64;
/// Emptied buffers the writer keeps ready per worker (more are freed).
const ACCESS_LOG_RETURNED_BATCHES: usize = 4;

/// One request, as the access log records it.
#[derive(Copy, Clone, Debug, Default)]
pub struct AccessRecord<'a> {
    /// Unix time in milliseconds when the request's head was read.
    pub time_ms: u64,
    pub request_id: Option<&'a str>,
    pub account_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub method: &'a str,
    /// The path without its query (a query may carry anything).
    pub path: &'a str,
    pub status: u16,
    /// The error table's code when the answer was an error (or a stream ended by one).
    pub error_code: Option<&'a str>,
    pub model: Option<&'a str>,
    pub tokens: TokenUsage,
    pub cost_nanos: u64,
    pub duration_us: u64,
    /// From sending the upstream request to its response head.
    pub upstream_us: Option<u64>,
    /// From the request's head to the first token written to the client.
    pub first_token_us: Option<u64>,
}

/// Appends `record` to `out` as one JSON line (ending in `\n`), without allocating.
pub fn write_json_line(out: &mut Vec<u8>, record: &AccessRecord<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_utc_timestamp(out, record.time_ms);
    out.extend_from_slice(b"\"");
    // Each field's `,"name":` is one literal: one copy per field, not three.
    let text = |out: &mut Vec<u8>, name_colon: &[u8], value: Option<&str>| {
        out.extend_from_slice(name_colon);
        match value {
            Some(value) => {
                out.push(b'"');
                write_json_escaped(out, value);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
    };
    let number = |out: &mut Vec<u8>, name_colon: &[u8], value: Option<u64>| {
        out.extend_from_slice(name_colon);
        match value {
            Some(value) => push_decimal(out, value),
            None => out.extend_from_slice(b"null"),
        }
    };
    text(out, b",\"request_id\":", record.request_id);
    text(out, b",\"account\":", record.account_id);
    text(out, b",\"key_id\":", record.key_id);
    text(out, b",\"method\":", Some(record.method));
    text(out, b",\"path\":", Some(record.path));
    number(out, b",\"status\":", Some(u64::from(record.status)));
    text(out, b",\"error_code\":", record.error_code);
    text(out, b",\"model\":", record.model);
    number(out, b",\"prompt_tokens\":", Some(record.tokens.prompt_tokens));
    number(out, b",\"cached_tokens\":", Some(record.tokens.cached_prompt_tokens));
    number(out, b",\"completion_tokens\":", Some(record.tokens.completion_tokens));
    number(out, b",\"reasoning_tokens\":", Some(record.tokens.reasoning_tokens));
    number(out, b",\"cost_nanos\":", Some(record.cost_nanos));
    number(out, b",\"duration_us\":", Some(record.duration_us));
    number(out, b",\"upstream_us\":", record.upstream_us);
    number(out, b",\"first_token_us\":", record.first_token_us);
    out.extend_from_slice(b"}\n");
}

/// `2026-12-02T00:40:12.345Z` for Unix milliseconds (proleptic Gregorian, UTC).
fn write_utc_timestamp(out: &mut Vec<u8>, unix_ms: u64) {
    let seconds = unix_ms / 1000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, value: u64| {
        out.push(b'0' + (value / 10 % 10) as u8);
        out.push(b'0' + (value % 10) as u8);
    };
    push_decimal(out, year);
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, second_of_day / 3600);
    out.push(b':');
    two(out, second_of_day / 60 % 60);
    out.push(b':');
    two(out, second_of_day % 60);
    out.push(b'.');
    let millis = unix_ms % 1000;
    out.push(b'0' + (millis / 100) as u8);
    two(out, millis % 100);
    out.push(b'Z');
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's civil-from-days
/// algorithm, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Starts the writer thread, which writes every batch to `sink` (standard output in
/// production) and gives the buffer back to the worker it came from; returns one handle per
/// worker (`workers` of them). Dropped lines are counted in `dropped_lines`.
pub fn start(
    workers: usize,
    mut sink: impl Write + Send + 'static,
    dropped_lines: Arc<AtomicU64>,
) -> std::io::Result<Vec<WorkerAccessLog>> {
    let (batches, incoming) = sync_channel::<(usize, Vec<u8>)>(ACCESS_LOG_QUEUED_BATCHES);
    let mut give_back = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let (returns, empties) = sync_channel::<Vec<u8>>(ACCESS_LOG_RETURNED_BATCHES);
        // Spare buffers from the start: a worker whose writer keeps up never allocates one.
        for _ in 0..ACCESS_LOG_RETURNED_BATCHES {
            let _ = returns.try_send(Vec::with_capacity(ACCESS_LOG_BATCH_BYTES));
        }
        give_back.push(returns);
        handles.push(WorkerAccessLog {
            index,
            batches: batches.clone(),
            empties,
            dropped_lines: dropped_lines.clone(),
        });
    }
    std::thread::Builder::new().name("fikra-access-log".into()).spawn(move || {
        for (index, mut batch) in incoming {
            if sink.write_all(&batch).and_then(|()| sink.flush()).is_err() {
                crate::log_warn_every!("the access log could not be written to its output");
            }
            batch.clear();
            if let Some(returns) = give_back.get(index) {
                let _ = returns.try_send(batch);
            }
        }
    })?;
    Ok(handles)
}

/// One worker's road to the writer. Owned by that worker alone.
pub struct WorkerAccessLog {
    index: usize,
    batches: SyncSender<(usize, Vec<u8>)>,
    /// Buffers the writer emptied, for reuse.
    empties: Receiver<Vec<u8>>,
    dropped_lines: Arc<AtomicU64>,
}

impl WorkerAccessLog {
    /// Hands `buffer`'s lines to the writer and puts an empty buffer in its place (a reused
    /// one when the writer has given one back). Never blocks: when the writer is behind, the
    /// lines are dropped and counted.
    pub fn hand_over(&self, buffer: &RefCell<Vec<u8>>) {
        let mut lines = buffer.borrow_mut();
        if lines.is_empty() {
            return;
        }
        let empty = self.empties.try_recv().unwrap_or_else(|_| Vec::with_capacity(ACCESS_LOG_BATCH_BYTES));
        let full = std::mem::replace(&mut *lines, empty);
        if let Err(TrySendError::Full((_, mut batch)) | TrySendError::Disconnected((_, mut batch))) =
            self.batches.try_send((self.index, full))
        {
            let dropped = batch.iter().filter(|&&b| b == b'\n').count() as u64;
            self.dropped_lines.fetch_add(dropped, Ordering::Relaxed);
            crate::log_warn_every!("the access log writer is behind: lines were dropped");
            // Keep the allocation: the next lines fill it again.
            batch.clear();
            *lines = batch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a record becomes exactly one JSON line with every field, nulls where unknown, and
    // text escaped.
    #[test]
    fn writes_one_exact_json_line() {
        let record = AccessRecord {
            time_ms: 1_796_170_812_345,
            request_id: Some("req_abc"),
            account_id: Some("acct_1"),
            key_id: Some("key_1"),
            method: "POST",
            path: "/v1/chat/\"x\"",
            status: 200,
            error_code: None,
            model: Some("fikra-flash"),
            tokens: TokenUsage {
                prompt_tokens: 10,
                cached_prompt_tokens: 4,
                completion_tokens: 7,
                reasoning_tokens: 2,
            },
            cost_nanos: 8_500,
            duration_us: 1_234,
            upstream_us: Some(900),
            first_token_us: None,
        };
        let mut out = Vec::new();
        write_json_line(&mut out, &record);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "time": "2026-12-02T00:20:12.345Z", "request_id": "req_abc", "account": "acct_1", "key_id": "key_1",
                "method": "POST", "path": "/v1/chat/\"x\"", "status": 200, "error_code": null, "model": "fikra-flash",
                "prompt_tokens": 10, "cached_tokens": 4, "completion_tokens": 7, "reasoning_tokens": 2,
                "cost_nanos": 8500, "duration_us": 1234, "upstream_us": 900, "first_token_us": null
            })
        );
    }

    // Goal: timestamps are right across the calendar's corners.
    #[test]
    fn formats_utc_timestamps() {
        for (unix_ms, expected) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_007, "2000-02-29T00:00:00.007Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
        ] {
            let mut out = Vec::new();
            write_utc_timestamp(&mut out, unix_ms);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    // Goal: lines handed over reach the writer's output in order, and the worker's buffer comes
    // back empty.
    #[test]
    fn hands_batches_to_the_writer() {
        let (sender, receiver) = std::sync::mpsc::channel::<Vec<u8>>();
        struct ToChannel(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for ToChannel {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(bytes.to_vec());
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dropped = Arc::new(AtomicU64::new(0));
        let workers = start(2, ToChannel(sender), dropped.clone()).unwrap();
        let buffer = RefCell::new(b"{\"a\":1}\n{\"a\":2}\n".to_vec());
        workers[1].hand_over(&buffer);
        assert!(buffer.borrow().is_empty());
        let written = receiver.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(written, b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }
}
