//! M-Pesa callbacks on the payments listener (SPEC §11.1): the STK Push result
//! (`/payments/mpesa/stk/{token}`) and C2B paybill validation and confirmation
//! (`/payments/mpesa/c2b/{validation|confirmation}/{token}`). This module is the pure part
//! (paths, payloads, amounts, masking); the handler in `payments` does the IO, in this order.
//!
//! Each check comes before any write: the secret path token (constant time; wrong → 404,
//! nothing changed), the source address when an allowlist is configured, then the payload (a
//! C2B payment must name the configured `BusinessShortCode`).
//! An STK result credits only a pending checkout, with `ResultCode` 0, the pending amount and
//! (with `confirm_with_query`) Daraja's STK Query agreeing; the credit is the idempotent top-up
//! with the M-Pesa receipt as reference, so a repeated callback credits nothing more. It never
//! answers 2xx for what it could not record (the store or Daraja did not answer: Daraja
//! retries), and never logs the token, a secret or a full phone number.

use serde_json::Value;

/// Which M-Pesa callback a path names.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MpesaRoute {
    Stk,
    C2bValidation,
    C2bConfirmation,
}

/// The route and token of `/payments/mpesa/...` paths.
pub fn route_of(path: &str) -> Option<(MpesaRoute, &str)> {
    let rest = path.strip_prefix("/payments/mpesa/")?;
    let (route, token) = if let Some(token) = rest.strip_prefix("stk/") {
        (MpesaRoute::Stk, token)
    } else if let Some(token) = rest.strip_prefix("c2b/validation/") {
        (MpesaRoute::C2bValidation, token)
    } else {
        (MpesaRoute::C2bConfirmation, rest.strip_prefix("c2b/confirmation/")?)
    };
    (!token.is_empty() && !token.contains('/')).then_some((route, token))
}

/// A parsed `Body.stkCallback`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StkResult {
    pub checkout_request_id: String,
    pub result_code: i64,
    pub result_desc: String,
    /// `CallbackMetadata` items (present when `ResultCode` is 0).
    pub amount_kes: Option<String>,
    pub receipt: Option<String>,
}

/// Reads Daraja's STK callback body; `None` when it is not one.
pub fn parse_stk_callback(body: &[u8]) -> Option<StkResult> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let callback = value.get("Body")?.get("stkCallback")?;
    let checkout_request_id = callback.get("CheckoutRequestID")?.as_str().filter(|id| !id.is_empty())?.to_string();
    let result_code = match callback.get("ResultCode")? {
        Value::Number(number) => number.as_i64()?,
        Value::String(text) => text.parse().ok()?,
        _ => return None,
    };
    let result_desc = callback.get("ResultDesc").and_then(Value::as_str).unwrap_or("").to_string();
    let mut amount_kes = None;
    let mut receipt = None;
    if let Some(items) = callback.get("CallbackMetadata").and_then(|m| m.get("Item")).and_then(Value::as_array) {
        for item in items {
            match (item.get("Name").and_then(Value::as_str), item.get("Value")) {
                (Some("Amount"), Some(value)) => amount_kes = value_text(value),
                (Some("MpesaReceiptNumber"), Some(value)) => receipt = value_text(value),
                _ => {}
            }
        }
    }
    Some(StkResult { checkout_request_id, result_code, result_desc, amount_kes, receipt })
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Whether M-Pesa's amount text (`500`, `500.0`, `500.00`) is exactly `whole_kes`.
pub fn amount_is(text: &str, whole_kes: &str) -> bool {
    let (units, fraction) = text.split_once('.').unwrap_or((text, ""));
    units == whole_kes && fraction.bytes().all(|b| b == b'0')
}

pub use crate::backend::daraja::mask_phone;

/// The fields of a C2B validation or confirmation that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct C2bPayment {
    pub trans_id: String,
    pub amount_kes: String,
    pub account_id: String,
    pub msisdn: Option<String>,
    /// `BusinessShortCode`: the paybill paid (must be the configured `shortcode`).
    pub shortcode: Option<String>,
}

pub fn parse_c2b(body: &[u8]) -> Option<C2bPayment> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| value.get(name).and_then(value_text).filter(|t| !t.is_empty());
    let trans_id = text("TransID").filter(|id| id.len() <= 64)?;
    Some(C2bPayment {
        trans_id,
        amount_kes: text("TransAmount")?,
        account_id: text("BillRefNumber")?.trim().to_string(),
        msisdn: text("MSISDN"),
        shortcode: text("BusinessShortCode"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: paths map to routes and tokens; anything else is not an M-Pesa path.
    #[test]
    fn routes() {
        assert_eq!(route_of("/payments/mpesa/stk/abc"), Some((MpesaRoute::Stk, "abc")));
        assert_eq!(route_of("/payments/mpesa/c2b/validation/t"), Some((MpesaRoute::C2bValidation, "t")));
        assert_eq!(route_of("/payments/mpesa/c2b/confirmation/t"), Some((MpesaRoute::C2bConfirmation, "t")));
        assert_eq!(route_of("/payments/mpesa/stk/"), None);
        assert_eq!(route_of("/payments/mpesa/stk/a/b"), None);
        assert_eq!(route_of("/payments/mpesa/other/t"), None);
    }

    // Goal: Daraja's documented callback reads to exactly its fields; amounts compare exactly.
    #[test]
    fn stk_callback_fields() {
        let body = br#"{"Body":{"stkCallback":{"MerchantRequestID":"29115-1","CheckoutRequestID":"ws_CO_1","ResultCode":0,"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[{"Name":"Amount","Value":500.00},{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},{"Name":"TransactionDate","Value":20191219102115},{"Name":"PhoneNumber","Value":254708374149}]}}}}"#;
        let result = parse_stk_callback(body).unwrap();
        assert_eq!(result.checkout_request_id, "ws_CO_1");
        assert_eq!(result.result_code, 0);
        assert_eq!(result.receipt.as_deref(), Some("NLJ7RT61SV"));
        assert!(amount_is(result.amount_kes.as_deref().unwrap(), "500"));
        assert!(!amount_is("500.5", "500") && !amount_is("50", "500") && amount_is("500", "500"));
        assert_eq!(parse_stk_callback(b"{}"), None);
        assert_eq!(mask_phone("254712345678"), "2547****5678");
    }
}
