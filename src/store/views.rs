//! The JSON an API shows of the store's records: an account's ledger and its usage query, shared
//! by the operator's usage call (`admin`) and the key holder's own (`GET /v1/usage`), so both
//! render the same records the same way.
//!
//! Off the hot path (a listing, not an admission), so it uses `serde_json`. It never reads the
//! store and never writes a response: callers fetch, this renders.

use serde_json::{Value, json};

use crate::limits::MAX_USAGE_QUERY_LIMIT;
use crate::store::UsageRecord;

/// Records a usage query returns when it names no `limit`.
pub const DEFAULT_USAGE_QUERY_LIMIT: usize = 100;

const _: () = assert!(DEFAULT_USAGE_QUERY_LIMIT <= MAX_USAGE_QUERY_LIMIT);

/// Why a usage query string was refused (its param is always `limit`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UsageQueryError {
    /// `limit` is not a whole number from 1 to `MAX_USAGE_QUERY_LIMIT`.
    BadLimit,
    /// A parameter other than `limit`.
    UnknownParameter,
}

impl UsageQueryError {
    /// The sentence the refusal carries.
    pub fn message(self) -> &'static str {
        match self {
            UsageQueryError::BadLimit => "limit must be a whole number from 1 to 1000.",
            UsageQueryError::UnknownParameter => "The only query parameter is limit.",
        }
    }
}

// The message above names the bound; keep them together.
const _: () = assert!(MAX_USAGE_QUERY_LIMIT == 1_000);

/// The `limit` of a usage query string (`limit=N`, or nothing for the default).
pub fn usage_query_limit(query: &str) -> Result<usize, UsageQueryError> {
    let mut limit = DEFAULT_USAGE_QUERY_LIMIT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", value)) => {
                let digits_only = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                limit = match value.parse::<usize>() {
                    Ok(n) if digits_only && (1..=MAX_USAGE_QUERY_LIMIT).contains(&n) => n,
                    _ => return Err(UsageQueryError::BadLimit),
                };
            }
            _ => return Err(UsageQueryError::UnknownParameter),
        }
    }
    Ok(limit)
}

/// `{"object":"list","data":[...]}` of `records` (newest first, as the store returns them).
/// A key's spend cap as the admin API and `GET /v1/account` show it: (`spend_cap_usd`,
/// `spend_cap_period`), both null without a cap.
pub fn spend_cap_json(cap: Option<crate::store::types::SpendCap>) -> (Value, Value) {
    match cap {
        Some(cap) => (Value::from(cap.limit.to_usd_string()), Value::from(cap.period.as_str())),
        None => (Value::Null, Value::Null),
    }
}

pub fn usage_list_json(records: &[UsageRecord]) -> Value {
    let data: Vec<Value> = records.iter().map(usage_record_json).collect();
    json!({"object": "list", "data": data})
}

/// One ledger line: request, key, model, tokens by kind, cost in USD, outcome, Unix seconds.
pub fn usage_record_json(record: &UsageRecord) -> Value {
    json!({
        "request_id": &*record.request_id,
        "key_id": &*record.key_id,
        "model": &*record.model,
        "prompt_tokens": record.tokens.prompt_tokens,
        "cached_tokens": record.tokens.cached_prompt_tokens,
        "completion_tokens": record.tokens.completion_tokens,
        "reasoning_tokens": record.tokens.reasoning_tokens,
        "cost_usd": record.cost.to_usd_string(),
        "outcome": record.outcome,
        "created_at": record.created_at_ms / 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the query grammar both usage calls share, value by value.
    #[test]
    fn usage_query_limits() {
        assert_eq!(usage_query_limit(""), Ok(100));
        assert_eq!(usage_query_limit("limit=1"), Ok(1));
        assert_eq!(usage_query_limit("limit=1000"), Ok(1000));
        assert_eq!(usage_query_limit("limit=0"), Err(UsageQueryError::BadLimit));
        assert_eq!(usage_query_limit("limit=1001"), Err(UsageQueryError::BadLimit));
        assert_eq!(usage_query_limit("limit=+5"), Err(UsageQueryError::BadLimit));
        assert_eq!(usage_query_limit("limit="), Err(UsageQueryError::BadLimit));
        assert_eq!(usage_query_limit("limit=ten"), Err(UsageQueryError::BadLimit));
        assert_eq!(usage_query_limit("limit=-1"), Err(UsageQueryError::BadLimit));
        assert_eq!(usage_query_limit("page=2"), Err(UsageQueryError::UnknownParameter));
    }
}
