//! Stripe webhooks (SPEC §11.2): the `Stripe-Signature` check and the one event that credits,
//! `checkout.session.completed` with `payment_status: "paid"`.
//!
//! Pure logic: it takes the secret, the header, the raw body and `now` as inputs and returns
//! what to do; the payments handler does the store call. It never credits anything itself,
//! never compares a signature in variable time and never logs a secret or a signature.

use serde_json::Value;

use super::hmac::{MAC_BYTES, constant_time_eq, hmac_sha256};
use crate::money::{NANOS_PER_USD, Nanos, UnitsPerUsd};

/// Oldest (and furthest in the future) a signed timestamp may be, in seconds.
pub const SIGNATURE_TOLERANCE_S: u64 = 300;
/// Most `v1` values one header may carry (Stripe sends one per active secret: two while a
/// secret is being rolled).
const MAX_SIGNATURES: usize = 8;
/// Nano-USD in one US cent.
const NANOS_PER_CENT: u64 = NANOS_PER_USD / 100;

/// Why a webhook was refused (the label of `fikra_payment_rejections_total`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SignatureRejection {
    /// No `Stripe-Signature` header.
    Missing,
    /// Not `t=<unix>,v1=<hex>[,v1=...]`.
    Malformed,
    /// The timestamp is more than `SIGNATURE_TOLERANCE_S` from now.
    Stale,
    /// No `v1` value matches.
    Mismatch,
}

impl SignatureRejection {
    pub fn label(self) -> &'static str {
        match self {
            SignatureRejection::Missing => "missing_signature",
            SignatureRejection::Malformed => "malformed_signature",
            SignatureRejection::Stale => "stale_signature",
            SignatureRejection::Mismatch => "bad_signature",
        }
    }
}

/// Checks `header` against `body` signed with `secret` at most `SIGNATURE_TOLERANCE_S` from
/// `now_s`. Every `v1` value is compared (constant time each), so timing says nothing about
/// which one matched; other schemes (`v0`, ...) are ignored, as Stripe's documentation says.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&[u8]>,
    body: &[u8],
    now_s: u64,
) -> Result<(), SignatureRejection> {
    let header = header.ok_or(SignatureRejection::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| SignatureRejection::Malformed)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<[u8; MAC_BYTES]> = Vec::new();
    for element in header.split(',') {
        let (name, value) = element.trim().split_once('=').ok_or(SignatureRejection::Malformed)?;
        match name {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "t" => return Err(SignatureRejection::Malformed),
            "v1" => {
                if signatures.len() == MAX_SIGNATURES {
                    return Err(SignatureRejection::Malformed);
                }
                signatures.push(parse_hex_mac(value).ok_or(SignatureRejection::Malformed)?);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureRejection::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureRejection::Malformed);
    }
    if timestamp.is_empty() || timestamp.len() > 19 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureRejection::Malformed);
    }
    let signed_s: u64 = timestamp.parse().map_err(|_| SignatureRejection::Malformed)?;
    if now_s.abs_diff(signed_s) > SIGNATURE_TOLERANCE_S {
        return Err(SignatureRejection::Stale);
    }
    let expected = hmac_sha256(secret, &[timestamp.as_bytes(), b".", body]);
    let matched = signatures.iter().fold(false, |matched, candidate| matched | constant_time_eq(candidate, &expected));
    if matched { Ok(()) } else { Err(SignatureRejection::Mismatch) }
}

fn parse_hex_mac(text: &str) -> Option<[u8; MAC_BYTES]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * MAC_BYTES {
        return None;
    }
    let mut mac = [0u8; MAC_BYTES];
    for (index, pair) in bytes.chunks_exact(2).enumerate() {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        mac[index] = (high * 16 + low) as u8;
    }
    Some(mac)
}

/// What a verified event asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// Credit `amount` to `account_id` once per `reference` (the session's `payment_intent`,
    /// else `session_id`); `amount_minor` of `currency` is what the customer paid.
    Credit {
        account_id: String,
        amount: Nanos,
        reference: String,
        session_id: Option<String>,
        amount_minor: u64,
        currency: &'static str,
    },
    /// A type (or a session state) that credits nothing: answered 200.
    Ignore(&'static str),
}

/// Why a verified event cannot be credited although it claims a paid session.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventRejection {
    /// Not a JSON object with a string `type`.
    Malformed,
    /// A paid session without a `client_reference_id` (no account to credit).
    NoAccount,
    /// `amount_total` missing, not a positive integer, or too large.
    BadAmount,
    /// A currency other than `usd` and `kes`.
    UnsupportedCurrency,
}

impl EventRejection {
    pub fn label(self) -> &'static str {
        match self {
            EventRejection::Malformed => "malformed_event",
            EventRejection::NoAccount => "no_account",
            EventRejection::BadAmount => "bad_amount",
            EventRejection::UnsupportedCurrency => "unsupported_currency",
        }
    }
}

/// Reads a verified event. Minor units convert exactly: a US cent is 10,000,000 nano-USD; a
/// KES cent converts at `kes_per_usd`, rounding down to the nano-dollar (as every KES top-up).
pub fn event_action(body: &[u8], kes_per_usd: UnitsPerUsd) -> Result<EventAction, EventRejection> {
    let event: Value = serde_json::from_slice(body).map_err(|_| EventRejection::Malformed)?;
    let kind = event.get("type").and_then(Value::as_str).ok_or(EventRejection::Malformed)?;
    if kind != "checkout.session.completed" {
        return Ok(EventAction::Ignore("other_event_type"));
    }
    let session = event.get("data").and_then(|data| data.get("object")).ok_or(EventRejection::Malformed)?;
    if session.get("payment_status").and_then(Value::as_str) != Some("paid") {
        return Ok(EventAction::Ignore("not_paid"));
    }
    let account_id = session
        .get("client_reference_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or(EventRejection::NoAccount)?;
    let minor_units = session.get("amount_total").and_then(Value::as_u64).filter(|&units| units > 0);
    let minor_units = minor_units.ok_or(EventRejection::BadAmount)?;
    let (amount, currency) = match session.get("currency").and_then(Value::as_str) {
        Some("usd") => (minor_units.checked_mul(NANOS_PER_CENT).map(Nanos).ok_or(EventRejection::BadAmount)?, "usd"),
        Some("kes") => {
            let kes = format!("{}.{:02}", minor_units / 100, minor_units % 100);
            (kes_per_usd.to_nanos(&kes).map_err(|_| EventRejection::BadAmount)?, "kes")
        }
        _ => return Err(EventRejection::UnsupportedCurrency),
    };
    if amount == Nanos::ZERO {
        return Err(EventRejection::BadAmount);
    }
    // One credit per payment: the PaymentIntent when the session has one, else the session.
    let session_id = session.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
    let reference = session
        .get("payment_intent")
        .and_then(Value::as_str)
        .filter(|intent| !intent.is_empty())
        .or(session_id)
        .ok_or(EventRejection::Malformed)?;
    Ok(EventAction::Credit {
        account_id: account_id.to_string(),
        amount,
        reference: reference.to_string(),
        session_id: session_id.map(str::to_string),
        amount_minor: minor_units,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::super::hmac::to_hex;
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const BODY: &[u8] = br#"{"type":"ping"}"#;

    fn header_for(t: u64, body: &[u8]) -> String {
        let mac = hmac_sha256(SECRET, &[t.to_string().as_bytes(), b".", body]);
        format!("t={t},v1={}", to_hex(&mac))
    }

    // Goal: each header shape gets exactly its verdict.
    #[test]
    fn signature_table() {
        let now = 1_767_225_600u64;
        let good = header_for(now, BODY);
        let good_mac = good.split_once("v1=").unwrap().1.to_string();
        let wrong = "0".repeat(64);
        let cases: Vec<(Option<String>, u64, Result<(), SignatureRejection>)> = vec![
            (Some(good.clone()), now, Ok(())),
            (Some(good.clone()), now + 300, Ok(())),
            (Some(good.clone()), now + 301, Err(SignatureRejection::Stale)),
            (Some(good.clone()), now - 301, Err(SignatureRejection::Stale)),
            (Some(format!("t={now},v1={wrong},v1={good_mac}")), now, Ok(())),
            (Some(format!("t={now},v0={wrong},v1={good_mac}")), now, Ok(())),
            (Some(format!("t={now},v1={wrong}")), now, Err(SignatureRejection::Mismatch)),
            (Some(format!("t={},v1={good_mac}", now + 1)), now, Err(SignatureRejection::Mismatch)),
            (Some(format!("v1={good_mac}")), now, Err(SignatureRejection::Malformed)),
            (Some(format!("t={now}")), now, Err(SignatureRejection::Malformed)),
            (Some(format!("t={now},v1=zz")), now, Err(SignatureRejection::Malformed)),
            (Some(format!("t=-1,v1={good_mac}")), now, Err(SignatureRejection::Malformed)),
            (Some(format!("t={now},t={now},v1={good_mac}")), now, Err(SignatureRejection::Malformed)),
            (None, now, Err(SignatureRejection::Missing)),
        ];
        for (header, now_s, expected) in cases {
            let verdict = verify_signature(SECRET, header.as_deref().map(str::as_bytes), BODY, now_s);
            assert_eq!(verdict, expected, "{header:?} at {now_s}");
        }
        // The body is covered: one changed byte fails.
        assert_eq!(
            verify_signature(SECRET, Some(good.as_bytes()), br#"{"type":"pong"}"#, now),
            Err(SignatureRejection::Mismatch)
        );
    }

    // Goal: paid sessions credit exact nano-USD under the right reference; the rest is ignored
    // or refused with its reason.
    #[test]
    fn event_table() {
        let rate = UnitsPerUsd::parse("130").unwrap();
        let session = |fields: &str| {
            format!(r#"{{"type":"checkout.session.completed","data":{{"object":{{"id":"cs_1",{fields}}}}}}}"#)
        };
        let credit = |account: &str, nanos: u64, reference: &str, minor: u64, currency: &'static str| {
            Ok(EventAction::Credit {
                account_id: account.into(),
                amount: Nanos(nanos),
                reference: reference.into(),
                session_id: Some("cs_1".into()),
                amount_minor: minor,
                currency,
            })
        };
        let cases = [
            (
                session(
                    r#""payment_status":"paid","client_reference_id":"acme","amount_total":1234,"currency":"usd","payment_intent":"pi_9""#,
                ),
                credit("acme", 12_340_000_000, "pi_9", 1234, "usd"),
            ),
            (
                session(
                    r#""payment_status":"paid","client_reference_id":"acme","amount_total":50000,"currency":"kes","payment_intent":null"#,
                ),
                credit("acme", 3_846_153_846, "cs_1", 50_000, "kes"),
            ),
            (
                session(r#""payment_status":"unpaid","client_reference_id":"acme","amount_total":1,"currency":"usd""#),
                Ok(EventAction::Ignore("not_paid")),
            ),
            (session(r#""payment_status":"paid","amount_total":100,"currency":"usd""#), Err(EventRejection::NoAccount)),
            (
                session(r#""payment_status":"paid","client_reference_id":"acme","amount_total":0,"currency":"usd""#),
                Err(EventRejection::BadAmount),
            ),
            (
                session(r#""payment_status":"paid","client_reference_id":"acme","amount_total":100,"currency":"eur""#),
                Err(EventRejection::UnsupportedCurrency),
            ),
            (
                r#"{"type":"payment_intent.succeeded","data":{}}"#.to_string(),
                Ok(EventAction::Ignore("other_event_type")),
            ),
            ("[1]".to_string(), Err(EventRejection::Malformed)),
        ];
        for (body, expected) in cases {
            assert_eq!(event_action(body.as_bytes(), rate), expected, "{body}");
        }
    }
}
