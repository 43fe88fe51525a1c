//! The operator's API on its own listener: accounts, keys, top-ups, usage, maintenance,
//! metrics, health.
//!
//! Everything here is off the client hot path, so it uses `serde_json` freely. It shares the
//! error shape of the client API. All routes except `/metrics`, `/healthz` and `/readyz`
//! require `Authorization: Bearer <admin token>` (compared in constant time). HEAD is routed as
//! GET everywhere (the connection's sink drops the body). It never shows a plain API key except
//! in the response that creates it.

use std::sync::Arc;

use monoio::io::AsyncWriteRent;
use serde_json::{Value, json};

use crate::access::auth;
use crate::errors::ErrorKind;
use crate::http::request::Method;
use crate::http::response::{self, ResponseContext};
use crate::http::server::{Handler, OutBufferPool, Request, ResponseSink};
use crate::limits::{MAX_ADMIN_ID_BYTES, MAX_KEY_NAME_BYTES, MAX_PAYMENT_REFERENCE_BYTES};
use crate::metrics::Route;

mod mpesa;
use crate::money::{self, Nanos};
use crate::shared::Shared;
use crate::store::{CapPeriod, KeyKind, KeyRecord, SpendCap, StoreClient, StoreConnections, StoreError, views};

pub struct AdminHandler {
    shared: Arc<Shared>,
    /// Output buffers of the admin listener's connections (its own thread).
    out_buffers: OutBufferPool,
    /// The admin thread's connections to the store.
    store_connections: StoreConnections,
    /// M-Pesa STK Push and the payments listing (`admin::mpesa`).
    mpesa: mpesa::MpesaAdmin,
}

/// A response decided by an admin route: status and JSON body, or an error.
type AdminResult = Result<(u16, Value), AdminError>;

/// An admin refusal: kind, param and a message built off the hot path.
struct AdminError {
    kind: ErrorKind,
    param: Option<&'static str>,
    message: String,
}

fn admin_error(kind: ErrorKind, param: Option<&'static str>, message: impl Into<String>) -> AdminError {
    AdminError { kind, param, message: message.into() }
}

fn bad(param: &'static str, message: impl Into<String>) -> AdminError {
    admin_error(ErrorKind::InvalidParameter, Some(param), message)
}

fn store_error(error: StoreError, what: &str) -> AdminError {
    match error {
        StoreError::NotFound => admin_error(ErrorKind::NotFound, None, format!("No such {what}.")),
        StoreError::AlreadyExists => {
            admin_error(ErrorKind::AlreadyExists, Some("id"), format!("That {what} already exists."))
        }
        StoreError::Unavailable => admin_error(ErrorKind::ServiceUnavailable, None, "The store is unreachable."),
        StoreError::Overflow => bad("amount", "The amount is out of range."),
    }
}

impl Handler for AdminHandler {
    fn out_buffers(&self) -> &OutBufferPool {
        &self.out_buffers
    }

    async fn handle<S: AsyncWriteRent>(&self, request: &Request<'_>, sink: &mut ResponseSink<S>) {
        let head = &request.head;
        let path = head.path;
        let context = ResponseContext { request_id: None, rates: None, keep_alive: sink.keep_alive };
        // HEAD is answered as GET; the sink sends only the head (RFC 9110 §9.3.2).
        let method = if head.method == Method::Head { Method::Get } else { head.method };
        match (method, path) {
            (Method::Get, "/healthz") => {
                response::write_full(&mut sink.out, 200, "application/json", &[], &context, b"{\"status\":\"ok\"}");
                return;
            }
            (Method::Get, "/readyz") => {
                let (status, body) = self.readiness().await;
                response::write_full(
                    &mut sink.out,
                    status,
                    "application/json",
                    &[],
                    &context,
                    body.to_string().as_bytes(),
                );
                return;
            }
            (Method::Get, "/metrics") => {
                let mut text = self.shared.metrics.render();
                // The node's own gauges, read from what owns them.
                let directory_keys = self.store().key_directory_len();
                text.push_str("# HELP fikra_key_directory_keys Keys this node recognises without asking the store.\n");
                text.push_str("# TYPE fikra_key_directory_keys gauge\n");
                text.push_str(&format!("fikra_key_directory_keys {directory_keys}\n"));
                let trusted = u8::from(!self.store().key_directory_needs_sync());
                text.push_str("# HELP fikra_key_directory_trusted 1 while the key directory answers for the store (synced and subscribed).\n");
                text.push_str("# TYPE fikra_key_directory_trusted gauge\n");
                text.push_str(&format!("fikra_key_directory_trusted {trusted}\n"));
                if let Some(store) = self.shared.store.failure_metrics() {
                    store.render_into(&mut text);
                }
                response::write_full(&mut sink.out, 200, "text/plain; version=0.0.4", &[], &context, text.as_bytes());
                return;
            }
            _ => {}
        }
        let result = if !self.authorized(head.authorization) {
            Err(admin_error(
                ErrorKind::InvalidApiKey,
                None,
                "The admin API needs 'Authorization: Bearer <admin token>'.",
            ))
        } else {
            self.route(method, path, head.query, request.body).await
        };
        match result {
            Ok((status, body)) => {
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                response::write_full(&mut sink.out, status, "application/json", &[], &context, &bytes);
                self.shared.metrics.admin.count_request(Route::Unknown, status);
            }
            Err(error) => {
                let spec = error.kind.spec();
                let body = json!({"error": {"message": error.message, "type": spec.error_type, "param": error.param, "code": spec.code}});
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                let allow: [(&str, &[u8]); 1] = [("allow", b"GET, HEAD, POST, PUT, DELETE")];
                let extra: &[(&str, &[u8])] = if error.kind == ErrorKind::MethodNotAllowed { &allow } else { &[] };
                response::write_full(&mut sink.out, spec.status, "application/json", extra, &context, &bytes);
                self.shared.metrics.admin.count_request(Route::Unknown, spec.status);
            }
        }
    }
}

impl AdminHandler {
    pub fn new(shared: Arc<Shared>) -> AdminHandler {
        let mpesa = mpesa::MpesaAdmin::new(&shared);
        AdminHandler {
            shared,
            out_buffers: OutBufferPool::default(),
            store_connections: StoreConnections::default(),
            mpesa,
        }
    }

    fn store(&self) -> StoreClient<'_> {
        self.shared.store.client(&self.store_connections)
    }

    fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else { return false };
        let Some(token) = header.strip_prefix(b"Bearer ") else { return false };
        constant_time_eq(token, self.shared.admin_token.as_bytes())
    }

    async fn readiness(&self) -> (u16, Value) {
        let store_ok = self.store().ping().await;
        let running = self.shared.workers_running.load(std::sync::atomic::Ordering::Acquire);
        // The admin listener counts itself among the running loops.
        let workers_ok = running > self.shared.workers_expected();
        let ready = store_ok && workers_ok && !self.shared.is_draining();
        let body = json!({"ready": ready, "store": store_ok, "workers_running": running.saturating_sub(1), "draining": self.shared.is_draining()});
        (if ready { 200 } else { 503 }, body)
    }

    async fn route(&self, method: Method, path: &str, query: &str, body: &[u8]) -> AdminResult {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (Method::Post, ["admin", "accounts"]) => self.create_account(body).await,
            (Method::Get, ["admin", "accounts", id]) => self.get_account(id).await,
            (Method::Post, ["admin", "accounts", id, "keys"]) => self.create_key(id, body).await,
            (Method::Delete, ["admin", "keys", key_id]) => self.revoke_key(key_id).await,
            (Method::Patch, ["admin", "keys", key_id]) => self.patch_key(key_id, body).await,
            (Method::Post, ["admin", "accounts", id, "topups"]) => self.topup(id, body).await,
            (Method::Get, ["admin", "accounts", id, "usage"]) => self.usage(id, query).await,
            (Method::Put, ["admin", "maintenance"]) => self.maintenance(body),
            (Method::Post, ["admin", "accounts", id, "mpesa", "stk-push"]) => {
                let answer = self.mpesa.stk_push(&self.shared, self.store(), id, body).await;
                answer.map_err(|(kind, param, message)| admin_error(kind, param, message))
            }
            (Method::Get, ["admin", "accounts", id, "payments"]) => {
                let answer = self.mpesa.payments(self.store(), id).await;
                answer.map_err(|(kind, param, message)| admin_error(kind, param, message))
            }
            (
                _,
                ["admin", "accounts"]
                | ["admin", "accounts", _]
                | ["admin", "accounts", _, _]
                | ["admin", "keys", _]
                | ["admin", "maintenance"],
            ) => Err(admin_error(ErrorKind::MethodNotAllowed, None, format!("Method not allowed on {path}."))),
            _ => Err(admin_error(ErrorKind::UnknownEndpoint, None, format!("Unknown admin endpoint: {path}."))),
        }
    }

    fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    async fn create_account(&self, body: &[u8]) -> AdminResult {
        let value = parse_object(body, true)?;
        check_fields(&value, &["id", "signup_credit_usd"])?;
        let id = optional_string(&value, "id")?;
        if let Some(id) = id {
            validate_id(id, "id")?;
        }
        let credit = match optional_string(&value, "signup_credit_usd")? {
            Some(text) => {
                money::parse_usd(text).map_err(|e| bad("signup_credit_usd", format!("signup_credit_usd: {e}")))?
            }
            None => self.shared.config.billing.signup_credit,
        };
        let account =
            self.store().create_account(id, credit, self.now_ms()).await.map_err(|e| store_error(e, "account"))?;
        Ok((201, account_json(&account)))
    }

    async fn get_account(&self, id: &str) -> AdminResult {
        let account = self.store().account(id).await.map_err(|e| store_error(e, "account"))?;
        Ok((200, account_json(&account)))
    }

    async fn create_key(&self, account_id: &str, body: &[u8]) -> AdminResult {
        let value = parse_object(body, false)?;
        check_fields(&value, &["kind", "name", "spend_cap_usd", "spend_cap_period"])?;
        let kind = match value.get("kind").and_then(Value::as_str) {
            Some("live") => KeyKind::Live,
            Some("test") => KeyKind::Test,
            Some(_) | None => return Err(bad("kind", "kind must be \"live\" or \"test\".")),
        };
        let name = optional_string(&value, "name")?;
        if name.is_some_and(|n| n.len() > MAX_KEY_NAME_BYTES) {
            return Err(bad("name", format!("name is longer than {MAX_KEY_NAME_BYTES} bytes.")));
        }
        let spend_cap = match spend_cap_of(&value)? {
            CapChange::Set(cap) => Some(cap),
            CapChange::Clear | CapChange::Keep => None,
        };
        let account = self.store().account(account_id).await.map_err(|e| store_error(e, "account"))?;
        let (key, hash) = auth::generate_key(kind);
        let key_id: Arc<str> = format!("key_{}", crate::ids::random_base62(16)).into();
        let record = KeyRecord {
            key_id: key_id.clone(),
            account_id: account.id,
            kind,
            name: name.map(Into::into),
            revoked: false,
            spend_cap,
        };
        self.store().insert_key(hash, record).await.map_err(|e| store_error(e, "key"))?;
        let (cap_usd, cap_period) = views::spend_cap_json(spend_cap);
        Ok((
            201,
            json!({"key_id": &*key_id, "key": key, "kind": kind.as_str(),
                "spend_cap_usd": cap_usd, "spend_cap_period": cap_period}),
        ))
    }

    /// `PATCH /admin/keys/{key_id}`: sets (`spend_cap_usd` and `spend_cap_period`) or clears
    /// (`"spend_cap_usd": null`) the key's spend cap.
    async fn patch_key(&self, key_id: &str, body: &[u8]) -> AdminResult {
        let value = parse_object(body, false)?;
        check_fields(&value, &["spend_cap_usd", "spend_cap_period"])?;
        let cap = match spend_cap_of(&value)? {
            CapChange::Set(cap) => Some(cap),
            CapChange::Clear => None,
            CapChange::Keep => {
                return Err(admin_error(
                    ErrorKind::MissingRequiredParameter,
                    Some("spend_cap_usd"),
                    "Give spend_cap_usd and spend_cap_period to set a cap, or \"spend_cap_usd\": null to clear it.",
                ));
            }
        };
        let record = self.store().set_key_cap(key_id, cap).await.map_err(|e| store_error(e, "key"))?;
        let (cap_usd, cap_period) = views::spend_cap_json(record.spend_cap);
        Ok((
            200,
            json!({"key_id": &*record.key_id, "account_id": &*record.account_id, "kind": record.kind.as_str(),
                "name": record.name.as_deref(), "revoked": record.revoked,
                "spend_cap_usd": cap_usd, "spend_cap_period": cap_period}),
        ))
    }

    async fn revoke_key(&self, key_id: &str) -> AdminResult {
        self.store().revoke_key(key_id).await.map_err(|e| store_error(e, "key"))?;
        Ok((200, json!({"key_id": key_id, "revoked": true})))
    }

    async fn topup(&self, account_id: &str, body: &[u8]) -> AdminResult {
        let value = parse_object(body, false)?;
        check_fields(&value, &["amount", "currency", "reference"])?;
        let amount = value.get("amount").and_then(Value::as_str).ok_or_else(|| {
            admin_error(
                ErrorKind::MissingRequiredParameter,
                Some("amount"),
                "amount is required, as a decimal string such as \"100.00\".",
            )
        })?;
        let reference = value.get("reference").and_then(Value::as_str).ok_or_else(|| {
            admin_error(
                ErrorKind::MissingRequiredParameter,
                Some("reference"),
                "reference (the payment reference) is required.",
            )
        })?;
        if reference.is_empty() || reference.len() > MAX_PAYMENT_REFERENCE_BYTES {
            return Err(bad("reference", format!("reference must be 1 to {MAX_PAYMENT_REFERENCE_BYTES} bytes.")));
        }
        let nanos = match value.get("currency").and_then(Value::as_str) {
            Some("USD") => money::parse_usd(amount),
            Some("KES") => self.shared.config.billing.kes_per_usd.to_nanos(amount),
            _ => return Err(bad("currency", "currency must be \"KES\" or \"USD\".")),
        }
        .map_err(|e| bad("amount", format!("amount: {e}")))?;
        if nanos == Nanos::ZERO {
            return Err(bad("amount", "amount must be more than zero."));
        }
        let result = self
            .store()
            .topup(account_id, nanos, reference, self.now_ms())
            .await
            .map_err(|e| store_error(e, "account"))?;
        Ok((
            200,
            json!({"balance_usd": result.balance.to_usd_string(), "tier": &*result.tier, "duplicate": result.duplicate}),
        ))
    }

    async fn usage(&self, account_id: &str, query: &str) -> AdminResult {
        let limit = views::usage_query_limit(query).map_err(|error| bad("limit", error.message()))?;
        let records = self.store().usage(account_id, limit).await.map_err(|e| store_error(e, "account"))?;
        Ok((200, views::usage_list_json(&records)))
    }

    fn maintenance(&self, body: &[u8]) -> AdminResult {
        let value = parse_object(body, false)?;
        check_fields(&value, &["enabled", "retry_after_s"])?;
        let enabled = value
            .get("enabled")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("enabled", "enabled must be a boolean."))?;
        let retry_after_s = match value.get("retry_after_s") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| bad("retry_after_s", "retry_after_s must be an integer from 1 to 3600."))?,
            ),
        };
        self.shared.maintenance.set(enabled, retry_after_s);
        Ok((
            200,
            json!({"enabled": enabled, "retry_after_s": retry_after_s.unwrap_or(crate::shared::Maintenance::DEFAULT_RETRY_AFTER_S)}),
        ))
    }
}

fn account_json(account: &crate::store::AccountView) -> Value {
    json!({
        "id": &*account.id,
        "tier": &*account.tier,
        "balance_usd": account.balance.to_usd_string(),
        "held_usd": account.held.to_usd_string(),
        "created_at": account.created_at_ms / 1000,
    })
}

/// What a key body says of the spend cap.
enum CapChange {
    /// Neither field is there.
    Keep,
    /// `spend_cap_usd` is null (the period absent or null too).
    Clear,
    Set(SpendCap),
}

/// Reads `spend_cap_usd` (decimal USD, exact to the nano) and `spend_cap_period` (`day`,
/// `month`, `lifetime`): both, or neither, or a null cap.
fn spend_cap_of(value: &Value) -> Result<CapChange, AdminError> {
    let (limit, period) = (value.get("spend_cap_usd"), value.get("spend_cap_period"));
    match (limit, period) {
        (None, None) => Ok(CapChange::Keep),
        (Some(Value::Null), None | Some(Value::Null)) => Ok(CapChange::Clear),
        (Some(Value::Null), Some(_)) => {
            Err(bad("spend_cap_period", "spend_cap_period must be null or absent when spend_cap_usd is null."))
        }
        _ => {
            let Some(Value::String(limit)) = limit else {
                return Err(bad("spend_cap_usd", "spend_cap_usd must be a decimal USD string such as \"5.00\"."));
            };
            let limit = money::parse_usd(limit).map_err(|e| bad("spend_cap_usd", format!("spend_cap_usd: {e}")))?;
            if limit.0 > MAX_SPEND_CAP_NANOS {
                return Err(bad("spend_cap_usd", "spend_cap_usd is larger than any balance can be."));
            }
            let period = match period {
                Some(Value::String(text)) => CapPeriod::parse(text),
                _ => None,
            }
            .ok_or_else(|| bad("spend_cap_period", "spend_cap_period must be \"day\", \"month\" or \"lifetime\"."))?;
            Ok(CapChange::Set(SpendCap { limit, period }))
        }
    }
}

/// The largest cap: the largest balance the Redis store keeps exactly (2^53 - 1 nano-USD).
const MAX_SPEND_CAP_NANOS: u64 = (1 << 53) - 1;

fn parse_object(body: &[u8], empty_ok: bool) -> Result<Value, AdminError> {
    if body.is_empty() && empty_ok {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(admin_error(ErrorKind::InvalidJson, None, "The request body must be a JSON object.")),
    }
}

fn check_fields(value: &Value, allowed: &[&str]) -> Result<(), AdminError> {
    if let Some(map) = value.as_object() {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(admin_error(
                    ErrorKind::InvalidParameter,
                    None,
                    format!("Unknown field '{key}'; allowed: {}.", allowed.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn optional_string<'a>(value: &'a Value, field: &'static str) -> Result<Option<&'a str>, AdminError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad(field, format!("{field} must be a string."))),
    }
}

fn validate_id(id: &str, field: &'static str) -> Result<(), AdminError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ADMIN_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(bad(field, format!("{field} must be 1 to {MAX_ADMIN_ID_BYTES} letters, digits, '_' or '-'.")))
    }
}

/// Compares without an early exit, so response time does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
