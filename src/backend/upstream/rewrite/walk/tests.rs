//! The walk checked against the one it replaced: the same walk written as calls into
//! `json_scan::Scanner` (as it stood before the single loop), run on seed answers and on every
//! one-byte edit of them, must give the same bytes and the same top-level facts.

use super::super::usage::{UsageMember, UsageReader};
use super::{Member, TopLevel, copy_rewritten, put_public};
use crate::limits::MAX_JSON_DEPTH;
use crate::openai::chat::json_scan::{Content, Scanner, Span, ValueKind, content_eq};

/// The walk as it was: one `Scanner` call per token, the same decisions.
fn walk_by_scanner(json: &[u8], names: &Names, out: &mut Vec<u8>) -> Option<TopLevel> {
    let upstream = names.upstream.as_bytes();
    // Without an escape only the same length can match (an escape makes the raw longer).
    let is_upstream = |text: Content<'_>| {
        !upstream.is_empty()
            && if text.escaped {
                content_eq(text.raw, upstream)
            } else {
                text.raw.len() == upstream.len() && text.raw == upstream
            }
    };
    let mut scanner = Scanner::new(json);
    if scanner.peek_kind().ok()? != ValueKind::Object {
        return None;
    }
    scanner.enter(1).ok()?;
    let mut top = TopLevel::default();
    let mut usage = UsageReader::default();
    let mut copied = 0usize;
    // closers[i] closes the container open at level i + 1; the top-level object is level 1.
    let mut closers = [0u8; MAX_JSON_DEPTH];
    closers[0] = b'}';
    let mut open = 1usize;
    let mut first = true;
    // The top-level member whose container value is being walked, its kind and where it starts.
    let mut walking: Option<(Member, ValueKind, usize)> = None;
    while open > 0 {
        let close = closers[open - 1];
        // Inside the top-level `usage` object: its members are at level 2, a details object's at 3.
        let in_usage = matches!(walking, Some((Member::Usage, ValueKind::Object, _)));
        if !scanner.next_item(close, &mut first).ok()? {
            if in_usage && open == 3 {
                usage.leave_details();
            }
            open -= 1;
            if open == 1
                && let Some((member, kind, value_start)) = walking.take()
            {
                top.record(json, member, kind, Span::new(value_start, scanner.position()), &usage);
            }
            continue;
        }
        let mut named_model = false;
        let mut member = Member::Other;
        let mut usage_member = UsageMember::Other;
        let mut detail_count = false;
        if close == b'}' {
            let key = scanner.key_string().ok()?;
            let content = key.content(json);
            if is_upstream(content) {
                put_public(out, json, &mut copied, key.span, names.public);
            }
            named_model = content.is(b"model");
            if open == 1 {
                member = Member::of(content);
            } else if in_usage && open == 2 {
                usage_member = UsageMember::of(content);
            } else if in_usage && open == 3 {
                detail_count = usage.is_detail_count(content);
            }
        }
        let kind = scanner.peek_kind().ok()?;
        let value_start = scanner.position();
        if open == 1 && named_model {
            // A top-level `model`: the public id, whatever the upstream put there.
            let (_, span) = scanner.value(2).ok()?;
            put_public(out, json, &mut copied, span, names.public);
            continue;
        }
        let span = match kind {
            ValueKind::Object | ValueKind::Array => {
                scanner.enter(open + 1).ok()?;
                *closers.get_mut(open)? = if kind == ValueKind::Object { b'}' } else { b']' };
                open += 1;
                first = true;
                if open == 2 {
                    walking = Some((member, kind, value_start));
                    if member == Member::Usage {
                        usage = UsageReader::default();
                    }
                } else if in_usage && open == 3 {
                    let details = matches!(usage_member, UsageMember::PromptDetails | UsageMember::CompletionDetails);
                    if details && kind == ValueKind::Object {
                        usage.enter_details(usage_member);
                    } else {
                        // A container is no count, and a details array holds none.
                        usage.member(usage_member, b"[");
                    }
                } else if detail_count {
                    usage.detail(b"[");
                }
                continue;
            }
            ValueKind::String => {
                let text = scanner.string_value().ok()?;
                if named_model || is_upstream(text.content(json)) {
                    put_public(out, json, &mut copied, text.span, names.public);
                }
                text.span
            }
            _ => scanner.scalar_value(kind).ok()?,
        };
        if open == 1 {
            top.record(json, member, kind, span, &usage);
        } else if in_usage && open == 2 {
            usage.member(usage_member, span.slice(json));
        } else if detail_count {
            usage.detail(span.slice(json));
        }
    }
    scanner.finish().ok()?;
    out.extend_from_slice(json.get(copied..).unwrap_or(&[]));
    Some(top)
}

/// The two model names, as `rewrite::ModelNames` pairs them.
struct Names {
    public: &'static str,
    upstream: &'static str,
}

const NAMES: Names = Names { public: "fikra-flash", upstream: "vendor/secret" };

/// Answers as upstreams write them: OpenAI's (pretty-printed too), Groq's, streamed chunks,
/// usage with details, escapes, repeated and nested model sites, and deep nesting.
const SEEDS: [&str; 9] = [
    r#"{"id":"chatcmpl-1","object":"chat.completion","created":1796305993,"model":"vendor/secret","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\" vendor/secret"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28},"system_fingerprint":"fp"}"#,
    "{\n  \"model\" : \"vendor/secret\",\r\n  \"choices\": [ ],\t\"usage\": { \"prompt_tokens\": 1, \"completion_tokens\": 2 } }\n",
    r#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":600,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":20}}}"#,
    r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1","usage":{"prompt_tokens":3,"completion_tokens":4},"usage_breakdown":{"models":[{"model":"vendor\/secret"}]}}}"#,
    r#"{"m\u006fdel":{"a":[1,2]},"model":"x","choices":[{"model":"vendor/secret","vendor\u002fsecret":true}],"error":null}"#,
    r#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens_details":[{"cached_tokens":4}],"completion_tokens_details":{"x":{"reasoning_tokens":3}}},"choices":{}}"#,
    r#"{"a":[[[[{"b":[-0.5e+3,1E2,0,true,false,null,"\ud83d\ude00"]}]]]],"usage":null,"usage":[],"error":{"message":"m"}}"#,
    r#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"prompt_tokens":"5","completion_tokens":6},"choices":[{}]}"#,
    r#"{"vendor/secret":"vendor/secret","model":"vendor/secret","":"","choices":[""]}"#,
];

/// What one walk wrote (after a `<` marker) and found.
type Walked = (Vec<u8>, Option<TopLevel>);

/// The new walk's result and the scanner walk's, on `json`.
fn both(json: &[u8]) -> (Walked, Walked) {
    let (mut new, mut old) = (b"<".to_vec(), b"<".to_vec());
    let new_top = copy_rewritten(json, NAMES.public, NAMES.upstream, &mut new);
    let old_top = walk_by_scanner(json, &NAMES, &mut old);
    // What is written before a refusal is the caller's to cut: only accepted walks compare bytes.
    if new_top.is_none() {
        new.truncate(1);
    }
    if old_top.is_none() {
        old.truncate(1);
    }
    ((new, new_top), (old, old_top))
}

// Goal: the single loop and the scanner walk agree, byte for byte and fact for fact, on
// every seed and every one-byte deletion or replacement of it by a structural byte.
#[test]
fn the_single_loop_walks_as_the_scanner_did() {
    let replacements = b"{}[],:\"\\ \n0-.e+tfnu@x\x01";
    let mut accepted = 0;
    for seed in SEEDS {
        let seed = seed.replace('@', "vendor/secret");
        let seed = seed.as_bytes();
        let (new, old) = both(seed);
        assert!(new.1.is_some(), "{}", String::from_utf8_lossy(seed));
        assert_eq!(new, old, "{}", String::from_utf8_lossy(seed));
        for at in 0..seed.len() {
            let mut edited = seed.to_vec();
            edited.remove(at);
            let mut variants = vec![edited];
            for &byte in replacements {
                let mut edited = seed.to_vec();
                edited[at] = byte;
                variants.push(edited);
            }
            for variant in variants {
                // The walk's caller checks UTF-8 first.
                if std::str::from_utf8(&variant).is_err() {
                    continue;
                }
                let (new, old) = both(&variant);
                accepted += usize::from(new.1.is_some());
                assert_eq!(new, old, "{}", String::from_utf8_lossy(&variant));
            }
        }
    }
    // The edits reach both sides of the grammar, not only refusals.
    assert!(accepted > 1_000, "{accepted}");
}

// Goal: the nesting bound holds exactly where the scanner put it.
#[test]
fn nesting_bound_matches() {
    for depth in [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1] {
        let json = format!("{{\"a\":{}{}}}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        let (new, old) = both(json.as_bytes());
        assert_eq!(new.1.is_some(), depth <= MAX_JSON_DEPTH, "{depth}");
        assert_eq!(new, old, "{depth}");
    }
}
