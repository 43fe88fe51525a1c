//! The payments listener (SPEC §11): the public endpoint payment providers call back, on its
//! own listener and thread, with the client listener's HTTP limits and timeouts.
//!
//! Routes: `POST /payments/stripe/webhook` (Stripe, `stripe`), and `GET /healthz`. Every
//! credit goes through the same idempotent top-up as the admin API (reference = the
//! provider's payment id), which flips the tier and bumps the store's top-up generation that
//! every worker of every node watches, so the account is admitted again within a second.
//!
//! It must never credit before every check passed, never credit one payment twice, never
//! answer 2xx for a callback it could not record (the provider must retry), and never write a
//! secret, a signature or a full phone number to a log line or an answer.

pub mod hmac;
pub mod stripe;

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
use crate::store::{StoreClient, StoreConnections, StoreError};

/// The secrets the `[payments]` section names, read from the environment at start.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PaymentSecrets {
    /// `[payments.stripe] webhook_secret_env`.
    pub stripe_webhook_secret: Option<String>,
}

impl fmt::Debug for PaymentSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the values, only which are present.
        f.debug_struct("PaymentSecrets").field("stripe_webhook_secret", &self.stripe_webhook_secret.is_some()).finish()
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
            shared,
            secrets,
            out_buffers: OutBufferPool::default(),
            store_connections: StoreConnections::default(),
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
            stripe::EventAction::Credit { account_id, amount, reference } => {
                match self.credit(PROVIDER, &account_id, amount, &reference).await {
                    Credit::Done { duplicate } => {
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

    fn reject(&self, provider: PaymentProvider, reason: &'static str) {
        self.metrics().count_callback(provider, "rejected");
        self.metrics().count_rejection(provider, reason);
        crate::log_warn!("{} callback rejected: {reason}", provider.label());
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
