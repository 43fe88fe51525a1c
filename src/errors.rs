//! The closed set of errors a client can see, and how each becomes bytes.
//!
//! Every failure in the gateway, whatever raised it, ends as one `ApiError`: a `kind` (which
//! fixes status, `type`, `code` and the fixed extra headers, in one table), an optional `param`,
//! and a `detail` carrying the numbers or names its message needs. The static parts of every
//! body and head are rendered once, at start-up (`catalog()`); per request only the message,
//! the param and the dynamic headers are written, into a reused buffer, without allocating.
//! This module never decides *whether* something is an error, only what it looks like.

use std::io::Write;
use std::sync::LazyLock;

use crate::digits::push_decimal;
use crate::json::write_json_escaped;
use crate::money::Nanos;

/// Every kind of error a client can receive. The table in `ErrorKind::spec` is the only place a
/// status code, type or code is written down.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidJson,
    MissingRequiredParameter,
    InvalidParameter,
    UnsupportedParameter,
    ModelNotFound,
    /// `GET /v1/models/{id}` for an id that is not in the registry.
    ModelNotFoundOnRetrieve,
    /// The request itself is not valid HTTP/1.1 (bad framing, conflicting lengths, bad chunking).
    MalformedRequest,
    MissingApiKey,
    InvalidApiKey,
    RevokedApiKey,
    InsufficientQuota,
    /// The key's own spend cap (SPEC §10) leaves not even a minimal answer.
    KeySpendLimitReached,
    UnknownEndpoint,
    MethodNotAllowed,
    RequestTooLarge,
    HeadersTooLarge,
    /// RPM or TPM bucket empty now; retrying later helps.
    RateLimitExceeded,
    /// The request alone needs more tokens than the TPM bucket holds; retrying never helps.
    RateLimitRequestTooLarge,
    InternalError,
    UpstreamUnavailable,
    ServiceUnavailable,
    UpstreamTimeout,
    /// An `Expect` header other than `100-continue`.
    ExpectationFailed,
    /// The upstream refused the client's parameters with 400 (message normalized).
    UpstreamRejectedRequest,
    /// The upstream refused the client's parameters with 422 (message normalized).
    UpstreamUnprocessable,
    /// The upstream refused with 400 because the messages and the output cap do not fit the
    /// model's context (`param: "messages"`).
    ContextLengthExceeded,
    /// Admin API: the named account or key does not exist.
    NotFound,
    /// Admin API: the account id is taken.
    AlreadyExists,
}

/// Whether the SDKs should retry, as sent in `x-should-retry`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ShouldRetry {
    /// No `x-should-retry` header: the SDK decides from the status.
    Unsaid,
    Yes,
    No,
}

/// Whose fault an error is, which decides who hears about it: client-side refusals are the
/// caller's to fix and are never logged; upstream and gateway failures are logged
/// (rate-bounded) with the request id.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// The request, the key or the account (4xx).
    Client,
    /// The model provider behind the gateway: unreachable, slow or broken (its refusals of the
    /// caller's own parameters are `Client`).
    Upstream,
    /// The gateway itself: a bug (500) or its own state (maintenance, the store, overload: 503).
    Gateway,
}

/// The fixed facts of one error kind.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KindSpec {
    pub status: u16,
    pub error_type: &'static str,
    pub code: &'static str,
    pub should_retry: ShouldRetry,
    /// Sent with a `retry-after` header (rate limits and 503).
    pub has_retry_after: bool,
    /// The message used when the raiser gives no detail.
    pub default_message: &'static str,
    pub side: Side,
    /// The connection closes after this error (`connection: close`): the framing refusals, after
    /// which the position of the next request in the byte stream is unknowable.
    pub closes_connection: bool,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 28] = [
        ErrorKind::InvalidJson,
        ErrorKind::MissingRequiredParameter,
        ErrorKind::InvalidParameter,
        ErrorKind::UnsupportedParameter,
        ErrorKind::ModelNotFound,
        ErrorKind::ModelNotFoundOnRetrieve,
        ErrorKind::MalformedRequest,
        ErrorKind::MissingApiKey,
        ErrorKind::InvalidApiKey,
        ErrorKind::RevokedApiKey,
        ErrorKind::InsufficientQuota,
        ErrorKind::KeySpendLimitReached,
        ErrorKind::UnknownEndpoint,
        ErrorKind::MethodNotAllowed,
        ErrorKind::RequestTooLarge,
        ErrorKind::HeadersTooLarge,
        ErrorKind::RateLimitExceeded,
        ErrorKind::RateLimitRequestTooLarge,
        ErrorKind::InternalError,
        ErrorKind::UpstreamUnavailable,
        ErrorKind::ServiceUnavailable,
        ErrorKind::UpstreamTimeout,
        ErrorKind::ExpectationFailed,
        ErrorKind::UpstreamRejectedRequest,
        ErrorKind::UpstreamUnprocessable,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
    ];

    /// The error table of SPEC §2.
    pub const fn spec(self) -> KindSpec {
        use ErrorKind::*;
        use ShouldRetry::*;
        const INVALID: &str = "invalid_request_error";
        let (status, error_type, code, should_retry, has_retry_after, default_message) = match self {
            InvalidJson => (400, INVALID, "invalid_json", Unsaid, false, "The request body must be a JSON object."),
            MissingRequiredParameter => {
                (400, INVALID, "missing_required_parameter", Unsaid, false, "A required parameter is missing.")
            }
            InvalidParameter => (400, INVALID, "invalid_parameter", Unsaid, false, "A parameter has an invalid value."),
            UnsupportedParameter => {
                (400, INVALID, "unsupported_parameter", Unsaid, false, "A parameter is not supported by this model.")
            }
            ModelNotFound => (400, INVALID, "model_not_found", Unsaid, false, "The model does not exist."),
            ModelNotFoundOnRetrieve => (404, INVALID, "model_not_found", Unsaid, false, "The model does not exist."),
            MalformedRequest => {
                (400, INVALID, "malformed_request", Unsaid, false, "The request is not valid HTTP/1.1.")
            }
            MissingApiKey => (
                401,
                "authentication_error",
                "missing_api_key",
                Unsaid,
                false,
                "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
            ),
            InvalidApiKey => {
                (401, "authentication_error", "invalid_api_key", Unsaid, false, "Incorrect API key provided.")
            }
            RevokedApiKey => {
                (401, "authentication_error", "revoked_api_key", Unsaid, false, "This API key has been revoked.")
            }
            InsufficientQuota => (
                402,
                "billing_error",
                "insufficient_quota",
                No,
                false,
                "Your balance is too low for this request. Top up by M-Pesa or card to continue.",
            ),
            KeySpendLimitReached => {
                (402, "billing_error", "key_spend_limit_reached", No, false, "This API key has reached its spend cap.")
            }
            UnknownEndpoint => (404, INVALID, "unknown_endpoint", Unsaid, false, "Unknown endpoint."),
            MethodNotAllowed => {
                (405, INVALID, "method_not_allowed", Unsaid, false, "Method not allowed for this endpoint.")
            }
            RequestTooLarge => (413, INVALID, "request_too_large", Unsaid, false, "The request body is too large."),
            HeadersTooLarge => (431, INVALID, "headers_too_large", Unsaid, false, "The request headers are too large."),
            RateLimitExceeded => (429, "rate_limit_error", "rate_limit_exceeded", Yes, true, "Rate limit reached."),
            RateLimitRequestTooLarge => (
                429,
                "rate_limit_error",
                "rate_limit_exceeded",
                No,
                false,
                "Request too large for the tokens-per-minute limit.",
            ),
            InternalError => (
                500,
                "api_error",
                "internal_error",
                Unsaid,
                false,
                "The server had an error while processing your request.",
            ),
            UpstreamUnavailable => (
                502,
                "api_error",
                "upstream_unavailable",
                Yes,
                false,
                "The model backend is unavailable. Please retry.",
            ),
            ServiceUnavailable => (
                503,
                "api_error",
                "service_unavailable",
                Yes,
                true,
                "The service is temporarily unavailable. Please retry shortly.",
            ),
            UpstreamTimeout => (
                504,
                "api_error",
                "upstream_timeout",
                Yes,
                false,
                "The model backend did not respond in time. Please retry.",
            ),
            ExpectationFailed => {
                (417, INVALID, "unsupported_expectation", Unsaid, false, "Only 'Expect: 100-continue' is supported.")
            }
            UpstreamRejectedRequest => {
                (400, INVALID, "invalid_request", Unsaid, false, "The model rejected the request's parameters.")
            }
            UpstreamUnprocessable => (
                422,
                INVALID,
                "invalid_request",
                Unsaid,
                false,
                "The model could not process the request's parameters.",
            ),
            ContextLengthExceeded => (
                400,
                INVALID,
                "context_length_exceeded",
                Unsaid,
                false,
                "The messages and the requested output exceed this model's context length. Shorten the messages or lower max_tokens.",
            ),
            NotFound => (404, INVALID, "not_found", Unsaid, false, "No such object."),
            AlreadyExists => (409, INVALID, "already_exists", Unsaid, false, "An object with this id already exists."),
        };
        let side = match self {
            InternalError | ServiceUnavailable => Side::Gateway,
            UpstreamUnavailable | UpstreamTimeout => Side::Upstream,
            _ => Side::Client,
        };
        let closes_connection =
            matches!(self, MalformedRequest | RequestTooLarge | HeadersTooLarge | ExpectationFailed);
        KindSpec { status, error_type, code, should_retry, has_retry_after, default_message, side, closes_connection }
    }
}

/// Which rate-limit bucket refused a request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Bucket {
    Requests,
    Tokens,
}

/// What an error's message says beyond its kind. Borrowed strings are JSON-escaped when written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Detail<'a> {
    /// The kind's default message.
    Default,
    /// A fixed sentence chosen by the raiser.
    Text(&'static str),
    /// A sentence built at run time (upstream messages, already cleaned of upstream names).
    Message(&'a str),
    /// `param` is missing.
    MissingParam,
    /// `param` is present but wrong; `reason` says what it must be ("must be a boolean").
    InvalidParam {
        reason: &'static str,
    },
    /// `param` is not supported by `model`.
    UnsupportedParam {
        model: &'a str,
    },
    /// `param` names a content part of a kind (`media`: "image", "audio") `model` has no input
    /// allowance for.
    UnsupportedMedia {
        model: &'a str,
        media: &'static str,
    },
    ModelNotFound {
        requested: &'a str,
        suggestion: Option<&'a str>,
    },
    InsufficientQuota {
        balance: Nanos,
        available: Nanos,
        needed: Nanos,
    },
    /// The key's cap against its spend in the period (`resets_at_ms`: when the period ends,
    /// `None` for a lifetime cap).
    KeySpendLimitReached {
        cap: Nanos,
        /// How the period reads after the amount: "per day (UTC)", "for its lifetime".
        per: &'static str,
        spent: Nanos,
        held: Nanos,
        needed: Nanos,
        resets_at_ms: Option<u64>,
    },
    RateLimited {
        bucket: Bucket,
        limit: u64,
        used: u64,
        requested: u64,
        retry_after_ms: u64,
    },
    RateLimitTooLarge {
        limit: u64,
        requested: u64,
        /// How the input part of `requested` was counted, in words ("counted by the model's
        /// tokenizer", "estimated at one token per byte of input").
        counted: &'static str,
    },
    UnknownEndpoint {
        method: &'a str,
        path: &'a str,
    },
    MethodNotAllowed {
        method: &'a str,
        path: &'a str,
        allow: &'static str,
    },
    RequestTooLarge {
        limit_bytes: usize,
    },
    HeadersTooLarge {
        limit_bytes: usize,
    },
}

/// One error, ready to render.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ApiError<'a> {
    pub kind: ErrorKind,
    pub param: Option<&'a str>,
    pub detail: Detail<'a>,
}

impl<'a> ApiError<'a> {
    pub const fn new(kind: ErrorKind) -> ApiError<'static> {
        ApiError { kind, param: None, detail: Detail::Default }
    }
    pub const fn with_text(kind: ErrorKind, text: &'static str) -> ApiError<'static> {
        ApiError { kind, param: None, detail: Detail::Text(text) }
    }
    pub const fn missing(param: &'a str) -> ApiError<'a> {
        ApiError { kind: ErrorKind::MissingRequiredParameter, param: Some(param), detail: Detail::MissingParam }
    }
    pub const fn invalid(param: &'a str, reason: &'static str) -> ApiError<'a> {
        ApiError { kind: ErrorKind::InvalidParameter, param: Some(param), detail: Detail::InvalidParam { reason } }
    }
    pub fn spec(&self) -> KindSpec {
        self.kind.spec()
    }
}

/// The start-up rendering of one kind: the body bytes around the message and the param.
pub struct RenderedKind {
    /// `{"error":{"message":"`
    pub body_before_message: &'static [u8],
    /// `","type":"...","param":`
    pub body_before_param: Vec<u8>,
    /// `,"code":"..."}}`
    pub body_after_param: Vec<u8>,
    /// `HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nx-should-retry: true\r\n`
    pub head_fixed: Vec<u8>,
}

/// All kinds rendered once.
pub struct Catalog {
    rendered: Vec<RenderedKind>,
}

impl Catalog {
    fn build() -> Catalog {
        let rendered = ErrorKind::ALL
            .iter()
            .map(|kind| {
                let spec = kind.spec();
                let mut head_fixed = Vec::new();
                write!(
                    head_fixed,
                    "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n",
                    spec.status,
                    reason_phrase(spec.status)
                )
                .expect("write to Vec");
                match spec.should_retry {
                    ShouldRetry::Unsaid => {}
                    ShouldRetry::Yes => head_fixed.extend_from_slice(b"x-should-retry: true\r\n"),
                    ShouldRetry::No => head_fixed.extend_from_slice(b"x-should-retry: false\r\n"),
                }
                RenderedKind {
                    body_before_message: b"{\"error\":{\"message\":\"",
                    body_before_param: format!("\",\"type\":\"{}\",\"param\":", spec.error_type).into_bytes(),
                    body_after_param: format!(",\"code\":\"{}\"}}}}", spec.code).into_bytes(),
                    head_fixed,
                }
            })
            .collect();
        Catalog { rendered }
    }

    pub fn get(&self, kind: ErrorKind) -> &RenderedKind {
        let index = ErrorKind::ALL.iter().position(|k| *k == kind).expect("every kind is in ALL");
        &self.rendered[index]
    }
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::build);

/// The start-up rendering of every kind. Call once at start-up to force it off the hot path.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

/// The standard reason phrase for the statuses this gateway sends.
pub const fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        417 => "Expectation Failed",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Writes `ms` as seconds with up to three decimals, trailing zeros trimmed: 1146 -> "1.146s".
fn write_seconds(out: &mut Vec<u8>, ms: u64) {
    push_decimal(out, ms / 1000);
    let fraction = ms % 1000;
    if fraction != 0 {
        let digits = [b'0' + (fraction / 100) as u8, b'0' + (fraction / 10 % 10) as u8, b'0' + (fraction % 10) as u8];
        let mut len = 3;
        while digits[len - 1] == b'0' {
            len -= 1;
        }
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
    out.push(b's');
}

/// Writes the message of `error` (JSON-escaped, no quotes) to `out`.
pub fn write_message(out: &mut Vec<u8>, error: &ApiError<'_>) {
    let param = error.param.unwrap_or("");
    match error.detail {
        Detail::Default => out.extend_from_slice(error.kind.spec().default_message.as_bytes()),
        Detail::Text(text) => write_json_escaped(out, text),
        Detail::Message(text) => write_json_escaped(out, text),
        Detail::MissingParam => {
            out.extend_from_slice(b"Missing required parameter: '");
            write_json_escaped(out, param);
            out.extend_from_slice(b"'.");
        }
        Detail::InvalidParam { reason } => {
            out.extend_from_slice(b"Invalid value for '");
            write_json_escaped(out, param);
            out.extend_from_slice(b"': ");
            write_json_escaped(out, reason);
            out.push(b'.');
        }
        Detail::UnsupportedMedia { model, media } => {
            out.extend_from_slice(b"Unsupported parameter: '");
            write_json_escaped(out, param);
            out.extend_from_slice(b"' is an ");
            out.extend_from_slice(media.as_bytes());
            out.extend_from_slice(b" part, and the model '");
            write_json_escaped(out, model);
            out.extend_from_slice(b"' does not accept ");
            out.extend_from_slice(media.as_bytes());
            out.extend_from_slice(b" input.");
        }
        Detail::UnsupportedParam { model } => {
            out.extend_from_slice(b"Unsupported parameter: '");
            write_json_escaped(out, param);
            out.extend_from_slice(b"' is not supported with the model '");
            write_json_escaped(out, model);
            out.extend_from_slice(b"'.");
        }
        Detail::ModelNotFound { requested, suggestion } => {
            out.extend_from_slice(b"The model '");
            write_json_escaped(out, requested);
            out.extend_from_slice(b"' does not exist.");
            if let Some(suggestion) = suggestion {
                out.extend_from_slice(b" Did you mean '");
                write_json_escaped(out, suggestion);
                out.extend_from_slice(b"'?");
            }
            out.extend_from_slice(b" GET /v1/models lists the available models.");
        }
        Detail::InsufficientQuota { balance, available, needed } => {
            out.extend_from_slice(b"Insufficient balance: your balance is ");
            out.extend_from_slice(balance.to_usd_text().as_bytes());
            out.extend_from_slice(b" USD (");
            out.extend_from_slice(available.to_usd_text().as_bytes());
            out.extend_from_slice(b" USD available after requests in flight) and this request needs at least ");
            out.extend_from_slice(needed.to_usd_text().as_bytes());
            out.extend_from_slice(b" USD. Top up by M-Pesa or card to continue.");
        }
        Detail::KeySpendLimitReached { cap, per, spent, held, needed, resets_at_ms } => {
            let _ = write!(
                out,
                "This API key has reached its spend cap of {cap} USD {per}: {spent} USD spent and {held} USD held by requests in flight, and this request needs at least {needed} USD."
            );
            match resets_at_ms {
                Some(at_ms) => {
                    out.extend_from_slice(b" The cap resets at ");
                    let _ = crate::clock::write_utc(out, at_ms);
                    out.extend_from_slice(b".");
                }
                None => out.extend_from_slice(b" A lifetime cap never resets."),
            }
            out.extend_from_slice(b" Ask the account owner to raise or lift it.");
        }
        Detail::RateLimited { bucket, limit, used, requested, retry_after_ms } => {
            let name = match bucket {
                Bucket::Requests => "requests per min (RPM)",
                Bucket::Tokens => "tokens per min (TPM)",
            };
            out.extend_from_slice(b"Rate limit reached for ");
            out.extend_from_slice(name.as_bytes());
            for (label, figure) in [(&b": Limit "[..], limit), (b", Used ", used), (b", Requested ", requested)] {
                out.extend_from_slice(label);
                push_decimal(out, figure);
            }
            out.extend_from_slice(b". Please try again in ");
            write_seconds(out, retry_after_ms);
            out.push(b'.');
        }
        Detail::RateLimitTooLarge { limit, requested, counted } => {
            let _ = write!(
                out,
                "Request too large for tokens per min (TPM): Limit {limit}, Requested {requested} (input {counted}, plus the output cap). Lower max_tokens or shorten the messages."
            );
        }
        Detail::UnknownEndpoint { method, path } => {
            out.extend_from_slice(b"Unknown endpoint: ");
            write_json_escaped(out, method);
            out.push(b' ');
            write_json_escaped(out, path);
            out.push(b'.');
            if path.starts_with("/v1/v1/") || path == "/v1/v1" {
                out.extend_from_slice(b" The path repeats '/v1': set the SDK's base URL to end in a single '/v1'.");
            } else if !path.starts_with("/v1/") && path != "/v1" {
                out.extend_from_slice(
                    b" The path is missing the '/v1' prefix: set the SDK's base URL to end in '/v1'.",
                );
            }
        }
        Detail::MethodNotAllowed { method, path, allow } => {
            out.extend_from_slice(b"Method ");
            write_json_escaped(out, method);
            out.extend_from_slice(b" is not allowed on ");
            write_json_escaped(out, path);
            out.extend_from_slice(b"; allowed: ");
            out.extend_from_slice(allow.as_bytes());
            out.push(b'.');
        }
        Detail::RequestTooLarge { limit_bytes } => {
            let _ = write!(out, "The request body is larger than the limit of {limit_bytes} bytes.");
        }
        Detail::HeadersTooLarge { limit_bytes } => {
            let _ = write!(out, "The request head is larger than the limit of {limit_bytes} bytes.");
        }
    }
}

/// Appends the whole JSON body of `error` to `out`.
pub fn write_body(out: &mut Vec<u8>, error: &ApiError<'_>) {
    let rendered = catalog().get(error.kind);
    out.extend_from_slice(rendered.body_before_message);
    write_message(out, error);
    out.extend_from_slice(&rendered.body_before_param);
    match error.param {
        Some(param) => {
            out.push(b'"');
            write_json_escaped(out, param);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(&rendered.body_after_param);
}

/// The `retry-after` value in whole seconds for a wait of `retry_after_ms`, clamped to 1..=60.
pub fn retry_after_seconds(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1000).clamp(crate::limits::RETRY_AFTER_MIN_S, crate::limits::RETRY_AFTER_MAX_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &ApiError<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        write_body(&mut out, error);
        serde_json::from_slice(&out).expect("error body is valid JSON")
    }

    // Goal: every kind renders to exactly the SPEC shape, with its table's type and code.
    #[test]
    fn every_kind_renders_the_spec_shape() {
        for kind in ErrorKind::ALL {
            let spec = kind.spec();
            let value = body(&ApiError::new(kind));
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 1);
            let inner = object["error"].as_object().unwrap();
            let mut keys: Vec<_> = inner.keys().cloned().collect();
            keys.sort();
            assert_eq!(keys, ["code", "message", "param", "type"]);
            assert_eq!(inner["type"], spec.error_type);
            assert_eq!(inner["code"], spec.code);
            assert_eq!(inner["param"], serde_json::Value::Null);
            assert_eq!(inner["message"], spec.default_message);
            assert!(catalog().get(kind).head_fixed.starts_with(format!("HTTP/1.1 {} ", spec.status).as_bytes()));
        }
    }

    // Goal: the 429 message reads exactly like SPEC's example.
    #[test]
    fn rate_limit_message_matches_spec_example() {
        let error = ApiError {
            kind: ErrorKind::RateLimitExceeded,
            param: None,
            detail: Detail::RateLimited {
                bucket: Bucket::Requests,
                limit: 30,
                used: 30,
                requested: 1,
                retry_after_ms: 1146,
            },
        };
        assert_eq!(
            body(&error)["error"]["message"],
            "Rate limit reached for requests per min (RPM): Limit 30, Used 30, Requested 1. Please try again in 1.146s."
        );
    }

    // Goal: params and user-supplied strings are escaped, never break the JSON.
    #[test]
    fn escapes_borrowed_strings() {
        let error = ApiError {
            kind: ErrorKind::ModelNotFound,
            param: Some("model"),
            detail: Detail::ModelNotFound { requested: "x\"\n\u{1}", suggestion: Some("fikra-flash") },
        };
        let value = body(&error);
        assert_eq!(value["error"]["param"], "model");
        assert_eq!(
            value["error"]["message"],
            "The model 'x\"\n\u{1}' does not exist. Did you mean 'fikra-flash'? GET /v1/models lists the available models."
        );
    }

    #[test]
    fn unknown_endpoint_spots_prefix_mistakes() {
        let doubled = ApiError {
            kind: ErrorKind::UnknownEndpoint,
            param: None,
            detail: Detail::UnknownEndpoint { method: "POST", path: "/v1/v1/chat/completions" },
        };
        assert!(body(&doubled)["error"]["message"].as_str().unwrap().contains("repeats '/v1'"));
        let missing = ApiError {
            kind: ErrorKind::UnknownEndpoint,
            param: None,
            detail: Detail::UnknownEndpoint { method: "POST", path: "/chat/completions" },
        };
        assert!(body(&missing)["error"]["message"].as_str().unwrap().contains("missing the '/v1' prefix"));
    }

    #[test]
    fn retry_after_is_whole_seconds_clamped() {
        assert_eq!(retry_after_seconds(0), 1);
        assert_eq!(retry_after_seconds(1146), 2);
        assert_eq!(retry_after_seconds(2000), 2);
        assert_eq!(retry_after_seconds(600_000), 60);
    }
}
