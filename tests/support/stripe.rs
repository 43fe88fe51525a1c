//! A Stripe event signer, written independently of the gateway's verifier: the
//! `Stripe-Signature` header Stripe documents (`t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">`),
//! and `checkout.session.completed` events shaped like Stripe's.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

use super::http::{Response, send_one};

pub const WEBHOOK_SECRET: &str = "whsec_test_4eC39HqLyjWDarjtT1zdp7dc";

/// HMAC-SHA256 per RFC 2104, as lower-case hex.
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut padded = [0u8; 64];
    if key.len() > 64 {
        padded[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        padded[..key.len()].copy_from_slice(key);
    }
    let inner_key: Vec<u8> = padded.iter().map(|b| b ^ 0x36).collect();
    let outer_key: Vec<u8> = padded.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&inner_key).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(&outer_key).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header Stripe sends for `body` signed at `t` with `secret`.
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    format!("t={t},v1={}", hmac_hex(secret.as_bytes(), format!("{t}.{body}").as_bytes()))
}

/// A `checkout.session.completed` event.
pub fn checkout_completed(
    event_id: &str,
    session_id: &str,
    account: &str,
    amount_total: u64,
    currency: &str,
    payment_intent: Option<&str>,
    payment_status: &str,
) -> String {
    let intent = payment_intent.map_or("null".to_string(), |pi| format!("\"{pi}\""));
    format!(
        r#"{{"id":"{event_id}","object":"event","api_version":"2024-06-20","created":1767225600,"type":"checkout.session.completed","livemode":false,"data":{{"object":{{"id":"{session_id}","object":"checkout.session","mode":"payment","client_reference_id":"{account}","amount_subtotal":{amount_total},"amount_total":{amount_total},"currency":"{currency}","payment_intent":{intent},"payment_status":"{payment_status}","status":"complete"}}}}}}"#
    )
}

/// POSTs `body` to the webhook with `signature` (none when `None`).
pub fn post_webhook(payments: SocketAddr, body: &str, signature: Option<&str>) -> Response {
    let header = signature.map_or(String::new(), |s| format!("stripe-signature: {s}\r\n"));
    let request = format!(
        "POST /payments/stripe/webhook HTTP/1.1\r\nhost: pay\r\ncontent-type: application/json; charset=utf-8\r\nuser-agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n{header}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    send_one(payments, request.as_bytes())
}
