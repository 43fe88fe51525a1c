//! The SPEC §2 error cases of `tests/cases/errors.json`, the one table the Rust error test and
//! the Python SDK suite (`tests/sdk/error_cases.py`) both read: each case's request as raw
//! bytes, and the check that a response is exactly what the case expects (status, type, code,
//! param, headers, message). A field the table does not know is an error, so a typo in the
//! table fails the tests instead of checking nothing.

use serde_json::{Map, Value};

use super::http::Response;

const TABLE: &str = include_str!("../cases/errors.json");

/// x-request-id and the six rate headers every answer to a valid key carries (SPEC §1).
pub const RATE_HEADERS: [&str; 7] = [
    "x-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

const CASE_FIELDS: [&str; 16] = [
    "name",
    "suites",
    "given",
    "request",
    "status",
    "type",
    "code",
    "param",
    "headers",
    "headers_present",
    "headers_absent",
    "rate_headers",
    "message_contains",
    "message_starts_with",
    "never_echoes_key",
    "sdk",
];
const REQUEST_FIELDS: [&str; 6] = ["method", "path", "key", "body", "raw_body", "content_repeated"];

/// Which key a case's request carries.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyChoice {
    /// The key the test arranged for this case (for `revoked`: that key, once revoked).
    Account,
    /// The arranged key with a space after its first 20 characters.
    Split,
    /// No `Authorization` header.
    None,
    Literal(String),
}

#[derive(Clone, Debug)]
pub struct ErrorCase {
    pub name: String,
    pub suites: Vec<String>,
    pub method: String,
    pub path: String,
    pub key: KeyChoice,
    /// The body bytes, if the request has one.
    pub body: Option<String>,
    pub status: u16,
    pub error_type: String,
    pub code: String,
    pub param: Option<String>,
    pub headers: Vec<(String, String)>,
    pub headers_present: Vec<String>,
    pub headers_absent: Vec<String>,
    pub rate_headers: bool,
    pub message_contains: Vec<String>,
    pub message_starts_with: Option<String>,
    pub never_echoes_key: bool,
}

/// Every case of the table, in its order.
pub fn all_cases() -> Vec<ErrorCase> {
    let table: Value = serde_json::from_str(TABLE).expect("tests/cases/errors.json is JSON");
    let cases: Vec<ErrorCase> = table["cases"].as_array().expect("a 'cases' list").iter().map(parse_case).collect();
    for (index, case) in cases.iter().enumerate() {
        assert!(cases[..index].iter().all(|other| other.name != case.name), "case {} twice", case.name);
    }
    cases
}

/// The cases the Rust suite drives.
pub fn rust_cases() -> Vec<ErrorCase> {
    all_cases().into_iter().filter(|case| case.suites.iter().any(|s| s == "rust")).collect()
}

/// The case named `name`; it must be one the Rust suite drives.
pub fn case(name: &str) -> ErrorCase {
    let case = rust_cases().into_iter().find(|case| case.name == name);
    case.unwrap_or_else(|| panic!("no Rust case {name:?} in tests/cases/errors.json"))
}

impl ErrorCase {
    /// The key this case sends, given the key the test arranged for it.
    pub fn key_sent(&self, arranged_key: &str) -> Option<String> {
        match &self.key {
            KeyChoice::Account => Some(arranged_key.to_string()),
            KeyChoice::Split => Some(format!("{} {}", &arranged_key[..20], &arranged_key[20..])),
            KeyChoice::None => None,
            KeyChoice::Literal(key) => Some(key.clone()),
        }
    }

    /// The request as raw bytes, with `arranged_key` where the case wants the account's key.
    pub fn raw_request(&self, arranged_key: &str) -> String {
        let mut request = format!("{} {} HTTP/1.1\r\nhost: t\r\n", self.method, self.path);
        if let Some(key) = self.key_sent(arranged_key) {
            request.push_str(&format!("authorization: Bearer {key}\r\n"));
        }
        match &self.body {
            Some(body) => request
                .push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())),
            None => request.push_str("\r\n"),
        }
        request
    }

    /// Asserts `response` is exactly what this case expects; `arranged_key` as for the request.
    pub fn check(&self, response: &Response, arranged_key: &str) {
        let name = &self.name;
        assert_eq!(response.status, self.status, "{name}: {}", response.text());
        let (error_type, code, param) = response.error();
        assert_eq!(
            (error_type.as_str(), code.as_str(), param.as_deref()),
            (self.error_type.as_str(), self.code.as_str(), self.param.as_deref()),
            "{name}"
        );
        for (header, value) in &self.headers {
            assert_eq!(response.header(header), Some(value.as_str()), "{name}: {header}");
        }
        for header in &self.headers_present {
            assert!(response.header(header).is_some(), "{name}: missing {header}: {:?}", response.headers);
        }
        for header in &self.headers_absent {
            assert_eq!(response.header(header), None, "{name}: {header}");
        }
        if self.rate_headers {
            for header in RATE_HEADERS {
                assert!(response.header(header).is_some(), "{name}: missing {header}: {:?}", response.headers);
            }
        }
        let message = response.message();
        for part in &self.message_contains {
            assert!(message.contains(part.as_str()), "{name}: {part:?} not in {message:?}");
        }
        if let Some(prefix) = &self.message_starts_with {
            assert!(message.starts_with(prefix.as_str()), "{name}: {message:?}");
        }
        if self.never_echoes_key {
            let key = self.key_sent(arranged_key).expect("a case that sends a key");
            let text = response.text();
            assert!(!text.contains(&key[8..20]) && !text.contains(&key[key.len() - 12..]), "{name} echoed the key");
        }
    }
}

fn parse_case(value: &Value) -> ErrorCase {
    let object = value.as_object().expect("a case is an object");
    let name = string(object, "name").expect("a case has a name");
    for field in object.keys() {
        assert!(CASE_FIELDS.contains(&field.as_str()), "case {name}: unknown field {field:?}");
    }
    let request = object.get("request").and_then(Value::as_object).cloned().unwrap_or_default();
    for field in request.keys() {
        assert!(REQUEST_FIELDS.contains(&field.as_str()), "case {name}: unknown request field {field:?}");
    }
    let key = match request.get("key") {
        None => KeyChoice::Account,
        Some(Value::String(choice)) => match choice.as_str() {
            "account" | "revoked" => KeyChoice::Account,
            "split" => KeyChoice::Split,
            "none" => KeyChoice::None,
            other => panic!("case {name}: unknown key choice {other:?}"),
        },
        Some(Value::Object(literal)) => KeyChoice::Literal(string(literal, "literal").expect("{'literal': KEY}")),
        Some(other) => panic!("case {name}: bad key {other}"),
    };
    let mut body = request.get("body").cloned();
    if let Some(repeated) = request.get("content_repeated") {
        let (text, times) = (repeated[0].as_str().unwrap(), repeated[1].as_u64().unwrap() as usize);
        body.as_mut().expect("content_repeated needs a body")["messages"][0]["content"] = text.repeat(times).into();
    }
    let body = match (body, request.get("raw_body")) {
        (Some(_), Some(_)) => panic!("case {name}: body or raw_body, not both"),
        (Some(body), None) => Some(body.to_string()),
        (None, Some(raw)) => Some(raw.as_str().expect("raw_body is a string").to_string()),
        (None, None) => None,
    };
    let strings = |field: &str| -> Vec<String> {
        object.get(field).map_or_else(Vec::new, |list| {
            list.as_array().expect("a list").iter().map(|s| s.as_str().expect("a string").to_string()).collect()
        })
    };
    let flag = |field: &str| object.get(field).is_some_and(|v| v.as_bool().expect("a boolean"));
    let headers = object.get("headers").and_then(Value::as_object).map_or_else(Vec::new, |headers| {
        headers.iter().map(|(name, value)| (name.clone(), value.as_str().expect("a string").to_string())).collect()
    });
    ErrorCase {
        suites: strings("suites"),
        method: string(&request, "method").unwrap_or_else(|| "POST".into()),
        path: string(&request, "path").unwrap_or_else(|| "/v1/chat/completions".into()),
        key,
        body,
        status: object["status"].as_u64().expect("a status") as u16,
        error_type: string(object, "type").expect("a type"),
        code: string(object, "code").expect("a code"),
        param: string(object, "param"),
        headers,
        headers_present: strings("headers_present"),
        headers_absent: strings("headers_absent"),
        rate_headers: flag("rate_headers"),
        message_contains: strings("message_contains"),
        message_starts_with: string(object, "message_starts_with"),
        never_echoes_key: flag("never_echoes_key"),
        name,
    }
}

fn string(object: &Map<String, Value>, field: &str) -> Option<String> {
    object.get(field).and_then(Value::as_str).map(str::to_string)
}
