//! The Safaricom Daraja client (SPEC §11.1): the OAuth token (cached until it expires), STK
//! Push (`/mpesa/stkpush/v1/processrequest`) and STK Query (`/mpesa/stkpushquery/v1/query`).
//!
//! Requests go through the upstream HTTP/1.1 client (`backend::upstream::client`: TLS with web
//! PKI roots plus `[payments.mpesa] ca_file` for `https`, plain TCP only for an `http` base URL, connect and response
//! timeouts), over the caller's own connection pool. It never logs a secret, the token, the
//! password or a full phone number, and it never touches the store.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::client::{self, Pool};
use crate::config::{MpesaConfig, UpstreamConfig};

/// Connect timeout to Daraja.
const DARAJA_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// From request to response head (Daraja answers STK Push in about a second).
const DARAJA_RESPONSE_TIMEOUT_MS: u64 = 15_000;
/// A cached token is dropped this long before Daraja says it expires.
const TOKEN_EXPIRY_MARGIN_MS: u64 = 60_000;
/// Kenya is UTC+3 all year (no daylight saving); Daraja's Timestamp is in that time.
const EAT_OFFSET_MS: u64 = 3 * 3_600_000;
/// Daraja shows at most 12 characters of AccountReference and 13 of TransactionDesc.
const MAX_ACCOUNT_REFERENCE_CHARS: usize = 12;
const TRANSACTION_DESC: &str = "Fikra top-up";

/// The `[payments.mpesa]` secrets, read from the environment at start.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MpesaSecrets {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub passkey: String,
    pub callback_token: String,
}

/// Why a Daraja call failed: what the admin caller reads in the 502.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarajaError(pub String);

/// Daraja accepted an STK Push: the customer's phone shows the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StkAccepted {
    pub merchant_request_id: String,
    pub checkout_request_id: String,
}

/// What STK Query says of a checkout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryAnswer {
    /// `ResultCode` 0: paid.
    Paid,
    /// Any other result code, or still being processed.
    NotPaid(String),
}

struct CachedToken {
    token: String,
    valid_until_ms: u64,
}

pub struct Daraja {
    target: Arc<UpstreamTarget>,
    shortcode: String,
    callback_url: String,
    basic_authorization: String,
    passkey: String,
    callback_token: String,
    token: RwLock<Option<CachedToken>>,
}

impl Daraja {
    pub fn new(config: &MpesaConfig, secrets: &MpesaSecrets) -> io::Result<Arc<Daraja>> {
        let upstream = UpstreamConfig {
            name: "mpesa".into(),
            base_url: config.base_url.clone(),
            scheme: config.scheme,
            host: config.host.clone(),
            port: config.port,
            base_path: String::new(),
            api_key_env: None,
            ca_file: config.ca_file.clone(),
            connect_timeout_ms: DARAJA_CONNECT_TIMEOUT_MS,
            response_timeout_ms: DARAJA_RESPONSE_TIMEOUT_MS,
            pool_idle_timeout_ms: crate::limits::UPSTREAM_POOL_IDLE_TIMEOUT_MS,
            responses: false,
        };
        let target = Arc::new(crate::backend::upstream::build_target(&upstream)?);
        // Daraja's addresses are looked up again in the background, as every upstream's.
        let weak = vec![Arc::downgrade(&target)];
        std::thread::Builder::new()
            .name("fikra-dns-mpesa".into())
            .spawn(move || crate::backend::upstream::refresh_dns_forever(weak))?;
        let credentials = format!("{}:{}", secrets.consumer_key, secrets.consumer_secret);
        Ok(Arc::new(Daraja {
            target,
            shortcode: config.shortcode.clone(),
            callback_url: format!("{}/payments/mpesa/stk/{}", config.callback_base_url, secrets.callback_token),
            basic_authorization: format!("Basic {}", base64(credentials.as_bytes())),
            passkey: secrets.passkey.clone(),
            callback_token: secrets.callback_token.clone(),
            token: RwLock::new(None),
        }))
    }

    /// The secret in every callback path.
    pub fn callback_token(&self) -> &str {
        &self.callback_token
    }

    /// Asks Daraja to prompt `phone` for `amount_kes` (whole KES) to `account_id`.
    pub async fn stk_push(
        &self,
        pool: &Pool,
        account_id: &str,
        phone: &str,
        amount_kes: u64,
        now_ms: u64,
    ) -> Result<StkAccepted, DarajaError> {
        let timestamp = eat_timestamp(now_ms);
        let reference: String = account_id.chars().take(MAX_ACCOUNT_REFERENCE_CHARS).collect();
        let body = json!({
            "BusinessShortCode": self.shortcode,
            "Password": password(&self.shortcode, &self.passkey, &timestamp),
            "Timestamp": timestamp,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": amount_kes,
            "PartyA": phone,
            "PartyB": self.shortcode,
            "PhoneNumber": phone,
            "CallBackURL": self.callback_url,
            "AccountReference": reference,
            "TransactionDesc": TRANSACTION_DESC,
        });
        let (status, answer) = self.post(pool, "/mpesa/stkpush/v1/processrequest", &body, now_ms).await?;
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_string);
        match (status, field("ResponseCode").as_deref(), field("CheckoutRequestID"), field("MerchantRequestID")) {
            (200, Some("0"), Some(checkout), Some(merchant)) if !checkout.is_empty() => {
                Ok(StkAccepted { merchant_request_id: merchant, checkout_request_id: checkout })
            }
            _ => Err(refusal("STK Push", status, &answer)),
        }
    }

    /// Asks Daraja whether the checkout was paid.
    pub async fn stk_query(
        &self,
        pool: &Pool,
        checkout_request_id: &str,
        now_ms: u64,
    ) -> Result<QueryAnswer, DarajaError> {
        let timestamp = eat_timestamp(now_ms);
        let body = json!({
            "BusinessShortCode": self.shortcode,
            "Password": password(&self.shortcode, &self.passkey, &timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        });
        let (status, answer) = self.post(pool, "/mpesa/stkpushquery/v1/query", &body, now_ms).await?;
        let code = answer.get("ResultCode").map(|code| match code {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        match (status, code) {
            (200, Some(code)) if code == "0" => Ok(QueryAnswer::Paid),
            (200, Some(code)) => Ok(QueryAnswer::NotPaid(format!("ResultCode {code}"))),
            // "The transaction is being processed" and the like: not paid (yet).
            (400..=599, None) if answer.get("errorCode").is_some() => {
                Ok(QueryAnswer::NotPaid(refusal("STK Query", status, &answer).0))
            }
            _ => Err(refusal("STK Query", status, &answer)),
        }
    }

    /// POSTs `body` with a bearer token; a token Daraja calls invalid is fetched again once.
    async fn post(&self, pool: &Pool, path: &str, body: &Value, now_ms: u64) -> Result<(u16, Value), DarajaError> {
        let payload = body.to_string();
        for attempt in 0..2 {
            let token = self.token(pool, now_ms).await?;
            let request = format!(
                "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\naccept: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
                self.target.host_header,
                payload.len()
            );
            let (status, answer) = self.exchange(pool, request.into_bytes()).await?;
            let invalid_token = status == 401
                || answer.get("errorCode").and_then(Value::as_str).is_some_and(|code| code.starts_with("404.001"));
            if invalid_token && attempt == 0 {
                if let Ok(mut cached) = self.token.write() {
                    *cached = None;
                }
                continue;
            }
            return Ok((status, answer));
        }
        Err(DarajaError("Daraja refused the access token twice".into()))
    }

    /// The cached token, or a new one from `/oauth/v1/generate`.
    async fn token(&self, pool: &Pool, now_ms: u64) -> Result<String, DarajaError> {
        if let Ok(cached) = self.token.read()
            && let Some(cached) = cached.as_ref()
            && now_ms < cached.valid_until_ms
        {
            return Ok(cached.token.clone());
        }
        let request = format!(
            "GET /oauth/v1/generate?grant_type=client_credentials HTTP/1.1\r\nhost: {}\r\nauthorization: {}\r\naccept: application/json\r\n\r\n",
            self.target.host_header, self.basic_authorization
        );
        let (status, answer) = self.exchange(pool, request.into_bytes()).await?;
        let token = answer.get("access_token").and_then(Value::as_str).filter(|token| !token.is_empty());
        let expires_in_s = answer.get("expires_in").and_then(|value| match value {
            Value::String(text) => text.parse::<u64>().ok(),
            other => other.as_u64(),
        });
        let (200, Some(token), Some(expires_in_s)) = (status, token, expires_in_s) else {
            return Err(refusal("OAuth", status, &answer));
        };
        let valid_until_ms = now_ms + (expires_in_s * 1000).saturating_sub(TOKEN_EXPIRY_MARGIN_MS);
        if let Ok(mut cached) = self.token.write() {
            *cached = Some(CachedToken { token: token.to_string(), valid_until_ms });
        }
        Ok(token.to_string())
    }

    /// One request and its whole JSON answer (non-JSON bodies read as `null`).
    async fn exchange(&self, pool: &Pool, mut request: Vec<u8>) -> Result<(u16, Value), DarajaError> {
        let unreachable =
            |failure: client::UpstreamFailure| DarajaError(format!("Daraja is unreachable ({failure:?})"));
        let mut exchange = client::start(&self.target, 0, pool, &mut request).await.map_err(unreachable)?;
        let mut body = Vec::new();
        exchange
            .read_to_end(
                &mut body,
                Duration::from_millis(DARAJA_RESPONSE_TIMEOUT_MS),
                crate::clock::deadline_after_ms(DARAJA_RESPONSE_TIMEOUT_MS),
            )
            .await
            .map_err(unreachable)?;
        exchange.finish_reusable(pool);
        Ok((exchange.head.status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// The reason Daraja gave, for the 502 and the log (its `errorMessage` or `ResponseDescription`).
fn refusal(call: &str, status: u16, answer: &Value) -> DarajaError {
    let text = |name: &str| answer.get(name).and_then(Value::as_str);
    let reason = match (text("errorCode"), text("errorMessage"), text("ResponseDescription")) {
        (Some(code), Some(message), _) => format!("{message} ({code})"),
        (_, Some(message), _) | (_, _, Some(message)) => message.to_string(),
        _ => "no reason given".to_string(),
    };
    DarajaError(format!("Daraja {call} answered {status}: {reason}"))
}

/// `YYYYMMDDHHMMSS` in Kenya time (UTC+3).
pub fn eat_timestamp(now_ms: u64) -> String {
    let local_s = (now_ms + EAT_OFFSET_MS) / 1000;
    let (year, month, day) = crate::clock::civil_from_days((local_s / 86_400) as i64);
    let second_of_day = local_s % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// `base64(shortcode + passkey + timestamp)`.
pub fn password(shortcode: &str, passkey: &str, timestamp: &str) -> String {
    base64(format!("{shortcode}{passkey}{timestamp}").as_bytes())
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = (u32::from(group[0]) << 16)
            | (u32::from(*group.get(1).unwrap_or(&0)) << 8)
            | u32::from(*group.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `2547****5678`: enough to recognise, not enough to call.
pub fn mask_phone(phone: &str) -> String {
    if phone.len() < 8 || !phone.is_ascii() {
        return "****".into();
    }
    format!("{}****{}", &phone[..4], &phone[phone.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: base64 matches RFC 4648's test vectors.
    #[test]
    fn base64_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    // Goal: the timestamp is Kenya time: 2026-12-31 22:30:05 UTC is 2027-01-01 01:30:05 EAT.
    #[test]
    fn timestamp_is_kenya_time() {
        let utc_ms = 1_798_756_205_000; // 2026-12-31T22:30:05Z
        assert_eq!(eat_timestamp(utc_ms), "20270101013005");
        assert_eq!(password("174379", "pk", "20270101013005"), base64(b"174379pk20270101013005"));
    }
}
