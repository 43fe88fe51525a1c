//! Cross-origin requests from browsers (SPEC §8.3): which origins may call the client API, the
//! header lines their answers carry, and the preflight answer.
//!
//! Off unless `[server] cors_origins` lists origins (API keys belong on servers, so a browser
//! needs the operator's explicit consent). Origins are compared byte for byte with the
//! `Origin` header as browsers serialise it (`https://app.example`, `http://localhost:3000`).
//! The lines for each origin are rendered once at start-up; per request this only finds the
//! origin and copies its lines. It never reflects an origin that is not configured and never
//! allows credentials (keys travel in `Authorization`, which a preflight must name).

use crate::limits::CORS_PREFLIGHT_MAX_AGE_S;

/// Response headers a browser script may read: the request id, the rate-limit state, the
/// cost and clamp of the answer, and the retry advice of refusals.
const EXPOSED_HEADERS: &str = "x-request-id, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, \
x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, \
x-fikra-cost-usd, x-fikra-max-tokens-clamped, retry-after, retry-after-ms, x-should-retry";

/// Request headers a preflight is answered with when it names none we can echo.
const DEFAULT_ALLOWED_HEADERS: &[u8] = b"authorization, content-type";

/// Longest `Access-Control-Request-Headers` value echoed back (the official SDKs send about a
/// dozen `x-stainless-*` names).
const MAX_ECHOED_REQUEST_HEADERS_BYTES: usize = 1024;

/// The configured origins and their rendered lines.
#[derive(Debug, Default)]
pub struct Cors {
    origins: Vec<AllowedOrigin>,
}

#[derive(Debug)]
struct AllowedOrigin {
    origin: Vec<u8>,
    /// `access-control-allow-origin`, `vary` and `access-control-expose-headers` lines.
    answer_lines: Vec<u8>,
}

impl Cors {
    /// CORS for exactly these origins (none: off).
    pub fn new(origins: &[String]) -> Cors {
        let origins = origins
            .iter()
            .map(|origin| {
                let mut answer_lines = Vec::new();
                answer_lines.extend_from_slice(b"access-control-allow-origin: ");
                answer_lines.extend_from_slice(origin.as_bytes());
                answer_lines.extend_from_slice(b"\r\nvary: origin\r\naccess-control-expose-headers: ");
                answer_lines.extend_from_slice(EXPOSED_HEADERS.as_bytes());
                answer_lines.extend_from_slice(b"\r\n");
                AllowedOrigin { origin: origin.as_bytes().to_vec(), answer_lines }
            })
            .collect();
        Cors { origins }
    }

    /// The header lines an answer to a request from `origin` carries, if that origin is allowed.
    pub fn answer_lines(&self, origin: Option<&[u8]>) -> Option<&[u8]> {
        let origin = origin?;
        self.origins.iter().find(|allowed| allowed.origin == origin).map(|allowed| allowed.answer_lines.as_slice())
    }

    /// Writes the header lines of a successful preflight (after the status line, before the
    /// blank line): the allowed methods and the requested headers (echoed when they are a plain
    /// list of header names, else the two the API needs), cached for `CORS_PREFLIGHT_MAX_AGE_S`.
    pub fn write_preflight_lines(out: &mut Vec<u8>, allow_methods: &str, requested_headers: Option<&[u8]>) {
        out.extend_from_slice(b"access-control-allow-methods: ");
        out.extend_from_slice(allow_methods.as_bytes());
        out.extend_from_slice(b", OPTIONS\r\naccess-control-allow-headers: ");
        let echoed = requested_headers.filter(|names| is_header_name_list(names));
        out.extend_from_slice(echoed.unwrap_or(DEFAULT_ALLOWED_HEADERS));
        out.extend_from_slice(b"\r\naccess-control-max-age: ");
        crate::digits::push_decimal(out, CORS_PREFLIGHT_MAX_AGE_S);
        out.extend_from_slice(b"\r\n");
    }
}

/// `a, b-c, x_y`: header-name characters, commas and spaces only, non-empty and bounded.
fn is_header_name_list(names: &[u8]) -> bool {
    !names.is_empty()
        && names.len() <= MAX_ECHOED_REQUEST_HEADERS_BYTES
        && names.iter().any(u8::is_ascii_alphanumeric)
        && names.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
}

/// Why `cors_origins` refuses an entry, if it does: an origin is `http://` or `https://`, a
/// lowercase host (letters, digits, dots, hyphens; or a bracketed IPv6 address) and an optional
/// port, with no path, query, user or trailing slash.
pub fn origin_problem(origin: &str) -> Option<&'static str> {
    let Some(rest) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
        return Some("must start with https:// or http://");
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => (rest, None),
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("has a port that is not 1 to 5 digits");
    }
    let plain_host = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let bracketed_ipv6 = host.len() > 2
        && host.starts_with('[')
        && host.ends_with(']')
        && host[1..host.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    if !(plain_host || bracketed_ipv6) {
        return Some(
            "must be scheme://host[:port] with a lowercase host and nothing after it (no path or trailing slash)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: only a configured origin, byte for byte, gets lines; they name it and nothing else.
    #[test]
    fn answers_only_configured_origins() {
        let cors = Cors::new(&["https://app.example".into(), "http://localhost:3000".into()]);
        let lines = cors.answer_lines(Some(b"https://app.example")).unwrap();
        let text = std::str::from_utf8(lines).unwrap();
        assert!(text.starts_with("access-control-allow-origin: https://app.example\r\nvary: origin\r\n"), "{text}");
        assert!(text.contains("access-control-expose-headers: x-request-id, x-ratelimit-limit-requests"));
        assert!(text.ends_with("x-should-retry\r\n"));
        assert!(cors.answer_lines(Some(b"http://localhost:3000")).is_some());
        for other in [&b"https://app.example/"[..], b"https://APP.example", b"https://evil.example", b"null", b""] {
            assert_eq!(cors.answer_lines(Some(other)), None, "{}", String::from_utf8_lossy(other));
        }
        assert_eq!(cors.answer_lines(None), None);
        assert_eq!(Cors::default().answer_lines(Some(b"https://app.example")), None);
    }

    // Goal: a preflight echoes a plain list of requested headers and refuses to echo anything
    // else (CR, LF, colons), falling back to the two the API needs.
    #[test]
    fn preflight_lines() {
        let mut out = Vec::new();
        Cors::write_preflight_lines(&mut out, "POST", Some(b"authorization, content-type, x-stainless-os"));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "access-control-allow-methods: POST, OPTIONS\r\naccess-control-allow-headers: authorization, content-type, x-stainless-os\r\naccess-control-max-age: 600\r\n"
        );
        for bad in [&b"a\r\nset-cookie: x"[..], b"a:b", b"", b" , "] {
            out.clear();
            Cors::write_preflight_lines(&mut out, "GET, HEAD", Some(bad));
            assert!(
                std::str::from_utf8(&out)
                    .unwrap()
                    .contains("access-control-allow-headers: authorization, content-type\r\n"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    // Goal: configuration accepts exactly the origins browsers send.
    #[test]
    fn checks_configured_origins() {
        for good in ["https://app.example", "http://localhost:3000", "https://a-b.c.example:8443", "http://[::1]:8080"]
        {
            assert_eq!(origin_problem(good), None, "{good}");
        }
        for bad in
            ["app.example", "https://app.example/", "https://App.example", "https://x:", "ftp://x", "https://", "*"]
        {
            assert!(origin_problem(bad).is_some(), "{bad}");
        }
    }
}
