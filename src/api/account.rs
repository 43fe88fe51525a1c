//! `GET /v1/account` and `GET /v1/usage`: the key holder's own account and ledger (SPEC §8.2).
//!
//! Any usable key (live or test) may read its account: balance, holds, what is available, the
//! limits that apply to this key, and the key itself. Reading is not spending: these routes
//! take nothing from the RPM or TPM buckets and are answered whatever the balance, so a
//! customer who is rate limited or broke can still see why (the headers show the buckets as
//! they are). They authenticate, refuse during maintenance and carry the request id and rate
//! headers like every client route. Off the hot path: the bodies are built with `serde_json`.
//! They never change the store and never show another key or account.

use monoio::io::AsyncWriteRent;
use serde_json::{Value, json};

use crate::api::authenticate::authenticate_key;
use crate::api::maintenance::refuse_during_maintenance;
use crate::api::rescue::{Known, Rates, Refusal, rates_of, rescue};
use crate::api::trace::Trace;
use crate::errors::{ApiError, ErrorKind};
use crate::http::response::{self, ResponseContext};
use crate::http::server::{Request, ResponseSink};
use crate::store::{AccountView, CapPeriod, KeyRecord, KeySpend, StoreError, TierLimits, views};
use crate::worker::Worker;

/// Which of the two views to answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AccountRoute {
    Account,
    Usage,
}

/// Answers `GET /v1/account` or `GET /v1/usage` (HEAD alike; the sink drops the body).
pub async fn account<S: AsyncWriteRent>(
    worker: &Worker,
    route: AccountRoute,
    request: &Request<'_>,
    sink: &mut ResponseSink<S>,
    trace: &mut Trace,
) -> u16 {
    let request_id = *trace.request_id.insert(worker.next_request_id());
    let key = match authenticate_key(worker, request.head.authorization).await {
        Ok(key) => key,
        Err(error) => {
            return rescue(worker, sink, error.into(), Known { request_id: Some(&request_id), caller: None }).await;
        }
    };
    let caller = &*trace.caller.insert(crate::access::auth::Caller {
        key_id: key.key_id.clone(),
        account_id: key.account_id.clone(),
        kind: key.kind,
        spend_cap: key.spend_cap,
    });
    let known = Known { request_id: Some(&request_id), caller: Some(caller) };
    if let Err(refusal) = refuse_during_maintenance(worker) {
        return rescue(worker, sink, refusal, known).await;
    }
    let rates = rates_of(worker, caller).await;
    let body = match route {
        AccountRoute::Account => account_body(worker, &key).await,
        AccountRoute::Usage => usage_body(worker, &key, request.head.query).await,
    };
    match body {
        Ok(body) => {
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let context = ResponseContext {
                request_id: Some(request_id.as_str()),
                rates: rates.as_ref(),
                keep_alive: sink.keep_alive,
            };
            response::write_full(&mut sink.out, 200, "application/json", &[], &context, &bytes);
            200
        }
        Err(error) => rescue(worker, sink, Refusal::from(error).with_rates(Rates::from(rates)), known).await,
    }
}

async fn account_body(worker: &Worker, key: &KeyRecord) -> Result<Value, ApiError<'static>> {
    let account = worker.store().account(&key.account_id).await.map_err(store_refusal)?;
    let limits = worker.shared.config.limits.limits_for(&account.id, &account.tier, key.kind);
    // A capped key's spend in the cap's current period; an uncapped one's over its lifetime.
    let period = key.spend_cap.map_or(CapPeriod::Lifetime, |cap| cap.period);
    let spend = worker
        .store()
        .key_spend(&key.account_id, &key.key_id, period, worker.shared.clock.now_ms())
        .await
        .map_err(store_refusal)?;
    Ok(account_json(&account, &limits, key, spend))
}

async fn usage_body(worker: &Worker, key: &KeyRecord, query: &str) -> Result<Value, ApiError<'static>> {
    let limit = views::usage_query_limit(query).map_err(|error| ApiError::invalid("limit", error.message()))?;
    let records = worker.store().usage(&key.account_id, limit).await.map_err(store_refusal)?;
    Ok(views::usage_list_json(&records))
}

/// The account as its key holder sees it. The key's spend cap fields are null while it has
/// none; `spend` is what the key spent (settled charges) in the cap's current period, or over
/// its lifetime when it has no cap, and what its open requests hold.
fn account_json(account: &AccountView, limits: &TierLimits, key: &KeyRecord, spend: KeySpend) -> Value {
    let available = account.balance.saturating_sub(account.held);
    json!({
        "object": "account",
        "id": &*account.id,
        "tier": &*account.tier,
        "balance_usd": account.balance.to_usd_string(),
        "held_usd": account.held.to_usd_string(),
        "available_usd": available.to_usd_string(),
        "limits": {"rpm": limits.requests_per_minute, "tpm": limits.tokens_per_minute},
        "key": {
            "id": &*key.key_id,
            "kind": key.kind.as_str(),
            "name": key.name.as_deref(),
            "spend_cap_usd": key.spend_cap.map(|cap| cap.limit.to_usd_string()),
            "spend_cap_period": key.spend_cap.map(|cap| cap.period.as_str()),
            "spent_usd": spend.spent.to_usd_string(),
            "held_usd": spend.held.to_usd_string(),
        },
    })
}

fn store_refusal(error: StoreError) -> ApiError<'static> {
    match error {
        StoreError::Unavailable => ApiError::with_text(
            ErrorKind::ServiceUnavailable,
            "The account store is unreachable right now. Please retry shortly.",
        ),
        StoreError::NotFound | StoreError::AlreadyExists | StoreError::Overflow => {
            ApiError::new(ErrorKind::InternalError)
        }
    }
}
