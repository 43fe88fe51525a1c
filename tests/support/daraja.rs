//! A Safaricom Daraja stand-in, written from Daraja's documentation independently of the
//! gateway's client: an HTTP/1.1 server in the test process serving
//! `GET /oauth/v1/generate?grant_type=client_credentials` (Basic consumer key:secret),
//! `POST /mpesa/stkpush/v1/processrequest` and `POST /mpesa/stkpushquery/v1/query` with their
//! documented payloads and error shapes (`{"requestId","errorCode","errorMessage"}`), checking
//! the bearer token, the password (base64 of shortcode + passkey + timestamp) and the fields;
//! plus the STK callback and C2B payloads Daraja posts to the gateway. It serves plain HTTP, or
//! HTTPS (rustls) with a certificate from a CA the test generates (`start_tls`), as the real
//! Daraja does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use serde_json::{Value, json};

use super::http::{Response, send_one};

pub const CONSUMER_KEY: &str = "GtUQ8mJ0yBd5tqkZkC1y";
pub const CONSUMER_SECRET: &str = "uAyw2bD1pLWnTHvE";
pub const PASSKEY: &str = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919";
pub const CALLBACK_TOKEN: &str = "cbtok_9f2c4e7a1b3d5f60";
pub const SHORTCODE: &str = "174379";
/// A number the stand-in refuses as Daraja does ("Invalid PhoneNumber").
pub const REFUSED_PHONE: &str = "254700000000";

#[derive(Default)]
pub struct DarajaState {
    pub tokens_issued: u32,
    pub pushes: Vec<Value>,
    pub queries: Vec<Value>,
    /// STK Query's ResultCode per checkout (default "0": paid).
    pub query_results: HashMap<String, String>,
    next_checkout: u32,
    tokens: Vec<String>,
    /// Runs once the next accepted STK Push is recorded, before it is answered (a test stops
    /// Redis there: "Daraja accepted, the gateway cannot record it").
    pub on_push: Option<Box<dyn FnMut() + Send>>,
}

pub struct DarajaStandIn {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<DarajaState>>,
    /// While set, every connection is closed without an answer (Daraja unreachable).
    pub down: Arc<AtomicBool>,
    /// Whether it speaks HTTPS.
    tls: bool,
}

fn base64(bytes: &[u8]) -> String {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(table[(n >> 18) as usize & 63] as char);
        out.push(table[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { table[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { table[n as usize & 63] as char } else { '=' });
    }
    out
}

impl DarajaStandIn {
    /// Plain HTTP on a free port.
    pub fn start() -> DarajaStandIn {
        DarajaStandIn::start_with(None)
    }

    /// HTTPS on a free port, with a `localhost` / 127.0.0.1 certificate signed by a CA
    /// written to `directory`; returns the stand-in and the CA's PEM file (the gateway's
    /// `ca_file`).
    pub fn start_tls(directory: &Path) -> (DarajaStandIn, PathBuf) {
        let (ca, cert, key) = super::certificates::write_certificates(directory);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&cert).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        (DarajaStandIn::start_with(Some(Arc::new(config))), ca)
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> DarajaStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(DarajaState::default()));
        let down = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_down, secure) = (state.clone(), down.clone(), tls.is_some());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, down, tls) = (thread_state.clone(), thread_down.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else { return };
                        serve(rustls::StreamOwned::new(connection, stream), &state, &down);
                    }
                    None => serve(stream, &state, &down),
                });
            }
        });
        DarajaStandIn { addr, state, down, tls: secure }
    }

    /// `https://localhost:PORT` (the certificate's name) or `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        if self.tls { format!("https://localhost:{}", self.addr.port()) } else { format!("http://{}", self.addr) }
    }

    pub fn set_query_result(&self, checkout: &str, code: &str) {
        self.state.lock().unwrap().query_results.insert(checkout.to_string(), code.to_string());
    }

    /// Runs `hook` after the next STK Push is accepted, before its answer is sent.
    pub fn on_next_push(&self, hook: impl FnMut() + Send + 'static) {
        self.state.lock().unwrap().on_push = Some(Box::new(hook));
    }
}

fn serve(stream: impl Read + Write, state: &Mutex<DarajaState>, down: &AtomicBool) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if down.load(Ordering::Acquire) {
            return; // closed without an answer
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (status, answer) = route(&target, &headers, &body, state);
        let text = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        let writer = reader.get_mut();
        if writer.write_all(response.as_bytes()).and_then(|()| writer.flush()).is_err() {
            return;
        }
    }
}

fn error(status: u16, code: &str, message: &str) -> (u16, Value) {
    (status, json!({"requestId": "16813-1590513-1", "errorCode": code, "errorMessage": message}))
}

fn route(target: &str, headers: &HashMap<String, String>, body: &[u8], state: &Mutex<DarajaState>) -> (u16, Value) {
    let mut state = state.lock().unwrap();
    let authorization = headers.get("authorization").cloned().unwrap_or_default();
    if target == "/oauth/v1/generate?grant_type=client_credentials" {
        let expected = format!("Basic {}", base64(format!("{CONSUMER_KEY}:{CONSUMER_SECRET}").as_bytes()));
        if authorization != expected {
            return error(400, "400.008.01", "Invalid Authentication passed");
        }
        state.tokens_issued += 1;
        let token = format!("tok{}Xy7", state.tokens_issued);
        state.tokens.push(token.clone());
        return (200, json!({"access_token": token, "expires_in": "3599"}));
    }
    let bearer = authorization.strip_prefix("Bearer ").unwrap_or("");
    if !state.tokens.iter().any(|t| t == bearer) {
        return error(404, "404.001.03", "Invalid Access Token");
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(400, "400.002.05", "Invalid Request Payload");
    };
    let text = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or("").to_string();
    let timestamp = text("Timestamp");
    if timestamp.len() != 14 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return error(400, "400.002.02", "Bad Request - Invalid Timestamp");
    }
    if text("BusinessShortCode") != SHORTCODE
        || text("Password") != base64(format!("{SHORTCODE}{PASSKEY}{timestamp}").as_bytes())
    {
        return error(500, "500.001.1001", "Wrong credentials");
    }
    match target {
        "/mpesa/stkpush/v1/processrequest" => {
            if text("TransactionType") != "CustomerPayBillOnline" || text("PartyB") != SHORTCODE {
                return error(400, "400.002.02", "Bad Request - Invalid TransactionType");
            }
            if request.get("Amount").and_then(Value::as_u64).is_none_or(|a| a < 1) {
                return error(400, "400.002.02", "Bad Request - Invalid Amount");
            }
            let phone = text("PhoneNumber");
            if phone == REFUSED_PHONE || phone != text("PartyA") {
                return error(400, "400.002.02", "Bad Request - Invalid PhoneNumber");
            }
            if !text("CallBackURL").starts_with("https://") {
                return error(400, "400.002.02", "Bad Request - Invalid CallBackURL");
            }
            state.next_checkout += 1;
            let n = state.next_checkout;
            state.pushes.push(request.clone());
            if let Some(mut hook) = state.on_push.take() {
                hook();
            }
            (
                200,
                json!({
                    "MerchantRequestID": format!("29115-34620561-{n}"),
                    "CheckoutRequestID": format!("ws_CO_191220191020363925{n:03}"),
                    "ResponseCode": "0",
                    "ResponseDescription": "Success. Request accepted for processing",
                    "CustomerMessage": "Success. Request accepted for processing"
                }),
            )
        }
        "/mpesa/stkpushquery/v1/query" => {
            let checkout = text("CheckoutRequestID");
            state.queries.push(request.clone());
            let code = state.query_results.get(&checkout).cloned().unwrap_or_else(|| "0".into());
            let desc = if code == "0" {
                "The service request is processed successfully."
            } else {
                "Request cancelled by user"
            };
            (
                200,
                json!({
                    "ResponseCode": "0",
                    "ResponseDescription": "The service request has been accepted successsfully",
                    "MerchantRequestID": "29115-34620561-1",
                    "CheckoutRequestID": checkout,
                    "ResultCode": code,
                    "ResultDesc": desc
                }),
            )
        }
        _ => error(404, "404.001.01", "Resource not found"),
    }
}

/// The STK callback Daraja posts: success (`result_code` 0, with metadata) or failure.
pub fn stk_callback(merchant: &str, checkout: &str, result_code: i64, amount_kes: u64, receipt: &str) -> String {
    let callback = if result_code == 0 {
        json!({"Body": {"stkCallback": {
            "MerchantRequestID": merchant, "CheckoutRequestID": checkout, "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "CallbackMetadata": {"Item": [
                {"Name": "Amount", "Value": amount_kes},
                {"Name": "MpesaReceiptNumber", "Value": receipt},
                {"Name": "TransactionDate", "Value": 20191219102115u64},
                {"Name": "PhoneNumber", "Value": 254712345678u64}
            ]}
        }}})
    } else {
        json!({"Body": {"stkCallback": {
            "MerchantRequestID": merchant, "CheckoutRequestID": checkout, "ResultCode": result_code,
            "ResultDesc": "Request cancelled by user"
        }}})
    };
    callback.to_string()
}

/// A C2B validation or confirmation payload to the gateway's paybill (`SHORTCODE`).
pub fn c2b_payload(trans_id: &str, amount_kes: &str, bill_ref: &str) -> String {
    c2b_payload_to(SHORTCODE, trans_id, amount_kes, bill_ref)
}

/// A C2B validation or confirmation payload to the paybill `shortcode`.
pub fn c2b_payload_to(shortcode: &str, trans_id: &str, amount_kes: &str, bill_ref: &str) -> String {
    json!({
        "TransactionType": "Pay Bill", "TransID": trans_id, "TransTime": "20191122063845",
        "TransAmount": amount_kes, "BusinessShortCode": shortcode, "BillRefNumber": bill_ref,
        "InvoiceNumber": "", "OrgAccountBalance": "", "ThirdPartyTransID": "",
        "MSISDN": "2547 ***** 126", "FirstName": "John", "MiddleName": "", "LastName": "Doe"
    })
    .to_string()
}

/// POSTs `body` to `path` on the payments listener, as Daraja does.
pub fn post(payments: SocketAddr, path: &str, body: &str) -> Response {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: pay\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    send_one(payments, request.as_bytes())
}
