//! The payments listener (SPEC §11): the public endpoint payment providers call back, on its
//! own listener and thread, with the client listener's HTTP limits and timeouts.
//!
//! Routes: `POST /payments/stripe/webhook` (Stripe, `stripe`), the M-Pesa callbacks
//! (`/payments/mpesa/...`, `mpesa`), and `GET /healthz`. Every credit goes through the same
//! idempotent top-up as the admin API (reference = the provider's payment id), which flips the
//! tier and bumps the store's top-up generation that every worker of every node watches, so
//! the account is admitted again within a second; then it is listed once among the account's
//! payment records (`store::payments`), however often the provider delivers it.
//!
//! It must never credit before every check passed, never credit one payment twice, never
//! answer 2xx for a callback it could not record (the provider must retry), and never write a
//! secret, a signature or a full phone number to a log line or an answer.

pub mod hmac;
pub mod mpesa;
pub mod stripe;

use crate::backend::daraja;
use std::fmt;
use std::sync::Arc;

use monoio::io::AsyncWriteRent;
use serde_json::{Value, json};

use crate::config::Config;
use crate::errors::ErrorKind;
use crate::http::request::Method;
use crate::http::response::{self, ResponseContext};
use crate::http::server::{Handler, OutBufferPool, Request, ResponseSink};
use crate::limits::{MAX_ADMIN_ID_BYTES, MAX_PAYMENT_REFERENCE_BYTES};
use crate::metrics::{PaymentMetrics, PaymentProvider};
use crate::money::Nanos;
use crate::shared::Shared;
use crate::store::payments::{PaymentRecord, PaymentStatus};
use crate::store::{StoreClient, StoreConnections, StoreError};

use hmac::constant_time_eq;

/// The secrets the `[payments]` section names, read from the environment at start.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PaymentSecrets {
    /// `[payments.stripe] webhook_secret_env`.
    pub stripe_webhook_secret: Option<String>,
    /// `[payments.mpesa]`'s four secrets.
    pub mpesa: Option<daraja::MpesaSecrets>,
}

impl fmt::Debug for PaymentSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the values, only which are present.
        f.debug_struct("PaymentSecrets")
            .field("stripe_webhook_secret", &self.stripe_webhook_secret.is_some())
            .field("mpesa", &self.mpesa.is_some())
            .finish()
    }
}

impl PaymentSecrets {
    /// Reads every secret the configuration names (`Config::missing_env_vars` has checked
    /// they are set before `serve` starts).
    pub fn from_env(config: &Config) -> PaymentSecrets {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let Some(payments) = &config.payments else { return PaymentSecrets::default() };
        PaymentSecrets {
            stripe_webhook_secret: payments.stripe.as_ref().and_then(|stripe| read(&stripe.webhook_secret_env)),
            mpesa: payments.mpesa.as_ref().map(|mpesa| daraja::MpesaSecrets {
                consumer_key: read(&mpesa.consumer_key_env).unwrap_or_default(),
                consumer_secret: read(&mpesa.consumer_secret_env).unwrap_or_default(),
                passkey: read(&mpesa.passkey_env).unwrap_or_default(),
                callback_token: read(&mpesa.callback_token_env).unwrap_or_default(),
            }),
        }
    }
}

/// The answer to one provider call.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer { status: 200, body }
    }

    /// An error in the gateway's JSON shape, status from the kind's table.
    fn error(kind: ErrorKind, param: Option<&str>, message: &str) -> Answer {
        let spec = kind.spec();
        Answer {
            status: spec.status,
            body: json!({"error": {"message": message, "type": spec.error_type, "param": param, "code": spec.code}}),
        }
    }
}

pub struct PaymentsHandler {
    shared: Arc<Shared>,
    secrets: PaymentSecrets,
    out_buffers: OutBufferPool,
    /// The payments thread's connections to the store.
    store_connections: StoreConnections,
    /// This thread's connections to Daraja (STK Query).
    daraja_pool: crate::backend::upstream::client::Pool,
}

impl Handler for PaymentsHandler {
    fn out_buffers(&self) -> &OutBufferPool {
        &self.out_buffers
    }

    async fn handle<S: AsyncWriteRent>(&self, request: &Request<'_>, sink: &mut ResponseSink<S>) {
        let context = ResponseContext { request_id: None, rates: None, keep_alive: sink.keep_alive };
        let answer = self.route(request).await;
        let bytes = serde_json::to_vec(&answer.body).unwrap_or_default();
        let allow: [(&str, &[u8]); 1] = [("allow", b"POST")];
        let extra: &[(&str, &[u8])] = if answer.status == 405 { &allow } else { &[] };
        response::write_full(&mut sink.out, answer.status, "application/json", extra, &context, &bytes);
    }
}

impl PaymentsHandler {
    pub fn new(shared: Arc<Shared>, secrets: PaymentSecrets) -> PaymentsHandler {
        PaymentsHandler {
            shared: shared.clone(),
            secrets,
            out_buffers: OutBufferPool::default(),
            store_connections: StoreConnections::default(),
            daraja_pool: crate::backend::upstream::client::Pool::new(shared.metrics.payments.listener.clone()),
        }
    }

    fn store(&self) -> StoreClient<'_> {
        self.shared.store.client(&self.store_connections)
    }

    fn metrics(&self) -> &PaymentMetrics {
        &self.shared.metrics.payments
    }

    async fn route(&self, request: &Request<'_>) -> Answer {
        let method = if request.head.method == Method::Head { Method::Get } else { request.head.method };
        match (method, request.head.path) {
            (Method::Get, "/healthz") => Answer::ok(json!({"status": "ok"})),
            (Method::Post, "/payments/stripe/webhook") if self.secrets.stripe_webhook_secret.is_some() => {
                self.stripe_webhook(request).await
            }
            (_, "/payments/stripe/webhook") if self.secrets.stripe_webhook_secret.is_some() => {
                Answer::error(ErrorKind::MethodNotAllowed, None, "Only POST is allowed here.")
            }
            (Method::Post, path) if path.starts_with("/payments/mpesa/") => match mpesa::route_of(path) {
                Some((route, token)) => self.mpesa(route, token, request).await,
                None => Answer::error(ErrorKind::UnknownEndpoint, None, "Unknown payments endpoint."),
            },
            _ => Answer::error(ErrorKind::UnknownEndpoint, None, "Unknown payments endpoint."),
        }
    }

    /// `POST /payments/stripe/webhook`: signature, then the event, then at most one credit.
    async fn stripe_webhook(&self, request: &Request<'_>) -> Answer {
        const PROVIDER: PaymentProvider = PaymentProvider::Stripe;
        let secret = self.secrets.stripe_webhook_secret.as_deref().unwrap_or_default();
        let header = header_value(request.head_bytes, "stripe-signature");
        let now_s = self.shared.clock.now_ms() / 1000;
        if let Err(rejection) = stripe::verify_signature(secret.as_bytes(), header, request.body, now_s) {
            self.reject(PROVIDER, rejection.label());
            return Answer::error(
                ErrorKind::InvalidParameter,
                Some("Stripe-Signature"),
                "The Stripe-Signature header does not verify (bad, missing or older than 300 s).",
            );
        }
        let action = match stripe::event_action(request.body, self.shared.config.billing.kes_per_usd) {
            Ok(action) => action,
            Err(rejection) => {
                self.reject(PROVIDER, rejection.label());
                return Answer::error(ErrorKind::InvalidParameter, None, "The event cannot be credited.");
            }
        };
        match action {
            stripe::EventAction::Ignore(why) => {
                self.metrics().count_callback(PROVIDER, "ignored");
                Answer::ok(json!({"received": true, "credited": false, "ignored": why}))
            }
            stripe::EventAction::Credit { account_id, amount, reference, session_id, amount_minor, currency } => {
                match self.credit(PROVIDER, &account_id, amount, &reference).await {
                    Credit::Done { duplicate } => {
                        let now_ms = self.shared.clock.now_ms();
                        let record = PaymentRecord {
                            id: format!("stripe:{reference}"),
                            method: "checkout_session",
                            account_id,
                            checkout_request_id: None,
                            merchant_request_id: None,
                            receipt: Some(reference),
                            amount_kes: None,
                            session_id,
                            amount_minor: Some(amount_minor),
                            currency: Some(currency.to_string()),
                            amount,
                            status: PaymentStatus::Credited,
                            result_code: None,
                            result_desc: None,
                            phone_masked: None,
                            created_at_ms: now_ms,
                            updated_at_ms: now_ms,
                        };
                        if !self.list_credit(PROVIDER, &record, duplicate).await {
                            return retry_later();
                        }
                        Answer::ok(json!({"received": true, "credited": !duplicate, "duplicate": duplicate}))
                    }
                    // A paid session for no account of ours: retrying never helps; the operator
                    // hears of it from the log and the metric.
                    Credit::UnknownAccount => Answer::ok(json!({"received": true, "credited": false})),
                    Credit::Retry => {
                        Answer::error(ErrorKind::ServiceUnavailable, None, "The store is unreachable; retry later.")
                    }
                }
            }
        }
    }

    /// One idempotent top-up of `amount` to `account_id` under `reference`, counted and logged.
    async fn credit(&self, provider: PaymentProvider, account_id: &str, amount: Nanos, reference: &str) -> Credit {
        let name = provider.label();
        if account_id.len() > MAX_ADMIN_ID_BYTES || reference.len() > MAX_PAYMENT_REFERENCE_BYTES {
            self.reject(
                provider,
                if account_id.len() > MAX_ADMIN_ID_BYTES { "unknown_account" } else { "malformed_event" },
            );
            return Credit::UnknownAccount;
        }
        let now_ms = self.shared.clock.now_ms();
        match self.store().topup(account_id, amount, reference, now_ms).await {
            Ok(result) if result.duplicate => {
                self.metrics().count_callback(provider, "duplicate");
                crate::log_info!(
                    "{name} payment {reference} for account {account_id} was credited before; nothing changed"
                );
                Credit::Done { duplicate: true }
            }
            Ok(result) => {
                self.metrics().count_callback(provider, "credited");
                crate::log_info!(
                    "{name} payment {reference} credited {} USD to account {account_id} (balance {} USD, tier {})",
                    amount.to_usd_string(),
                    result.balance.to_usd_string(),
                    result.tier
                );
                Credit::Done { duplicate: false }
            }
            Err(StoreError::NotFound) => {
                self.reject(provider, "unknown_account");
                crate::log_warn!(
                    "{name} payment {reference} names account {account_id}, which does not exist; not credited"
                );
                Credit::UnknownAccount
            }
            Err(StoreError::Overflow) => {
                self.reject(provider, "bad_amount");
                crate::log_warn!(
                    "{name} payment {reference} would overflow account {account_id}'s balance; not credited"
                );
                Credit::UnknownAccount
            }
            Err(StoreError::Unavailable | StoreError::AlreadyExists) => {
                self.metrics().count_callback(provider, "retry");
                crate::log_warn!(
                    "{name} payment {reference} could not reach the store; answered so the provider retries"
                );
                Credit::Retry
            }
        }
    }

    /// Lists a credited payment once: a record already listed under its id (the provider
    /// delivered it again) stays as it is. A repeated delivery (`duplicate`: its reference was
    /// credited before) is listed only when the store says the reference was credited to this
    /// account, which repairs a listing lost after the credit; a reference credited to another
    /// account (a second session of one PaymentIntent for someone else, a C2B TransID that was
    /// an STK receipt elsewhere) is not this account's payment. False when the store did not
    /// answer: the caller answers so the provider retries, and the retry lists it.
    async fn list_credit(&self, provider: PaymentProvider, record: &PaymentRecord, duplicate: bool) -> bool {
        let reference = record.receipt.as_deref().unwrap_or_default();
        let listed = if duplicate {
            match self.store().reference_owner(reference).await {
                Ok(Some(owner)) if owner == record.account_id => self.store().add_payment(record).await.map(|_| ()),
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            }
        } else {
            self.store().add_payment(record).await.map(|_| ())
        };
        match listed {
            Ok(()) | Err(StoreError::NotFound) => true,
            Err(error) => {
                self.metrics().count_callback(provider, "retry");
                crate::log_warn!(
                    "{} payment {reference} credited to account {} but not listed ({error}); answered so the provider retries",
                    provider.label(),
                    record.account_id
                );
                false
            }
        }
    }

    fn reject(&self, provider: PaymentProvider, reason: &'static str) {
        self.metrics().count_callback(provider, "rejected");
        self.metrics().count_rejection(provider, reason);
        crate::log_warn!("{} callback rejected: {reason}", provider.label());
    }
}

/// The M-Pesa provider of every count below.
const MPESA: PaymentProvider = PaymentProvider::Mpesa;

/// The well-formed answer Daraja stops retrying on.
fn accepted() -> Answer {
    Answer::ok(json!({"ResultCode": 0, "ResultDesc": "Accepted"}))
}

fn retry_later() -> Answer {
    Answer::error(ErrorKind::ServiceUnavailable, None, "The store is unreachable; retry later.")
}

/// The M-Pesa callbacks (`payments::mpesa` parses them).
impl PaymentsHandler {
    /// Every M-Pesa callback: token, source address, then the route's own checks.
    async fn mpesa(&self, route: mpesa::MpesaRoute, token: &str, request: &Request<'_>) -> Answer {
        let Some(daraja) = self.shared.mpesa.as_ref() else {
            return Answer::error(ErrorKind::UnknownEndpoint, None, "Unknown payments endpoint.");
        };
        if !constant_time_eq(token.as_bytes(), daraja.callback_token().as_bytes()) {
            self.reject(MPESA, "wrong_token");
            return Answer::error(ErrorKind::UnknownEndpoint, None, "Unknown payments endpoint.");
        }
        let allowed =
            &self.shared.config.payments.as_ref().and_then(|p| p.mpesa.as_ref()).map(|m| &m.allowed_source_ips);
        if let Some(allowed) = allowed
            && !allowed.is_empty()
            && !request.peer.is_some_and(|peer| allowed.contains(&peer.ip()))
        {
            self.reject(MPESA, "source_ip");
            crate::log_warn!(
                "mpesa callback from {} refused: not in allowed_source_ips",
                request.peer.map(|p| p.ip().to_string()).unwrap_or_default()
            );
            return Answer::error(ErrorKind::UnknownEndpoint, None, "Unknown payments endpoint.");
        }
        match route {
            mpesa::MpesaRoute::Stk => self.stk_callback(request.body).await,
            mpesa::MpesaRoute::C2bValidation => self.c2b_validation(request.body).await,
            mpesa::MpesaRoute::C2bConfirmation => self.c2b_confirmation(request.body).await,
        }
    }

    async fn stk_callback(&self, body: &[u8]) -> Answer {
        let Some(result) = mpesa::parse_stk_callback(body) else {
            self.reject(MPESA, "malformed_callback");
            return Answer::error(ErrorKind::InvalidJson, None, "Not a Daraja STK callback.");
        };
        let checkout = result.checkout_request_id.as_str();
        let mut record = match self.store().checkout_payment(checkout).await {
            Ok(record) => record,
            Err(StoreError::Unavailable) => {
                self.metrics().count_callback(MPESA, "retry");
                crate::log_warn!("mpesa checkout {checkout}: the store is unreachable; answered so Daraja retries");
                return retry_later();
            }
            Err(_) => {
                self.reject(MPESA, "unknown_checkout");
                crate::log_warn!(
                    "mpesa checkout {checkout} (ResultCode {}, receipt {}) is no payment of ours: never recorded (a push the store failed to record), expired or dropped; not credited",
                    result.result_code,
                    result.receipt.as_deref().unwrap_or("none")
                );
                return accepted();
            }
        };
        let now_ms = self.shared.clock.now_ms();
        match record.status {
            PaymentStatus::Pending => {}
            PaymentStatus::Credited if result.result_code == 0 && result.receipt == record.receipt => {
                self.metrics().count_callback(MPESA, "duplicate");
                crate::log_info!("mpesa checkout {checkout} was credited before; nothing changed");
                return accepted();
            }
            PaymentStatus::Credited | PaymentStatus::Failed => {
                self.reject(MPESA, "unknown_checkout");
                return accepted();
            }
        }
        if result.result_code != 0 {
            record.status = PaymentStatus::Failed;
            record.result_code = Some(result.result_code);
            record.result_desc = Some(result.result_desc.clone());
            record.updated_at_ms = now_ms;
            if self.store().put_payment(&record).await.is_err() {
                self.metrics().count_callback(MPESA, "retry");
                return retry_later();
            }
            self.metrics().count_callback(MPESA, "failed");
            crate::log_info!(
                "mpesa checkout {checkout} for account {} failed: ResultCode {} ({})",
                record.account_id,
                result.result_code,
                result.result_desc
            );
            return accepted();
        }
        let Some(receipt) = result.receipt.clone().filter(|r| !r.is_empty() && r.len() <= 64) else {
            self.reject(MPESA, "malformed_callback");
            return accepted();
        };
        let pending_kes = record.amount_kes.as_deref().unwrap_or_default();
        if !result.amount_kes.as_deref().is_some_and(|amount| mpesa::amount_is(amount, pending_kes)) {
            self.reject(MPESA, "amount_mismatch");
            crate::log_warn!(
                "mpesa checkout {checkout}: callback amount {:?} KES is not the pending {pending_kes} KES; not credited",
                result.amount_kes
            );
            return accepted();
        }
        if self.confirm_with_query()
            && let Some(daraja) = self.shared.mpesa.as_ref()
        {
            match daraja.stk_query(&self.daraja_pool, checkout, now_ms).await {
                Ok(daraja::QueryAnswer::Paid) => {}
                Ok(daraja::QueryAnswer::NotPaid(why)) => {
                    self.reject(MPESA, "not_confirmed");
                    crate::log_warn!("mpesa checkout {checkout}: STK Query does not confirm it ({why}); not credited");
                    return accepted();
                }
                Err(error) => {
                    self.metrics().count_callback(MPESA, "retry");
                    crate::log_warn!("mpesa checkout {checkout}: {}; answered so Daraja retries", error.0);
                    return Answer::error(ErrorKind::ServiceUnavailable, None, "Cannot confirm the payment yet.");
                }
            }
        }
        match self.credit(MPESA, &record.account_id, record.amount, &receipt).await {
            Credit::Done { .. } => {}
            Credit::UnknownAccount => return accepted(),
            Credit::Retry => return retry_later(),
        }
        record.status = PaymentStatus::Credited;
        record.receipt = Some(receipt);
        record.result_code = Some(0);
        record.result_desc = Some(result.result_desc);
        record.updated_at_ms = now_ms;
        if self.store().put_payment(&record).await.is_err() {
            // Credited, not yet marked: the retry finds the receipt credited and marks it.
            return retry_later();
        }
        accepted()
    }

    fn confirm_with_query(&self) -> bool {
        self.shared.config.payments.as_ref().and_then(|p| p.mpesa.as_ref()).is_some_and(|m| m.confirm_with_query)
    }

    /// C2B validation: accept payments to an account that exists.
    async fn c2b_validation(&self, body: &[u8]) -> Answer {
        let rejected = || Answer::ok(json!({"ResultCode": "C2B00012", "ResultDesc": "Rejected"}));
        let Some(payment) = mpesa::parse_c2b(body) else {
            self.reject(MPESA, "malformed_callback");
            return rejected();
        };
        if !self.our_shortcode(&payment) {
            return rejected();
        }
        match self.store().account(&payment.account_id).await {
            Ok(_) => {
                self.metrics().count_callback(MPESA, "ignored");
                Answer::ok(json!({"ResultCode": "0", "ResultDesc": "Accepted"}))
            }
            Err(StoreError::Unavailable) => {
                self.metrics().count_callback(MPESA, "retry");
                retry_later()
            }
            Err(_) => {
                self.reject(MPESA, "unknown_account");
                rejected()
            }
        }
    }

    /// C2B confirmation: credit `TransAmount` KES once per `TransID` to `BillRefNumber`.
    async fn c2b_confirmation(&self, body: &[u8]) -> Answer {
        let Some(payment) = mpesa::parse_c2b(body) else {
            self.reject(MPESA, "malformed_callback");
            return Answer::error(ErrorKind::InvalidJson, None, "Not a Daraja C2B confirmation.");
        };
        if !self.our_shortcode(&payment) {
            return accepted();
        }
        let amount = match self.shared.config.billing.kes_per_usd.to_nanos(&payment.amount_kes) {
            Ok(amount) if amount > Nanos::ZERO => amount,
            _ => {
                self.reject(MPESA, "bad_amount");
                return accepted();
            }
        };
        let duplicate = match self.credit(MPESA, &payment.account_id, amount, &payment.trans_id).await {
            Credit::Done { duplicate } => duplicate,
            Credit::UnknownAccount => return accepted(),
            Credit::Retry => return retry_later(),
        };
        let now_ms = self.shared.clock.now_ms();
        let record = PaymentRecord {
            id: format!("c2b:{}", payment.trans_id),
            method: "c2b",
            account_id: payment.account_id.clone(),
            checkout_request_id: None,
            merchant_request_id: None,
            receipt: Some(payment.trans_id.clone()),
            amount_kes: Some(payment.amount_kes.clone()),
            session_id: None,
            amount_minor: None,
            currency: None,
            amount,
            status: PaymentStatus::Credited,
            result_code: Some(0),
            result_desc: None,
            phone_masked: payment.msisdn.as_deref().map(mpesa::mask_phone),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        };
        if !self.list_credit(MPESA, &record, duplicate).await {
            return retry_later();
        }
        accepted()
    }

    /// Whether a C2B payment is to the configured `shortcode` (a payment to another paybill
    /// is not ours to credit, whatever it names); counted and logged when not.
    fn our_shortcode(&self, payment: &mpesa::C2bPayment) -> bool {
        let ours = self.shared.config.payments.as_ref().and_then(|p| p.mpesa.as_ref()).map(|m| m.shortcode.as_str());
        if ours.is_some() && payment.shortcode.as_deref() == ours {
            return true;
        }
        self.reject(MPESA, "wrong_shortcode");
        crate::log_warn!(
            "mpesa C2B {} is for shortcode {}, not {}; not credited",
            payment.trans_id,
            payment.shortcode.as_deref().unwrap_or("(none)"),
            ours.unwrap_or("(none)")
        );
        false
    }
}

/// What a credit attempt came to.
enum Credit {
    Done {
        duplicate: bool,
    },
    /// Nothing to credit and nothing a retry would change.
    UnknownAccount,
    /// The store did not answer: the provider must retry.
    Retry,
}

/// The value of header `name` (lower case) in a raw request head, when it appears exactly once.
fn header_value<'h>(head_bytes: &'h [u8], name: &str) -> Option<&'h [u8]> {
    let mut found = None;
    for line in head_bytes.split(|&byte| byte == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&byte| byte == b':') else { continue };
        if line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            if found.is_some() {
                return None;
            }
            found = Some(line[colon + 1..].trim_ascii());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a header is found case-insensitively, trimmed, and refused when repeated.
    #[test]
    fn header_lookup() {
        let head = b"POST /x HTTP/1.1\r\nHost: a\r\nStripe-Signature:  t=1,v1=ab \r\n\r\n";
        assert_eq!(header_value(head, "stripe-signature"), Some(&b"t=1,v1=ab"[..]));
        assert_eq!(header_value(head, "x-missing"), None);
        let twice = b"POST /x HTTP/1.1\r\nstripe-signature: a\r\nStripe-Signature: b\r\n\r\n";
        assert_eq!(header_value(twice, "stripe-signature"), None);
    }
}
