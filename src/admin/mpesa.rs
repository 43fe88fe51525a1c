//! The operator's M-Pesa routes on the admin listener (SPEC §11.1):
//! `POST /admin/accounts/{id}/mpesa/stk-push` and `GET /admin/accounts/{id}/payments`.
//!
//! It owns their validation and answers; `admin.rs` routes to it and renders its refusals. It
//! records a pending payment only after Daraja accepted the STK Push (a refused or failed push
//! leaves nothing behind); a push Daraja accepted but the store could not record is a 503 that
//! says so and names its `CheckoutRequestID`. It never shows a secret or a full phone number.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::backend::daraja::mask_phone;
use crate::backend::upstream::client::Pool;
use crate::errors::ErrorKind;
use crate::shared::Shared;
use crate::store::payments::{PaymentRecord, PaymentStatus};
use crate::store::{StoreClient, StoreError};

/// Daraja takes at most KES 250,000 per STK Push.
pub const MAX_STK_AMOUNT_KES: u64 = 250_000;

/// A refusal: kind, parameter and message (`admin.rs` renders it).
pub type Refusal = (ErrorKind, Option<&'static str>, String);

/// The admin thread's M-Pesa state: its connections to Daraja.
pub struct MpesaAdmin {
    pool: Pool,
}

impl MpesaAdmin {
    pub fn new(shared: &Shared) -> MpesaAdmin {
        MpesaAdmin { pool: Pool::new(shared.metrics.admin.clone()) }
    }

    /// `POST /admin/accounts/{id}/mpesa/stk-push {"phone","amount_kes"}`.
    pub async fn stk_push(
        &self,
        shared: &Arc<Shared>,
        store: StoreClient<'_>,
        account_id: &str,
        body: &[u8],
    ) -> Result<(u16, Value), Refusal> {
        let bad = |param: &'static str, message: &str| (ErrorKind::InvalidParameter, Some(param), message.to_string());
        let Some(daraja) = shared.mpesa.as_ref() else {
            return Err((ErrorKind::UnknownEndpoint, None, "M-Pesa is not configured ([payments.mpesa]).".into()));
        };
        let value: Value = serde_json::from_slice(body).ok().filter(Value::is_object).ok_or((
            ErrorKind::InvalidJson,
            None,
            "The request body must be a JSON object.".to_string(),
        ))?;
        if let Some(key) =
            value.as_object().and_then(|m| m.keys().find(|k| !["phone", "amount_kes"].contains(&k.as_str())))
        {
            return Err((
                ErrorKind::InvalidParameter,
                None,
                format!("Unknown field '{key}'; allowed: phone, amount_kes."),
            ));
        }
        let phone = value.get("phone").and_then(Value::as_str).unwrap_or("");
        if !valid_phone(phone) {
            return Err(bad("phone", "phone must be a Safaricom number as 12 digits: 2547XXXXXXXX or 2541XXXXXXXX."));
        }
        let amount_kes = match value.get("amount_kes") {
            Some(Value::String(text)) => parse_whole_kes(text),
            _ => None,
        }
        .ok_or_else(|| {
            bad(
                "amount_kes",
                &format!("amount_kes must be a whole number of KES from 1 to {MAX_STK_AMOUNT_KES}, as a string."),
            )
        })?;
        let amount = shared
            .config
            .billing
            .kes_per_usd
            .to_nanos(&amount_kes.to_string())
            .map_err(|e| bad("amount_kes", &format!("amount_kes: {e}")))?;
        match store.account(account_id).await {
            Ok(_) => {}
            Err(StoreError::Unavailable) => {
                return Err((ErrorKind::ServiceUnavailable, None, "The store is unreachable.".into()));
            }
            Err(_) => return Err((ErrorKind::NotFound, None, "No such account.".into())),
        }
        let now_ms = shared.clock.now_ms();
        let accepted = daraja.stk_push(&self.pool, account_id, phone, amount_kes, now_ms).await.map_err(|error| {
            crate::log_warn!("mpesa STK Push for account {account_id} failed: {}", error.0);
            (ErrorKind::UpstreamUnavailable, None, error.0)
        })?;
        let record = PaymentRecord {
            id: format!("stk:{}", accepted.checkout_request_id),
            method: "stk_push",
            account_id: account_id.to_string(),
            checkout_request_id: Some(accepted.checkout_request_id.clone()),
            merchant_request_id: Some(accepted.merchant_request_id.clone()),
            receipt: None,
            amount_kes: Some(amount_kes.to_string()),
            session_id: None,
            amount_minor: None,
            currency: None,
            amount,
            status: PaymentStatus::Pending,
            result_code: None,
            result_desc: None,
            phone_masked: Some(mask_phone(phone)),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        };
        if let Err(error) = store.put_payment(&record).await {
            let checkout = &accepted.checkout_request_id;
            crate::log_error!(
                "mpesa STK Push {checkout} for account {account_id} ({amount_kes} KES) was sent to Daraja but not recorded ({error}): its callback will not credit; reconcile by hand"
            );
            return Ok(not_recorded(checkout, account_id));
        }
        crate::log_info!(
            "mpesa STK Push {} for account {account_id}: {amount_kes} KES pending",
            accepted.checkout_request_id
        );
        Ok((
            200,
            json!({
                "checkout_request_id": accepted.checkout_request_id,
                "merchant_request_id": accepted.merchant_request_id,
                "status": "pending",
                "amount_kes": amount_kes.to_string(),
                "amount_usd": amount.to_usd_string(),
            }),
        ))
    }

    /// `GET /admin/accounts/{id}/payments`.
    pub async fn payments(&self, store: StoreClient<'_>, account_id: &str) -> Result<(u16, Value), Refusal> {
        let unreachable = || (ErrorKind::ServiceUnavailable, None, "The store is unreachable.".to_string());
        match store.account(account_id).await {
            Ok(_) => {}
            Err(StoreError::Unavailable) => return Err(unreachable()),
            Err(_) => return Err((ErrorKind::NotFound, None, "No such account.".into())),
        }
        let records = store.payments(account_id).await.map_err(|_| unreachable())?;
        let data: Vec<Value> = records.iter().map(PaymentRecord::to_json).collect();
        Ok((200, json!({"object": "list", "data": data})))
    }
}

/// The answer when Daraja accepted a push the store then failed to record: 503 in the error
/// shape, saying so, with the `CheckoutRequestID` (also as its own field) for reconciling. The
/// phone may already show the prompt: sending the push again could charge the customer twice.
fn not_recorded(checkout: &str, account_id: &str) -> (u16, Value) {
    let spec = ErrorKind::ServiceUnavailable.spec();
    let message = format!(
        "The STK Push was sent (Daraja accepted it, CheckoutRequestID {checkout}) but the store did not record it: its callback will not credit the account. Do not send it again blindly; if the customer pays, credit the receipt by hand (POST /admin/accounts/{account_id}/topups)."
    );
    (
        spec.status,
        json!({"error": {"message": message, "type": spec.error_type, "param": null, "code": spec.code, "checkout_request_id": checkout}}),
    )
}

/// `2547XXXXXXXX` or `2541XXXXXXXX`.
pub fn valid_phone(phone: &str) -> bool {
    phone.len() == 12
        && phone.bytes().all(|b| b.is_ascii_digit())
        && (phone.starts_with("2547") || phone.starts_with("2541"))
}

/// A whole, positive KES amount no larger than Daraja allows.
pub fn parse_whole_kes(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('0') {
        return None;
    }
    text.parse().ok().filter(|&kes| (1..=MAX_STK_AMOUNT_KES).contains(&kes))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: only Safaricom numbers and whole KES amounts in range pass.
    #[test]
    fn validation_table() {
        assert!(valid_phone("254712345678") && valid_phone("254112345678"));
        assert!(!valid_phone("0712345678") && !valid_phone("25471234567x") && !valid_phone("255712345678"));
        assert_eq!(parse_whole_kes("500"), Some(500));
        assert_eq!(parse_whole_kes("250000"), Some(250_000));
        for bad in ["0", "-5", "5.5", "", "250001", "007", "1e3"] {
            assert_eq!(parse_whole_kes(bad), None, "{bad}");
        }
    }
}
