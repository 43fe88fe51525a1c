//! Payment records (SPEC §11): each M-Pesa payment the gateway started or was told of
//! (pending, failed or credited) and each Stripe payment it credited, kept in the store so
//! every node sees the same ones.
//!
//! It owns the record's shape, its JSON form in the store and the bounds on how many are kept
//! (the `StoreClient` calls that read and write records are in `store`). It never moves money:
//! a credit is the idempotent top-up (`StoreClient::topup`, reference = the provider's receipt);
//! a record only says what happened. Redis keeps an account's records in one hash in the
//! account's hash slot (`PREFIX:{ACCOUNT}:payments`) and the STK checkout index in its own slot
//! (`PREFIX:mpesa:checkout:{ID}` → account, expiring after `CHECKOUT_INDEX_TTL_S`), so Cluster
//! needs no cross-slot call.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::money::Nanos;

/// Most records kept per account, on both stores: writing a new one beyond it drops the
/// oldest (by creation time, then id), so an account's records never grow without bound. A
/// dropped pending STK Push is then an unknown checkout: its callback credits nothing.
pub const MAX_PAYMENTS_KEPT: usize = 200;
/// Most records `payments` returns (newest first): all that are kept.
pub const MAX_PAYMENTS_LISTED: usize = MAX_PAYMENTS_KEPT;
/// How long Redis keeps an STK Push's checkout index (`PREFIX:mpesa:checkout:{ID}`), from its
/// last write: 7 days. The customer's prompt expires within about two minutes and Daraja's
/// callback retries are over within hours, so a callback never outlives it; after it, the
/// callback is an unknown checkout (accepted, not credited). The embedded store drops an
/// index entry with its record instead.
pub const CHECKOUT_INDEX_TTL_S: u64 = 7 * 24 * 3600;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending,
    Failed,
    Credited,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Credited => "credited",
        }
    }

    fn parse(text: &str) -> Option<PaymentStatus> {
        match text {
            "pending" => Some(PaymentStatus::Pending),
            "failed" => Some(PaymentStatus::Failed),
            "credited" => Some(PaymentStatus::Credited),
            _ => None,
        }
    }
}

/// One payment as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRecord {
    /// `stk:<CheckoutRequestID>`, `c2b:<TransID>` or `stripe:<reference>`: unique within the
    /// account.
    pub id: String,
    /// `stk_push` or `c2b` (M-Pesa), `checkout_session` (Stripe).
    pub method: &'static str,
    pub account_id: String,
    pub checkout_request_id: Option<String>,
    pub merchant_request_id: Option<String>,
    /// The top-up reference once credited: the M-Pesa receipt (MpesaReceiptNumber or TransID),
    /// or Stripe's `payment_intent` (else the session id).
    pub receipt: Option<String>,
    /// M-Pesa: the amount as M-Pesa states it, e.g. `500`.
    pub amount_kes: Option<String>,
    /// Stripe: the Checkout Session id, `amount_total` in minor units and its `currency`.
    pub session_id: Option<String>,
    pub amount_minor: Option<u64>,
    pub currency: Option<String>,
    /// What the payment is worth in nano-USD (credited, or to be credited).
    pub amount: Nanos,
    pub status: PaymentStatus,
    pub result_code: Option<i64>,
    pub result_desc: Option<String>,
    /// The payer's number with its middle digits hidden (`2547****5678`).
    pub phone_masked: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl PaymentRecord {
    /// `mpesa` or `stripe`, from the method.
    pub fn provider(&self) -> &'static str {
        if self.method == "checkout_session" { "stripe" } else { "mpesa" }
    }

    /// The stored (and listed) JSON form: the fields every record has, then the provider's.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "id": self.id,
            "provider": self.provider(),
            "method": self.method,
            "account_id": self.account_id,
            "reference": self.receipt,
            "amount_usd": self.amount.to_usd_string(),
            "amount_nanos": self.amount.0,
            "status": self.status.as_str(),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        });
        let provider_fields = if self.provider() == "stripe" {
            json!({
                "session_id": self.session_id,
                "amount_minor": self.amount_minor,
                "currency": self.currency,
            })
        } else {
            json!({
                "checkout_request_id": self.checkout_request_id,
                "merchant_request_id": self.merchant_request_id,
                "receipt": self.receipt,
                "amount_kes": self.amount_kes,
                "result_code": self.result_code,
                "result_desc": self.result_desc,
                "phone": self.phone_masked,
            })
        };
        if let (Some(all), Value::Object(extra)) = (value.as_object_mut(), provider_fields) {
            all.extend(extra);
        }
        value
    }

    pub fn from_json(value: &Value) -> Option<PaymentRecord> {
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_string);
        let method = match value.get("method")?.as_str()? {
            "stk_push" => "stk_push",
            "c2b" => "c2b",
            "checkout_session" => "checkout_session",
            _ => return None,
        };
        let stripe = method == "checkout_session";
        Some(PaymentRecord {
            id: text("id")?,
            method,
            account_id: text("account_id")?,
            checkout_request_id: text("checkout_request_id"),
            merchant_request_id: text("merchant_request_id"),
            receipt: if stripe { text("reference") } else { text("receipt") },
            amount_kes: if stripe { None } else { Some(text("amount_kes")?) },
            session_id: text("session_id"),
            amount_minor: value.get("amount_minor").and_then(Value::as_u64),
            currency: text("currency"),
            amount: Nanos(value.get("amount_nanos")?.as_u64()?),
            status: PaymentStatus::parse(value.get("status")?.as_str()?)?,
            result_code: value.get("result_code").and_then(Value::as_i64),
            result_desc: text("result_desc"),
            phone_masked: text("phone"),
            created_at_ms: value.get("created_at_ms")?.as_u64()?,
            updated_at_ms: value.get("updated_at_ms")?.as_u64()?,
        })
    }

    /// The order the bound keeps: newer first (creation time, then id).
    pub fn newest_first(a: &PaymentRecord, b: &PaymentRecord) -> std::cmp::Ordering {
        b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.id.cmp(&a.id))
    }
}

/// The embedded store's payment records (`store::embedded`): every record of this node, by account then record id, and the checkout index.
#[derive(Default)]
pub struct PaymentBook {
    pub(crate) by_account: HashMap<String, HashMap<String, PaymentRecord>>,
    pub(crate) checkouts: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: M-Pesa and Stripe records survive their stored JSON form exactly, and each lists
    // exactly its provider's fields.
    #[test]
    fn record_round_trips() {
        let record = PaymentRecord {
            id: "stk:ws_CO_1".into(),
            method: "stk_push",
            account_id: "acme".into(),
            checkout_request_id: Some("ws_CO_1".into()),
            merchant_request_id: Some("29115-1".into()),
            receipt: None,
            amount_kes: Some("500".into()),
            session_id: None,
            amount_minor: None,
            currency: None,
            amount: Nanos(3_846_153_846),
            status: PaymentStatus::Pending,
            result_code: None,
            result_desc: None,
            phone_masked: Some("2547****5678".into()),
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        assert_eq!(PaymentRecord::from_json(&record.to_json()), Some(record.clone()));
        let card = PaymentRecord {
            id: "stripe:pi_1".into(),
            method: "checkout_session",
            checkout_request_id: None,
            merchant_request_id: None,
            receipt: Some("pi_1".into()),
            amount_kes: None,
            session_id: Some("cs_1".into()),
            amount_minor: Some(500),
            currency: Some("usd".into()),
            amount: Nanos(5_000_000_000),
            status: PaymentStatus::Credited,
            phone_masked: None,
            ..record
        };
        assert_eq!(
            card.to_json(),
            json!({
                "id": "stripe:pi_1", "provider": "stripe", "method": "checkout_session", "account_id": "acme",
                "reference": "pi_1", "session_id": "cs_1", "amount_minor": 500, "currency": "usd",
                "amount_usd": "5.000000000", "amount_nanos": 5_000_000_000u64, "status": "credited",
                "created_at_ms": 1, "updated_at_ms": 2
            })
        );
        assert_eq!(PaymentRecord::from_json(&card.to_json()), Some(card));
    }
}
