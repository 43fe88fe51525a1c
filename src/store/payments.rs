//! Payment records (SPEC §11.1): each M-Pesa payment the gateway started or was told of,
//! pending, failed or credited, kept in the store so every node sees the same ones.
//!
//! It owns the record's shape and its JSON form in the store (the `StoreClient` calls that
//! read and write records are in `store`). It never moves money: a credit is the idempotent top-up
//! (`StoreClient::topup`, reference = the M-Pesa receipt); a record only says what happened.
//! Redis keeps an account's records in one hash in the account's hash slot
//! (`PREFIX:{ACCOUNT}:payments`) and the checkout index in its own slot
//! (`PREFIX:mpesa:checkout:{ID}` → account), so Cluster needs no cross-slot call.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::money::Nanos;

/// Most records `payments` returns (newest first).
pub const MAX_PAYMENTS_LISTED: usize = 200;

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
    /// `stk:<CheckoutRequestID>` or `c2b:<TransID>`: unique within the account.
    pub id: String,
    /// `stk_push` or `c2b`.
    pub method: &'static str,
    pub account_id: String,
    pub checkout_request_id: Option<String>,
    pub merchant_request_id: Option<String>,
    /// The M-Pesa receipt (MpesaReceiptNumber or TransID) once credited.
    pub receipt: Option<String>,
    /// As M-Pesa states it, e.g. `500`.
    pub amount_kes: String,
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
    /// The stored (and listed) JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "provider": "mpesa",
            "method": self.method,
            "account_id": self.account_id,
            "checkout_request_id": self.checkout_request_id,
            "merchant_request_id": self.merchant_request_id,
            "receipt": self.receipt,
            "amount_kes": self.amount_kes,
            "amount_usd": self.amount.to_usd_string(),
            "amount_nanos": self.amount.0,
            "status": self.status.as_str(),
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "phone": self.phone_masked,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        })
    }

    pub fn from_json(value: &Value) -> Option<PaymentRecord> {
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_string);
        Some(PaymentRecord {
            id: text("id")?,
            method: match value.get("method")?.as_str()? {
                "stk_push" => "stk_push",
                "c2b" => "c2b",
                _ => return None,
            },
            account_id: text("account_id")?,
            checkout_request_id: text("checkout_request_id"),
            merchant_request_id: text("merchant_request_id"),
            receipt: text("receipt"),
            amount_kes: text("amount_kes")?,
            amount: Nanos(value.get("amount_nanos")?.as_u64()?),
            status: PaymentStatus::parse(value.get("status")?.as_str()?)?,
            result_code: value.get("result_code").and_then(Value::as_i64),
            result_desc: text("result_desc"),
            phone_masked: text("phone"),
            created_at_ms: value.get("created_at_ms")?.as_u64()?,
            updated_at_ms: value.get("updated_at_ms")?.as_u64()?,
        })
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

    // Goal: a record survives its stored JSON form exactly.
    #[test]
    fn record_round_trips() {
        let record = PaymentRecord {
            id: "stk:ws_CO_1".into(),
            method: "stk_push",
            account_id: "acme".into(),
            checkout_request_id: Some("ws_CO_1".into()),
            merchant_request_id: Some("29115-1".into()),
            receipt: None,
            amount_kes: "500".into(),
            amount: Nanos(3_846_153_846),
            status: PaymentStatus::Pending,
            result_code: None,
            result_desc: None,
            phone_masked: Some("2547****5678".into()),
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        assert_eq!(PaymentRecord::from_json(&record.to_json()), Some(record));
    }
}
