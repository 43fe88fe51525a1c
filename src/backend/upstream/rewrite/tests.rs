//! Table tests of the rewrite: event boundaries, model names however spelled, usage as OpenAI
//! and Groq report it, results told from failures in disguise, upstream error bodies.

use super::*;

const NAMES: ModelNames<'static> = ModelNames { public: "fikra-flash", upstream: "vendor/secret" };

fn rewritten(json: &str) -> (String, Option<ObjectFacts>) {
    let mut out = Vec::new();
    let facts = rewrite_object(json.as_bytes(), &NAMES, &mut out);
    (String::from_utf8(out).unwrap(), facts)
}

// Goal: events are found whether split by LF LF or CRLF CRLF, and only when complete.
#[test]
fn finds_event_boundaries() {
    assert_eq!(next_event_end(b"data: 1\n\ndata: 2\n\n"), Some(9));
    assert_eq!(next_event_end(b"data: 1\r\n\r\ndata"), Some(11));
    assert_eq!(next_event_end(b"data: 1\n"), None);
    assert_eq!(next_event_end(b""), None);
}

// Goal: an event arriving a byte at a time is found exactly when its blank line completes,
// whichever line ending it uses, and the finder resumes where it stopped (each byte looked at
// a bounded number of times).
#[test]
fn finds_events_arriving_piece_by_piece() {
    for stream in [&b"data: {\"a\":1}\n\ndata: 2\n\n"[..], b"data: {\"a\":1}\r\n\r\ndata: 2\r\n\r\n"] {
        let mut finder = EventFinder::default();
        let (mut pending, mut ends) = (Vec::new(), Vec::new());
        for &byte in stream {
            pending.push(byte);
            if let Some(end) = finder.next_end(&pending) {
                ends.push(end);
                pending.drain(..end);
            }
        }
        let first = if stream.contains(&b'\r') { 17 } else { 15 };
        assert_eq!(ends, [first, stream.len() - first]);
        assert!(pending.is_empty());
    }
}

// Goal: chunks get the public model, usage is captured, the usage-only chunk is dropped
// unless asked for, [DONE] passes, errors are recognised.
#[test]
fn rewrites_events() {
    let mut usage = None;
    let mut out = Vec::new();
    let chunk = b"data: {\"id\":\"x\",\"model\":\"vendor/secret\",\"choices\":[{\"delta\":{\"content\":\"hi vendor/secret\"}}]}\n\n";
    assert_eq!(rewrite_event(chunk, &NAMES, false, &mut usage, &mut out), EventKind::Chunk);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "data: {\"id\":\"x\",\"model\":\"fikra-flash\",\"choices\":[{\"delta\":{\"content\":\"hi vendor/secret\"}}]}\n\n"
    );
    let usage_chunk = b"data: {\"model\":\"vendor/secret\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n";
    out.clear();
    assert_eq!(rewrite_event(usage_chunk, &NAMES, false, &mut usage, &mut out), EventKind::DroppedUsage);
    assert!(out.is_empty());
    assert_eq!(usage, Some(ReportedUsage::new(7, 3)));
    assert_eq!(rewrite_event(usage_chunk, &NAMES, true, &mut usage, &mut out), EventKind::Chunk);
    assert!(!String::from_utf8_lossy(&out).contains("vendor/secret"));
    out.clear();
    assert_eq!(rewrite_event(b"data: [DONE]\n\n", &NAMES, false, &mut usage, &mut out), EventKind::Done);
    assert_eq!(out, b"data: [DONE]\n\n");
    out.clear();
    let events: [(&[u8], EventKind); 9] = [
        (b"data: {\"error\":{\"message\":\"boom\"}}\n\n", EventKind::Error),
        (b"data: {\"choices\":[],\"x_groq\":{\"id\":\"req_1\",\"error\":\"over capacity\"}}\n\n", EventKind::Error),
        (b"event: error\ndata: {\"message\":\"boom\"}\n\n", EventKind::Error),
        (b": keep-alive\n\n", EventKind::Ignored),
        (b"id: 7\nretry: 10\n\n", EventKind::Ignored),
        (b"data: {not json\n\n", EventKind::Malformed),
        (b"{\"error\":{\"message\":\"boom\"}}\n\n", EventKind::Malformed),
        (b"data: {\"a\":1}\ndata: {\"b\":2}\n\n", EventKind::Malformed),
        (b"data: {}\n\n", EventKind::NoResult),
    ];
    for (event, kind) in events {
        assert_eq!(
            rewrite_event(event, &NAMES, false, &mut usage, &mut out),
            kind,
            "{}",
            String::from_utf8_lossy(event)
        );
    }
    assert!(out.is_empty());
}

// Goal: the model name cannot leak however the upstream spells it: an escaped `model` key, a
// repeated one, a non-string top-level model, nested `model` members (Groq's usage breakdown),
// and any string or key equal to the upstream name, escaped or not; text merely containing the
// name is the model's own output and stays.
#[test]
fn model_name_never_survives_any_spelling() {
    let cases = [
        (r#"{"m\u006fdel":"vendor/secret","choices":[]}"#, r#"{"m\u006fdel":"fikra-flash","choices":[]}"#),
        (
            r#"{"model":"vendor/secret","choices":[],"model":"vendor/secret"}"#,
            r#"{"model":"fikra-flash","choices":[],"model":"fikra-flash"}"#,
        ),
        (r#"{"model":{"name":"vendor/secret"},"choices":[]}"#, r#"{"model":"fikra-flash","choices":[]}"#),
        (
            r#"{"choices":[],"x_groq":{"usage_breakdown":{"models":[{"model":"vendor\/secret","usage":{}}]}}}"#,
            r#"{"choices":[],"x_groq":{"usage_breakdown":{"models":[{"model":"fikra-flash","usage":{}}]}}}"#,
        ),
        (
            r#"{"choices":[{"message":{"content":"I am vendor/secret"}}],"meta":["vendor/secret",{"vendor\u002fsecret":1}]}"#,
            r#"{"choices":[{"message":{"content":"I am vendor/secret"}}],"meta":["fikra-flash",{"fikra-flash":1}]}"#,
        ),
    ];
    for (upstream, expected) in cases {
        let (out, facts) = rewritten(upstream);
        assert_eq!(out, expected);
        assert!(facts.unwrap().is_result());
    }
}

// Goal: usage comes from the top-level `usage`, else from Groq's `x_groq.usage`, with cached
// and reasoning tokens from either; a `null` usage is no usage.
#[test]
fn reads_usage_as_openai_and_groq_report_it() {
    let openai = r#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":50,"total_tokens":1050,"prompt_tokens_details":{"cached_tokens":600},"completion_tokens_details":{"reasoning_tokens":20}}}"#;
    let expected =
        ReportedUsage { prompt_tokens: 1000, cached_prompt_tokens: 600, completion_tokens: 50, reasoning_tokens: 20 };
    assert_eq!(rewritten(openai).1.unwrap().usage, Some(expected));
    let groq = r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1","usage":{"queue_time":0.01,"prompt_tokens":1000,"prompt_time":0.002,"completion_tokens":50,"total_tokens":1050,"prompt_tokens_details":{"cached_tokens":600},"completion_tokens_details":{"reasoning_tokens":20}}}}"#;
    assert_eq!(rewritten(groq).1.unwrap().usage, Some(expected));
    let both = r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2},"x_groq":{"usage":{"prompt_tokens":3,"completion_tokens":4}}}"#;
    assert_eq!(rewritten(both).1.unwrap().usage, Some(ReportedUsage::new(1, 2)));
    let none = r#"{"choices":[],"usage":null,"x_groq":{"id":"req_1"}}"#;
    assert_eq!(rewritten(none).1.unwrap().usage, None);
    let partial = r#"{"choices":[],"usage":{"prompt_tokens":3}}"#;
    assert_eq!(rewritten(partial).1.unwrap().usage, None);
}

// Goal: only a `choices` array without an error is a result; error-shaped 200s, `{}`, a
// non-array `choices` and non-JSON are not, and `"error": null` is no error.
#[test]
fn tells_results_from_failures_in_disguise() {
    let results = [r#"{"choices":[]}"#, r#"{"choices":[{"index":0}],"error":null}"#];
    for json in results {
        assert!(rewritten(json).1.unwrap().is_result(), "{json}");
    }
    let failures = [
        r#"{"error":{"message":"vendor/secret is overloaded","type":"server_error"}}"#,
        r#"{}"#,
        r#"{"choices":{"index":0}}"#,
        r#"{"choices":[],"error":"boom"}"#,
        r#"{"choices":[],"x_groq":{"error":"stopped early"}}"#,
    ];
    for json in failures {
        let (_, facts) = rewritten(json);
        assert!(!facts.unwrap().is_result(), "{json}");
    }
    for not_an_object in ["<html>", "[1]", r#"{"a":1} x"#, ""] {
        let (out, facts) = rewritten(not_an_object);
        assert_eq!((out.as_str(), facts), ("", None));
    }
}

// Goal: unary bodies get the public model and give their usage; error messages and codes are
// found, and context-length refusals recognised by code or by message.
#[test]
fn rewrites_unary_and_reads_errors() {
    let (out, facts) = rewritten(
        r#"{"id":"c","object":"chat.completion","model":"vendor/secret","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#,
    );
    assert_eq!(facts.unwrap().usage, Some(ReportedUsage::new(12, 34)));
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["model"], "fikra-flash");
    assert_eq!(
        upstream_error_message(br#"{"error":{"message":"model vendor/secret: bad temperature","type":"x"}}"#),
        Some("model vendor/secret: bad temperature")
    );
    assert_eq!(upstream_error_message(b"oops"), None);
    let by_code =
        br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    assert!(upstream_error(by_code).unwrap().is_context_length());
    let by_message = br#"{"error":{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages"}}"#;
    assert!(upstream_error(by_message).unwrap().is_context_length());
    let other = br#"{"error":{"message":"temperature must be at most 2","code":"invalid_value"}}"#;
    assert!(!upstream_error(other).unwrap().is_context_length());
    let mut replaced = Vec::new();
    write_replacing(&mut replaced, b"model vendor/secret: x vendor/secret", b"vendor/secret", b"fikra-flash");
    assert_eq!(replaced, b"model fikra-flash: x fikra-flash");
}

// Goal: an event over the single-event limit is refused, one at the limit is relayed.
#[test]
fn single_event_limit() {
    let content_len = UPSTREAM_MAX_SSE_EVENT_BYTES - br#"data: {"choices":[{"delta":{"content":""}}]}"#.len() - 2;
    let event = |content_len: usize| {
        format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n", "a".repeat(content_len))
    };
    let (mut usage, mut out) = (None, Vec::new());
    let at_limit = event(content_len);
    assert_eq!(at_limit.len(), UPSTREAM_MAX_SSE_EVENT_BYTES);
    assert_eq!(rewrite_event(at_limit.as_bytes(), &NAMES, false, &mut usage, &mut out), EventKind::Chunk);
    out.clear();
    let over = event(content_len + 1);
    assert_eq!(rewrite_event(over.as_bytes(), &NAMES, false, &mut usage, &mut out), EventKind::Malformed);
    assert!(event_too_large(UPSTREAM_MAX_SSE_EVENT_BYTES + 1) && !event_too_large(UPSTREAM_MAX_SSE_EVENT_BYTES));
}

// Goal: the top-level usage read during the walk says exactly what `parse_usage` says of the
// same object alone (the reading the x_groq path keeps), and what each case expects, however
// messy: repeated members (the last wins), escaped keys, details that are not objects or hold
// the wrong kind, counts nested deeper than details, non-integer and overflowing counts, a
// repeated `usage` whose last is not an object.
#[test]
fn usage_read_during_the_walk_matches_usage_read_alone() {
    let full = |p, c, cached, reasoning| ReportedUsage {
        prompt_tokens: p,
        completion_tokens: c,
        cached_prompt_tokens: cached,
        reasoning_tokens: reasoning,
    };
    let cases: [(&str, Option<ReportedUsage>); 18] = [
        (r#"{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}"#, Some(full(9, 5, 0, 0))),
        (r#"{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens":3}"#, Some(full(3, 2, 0, 0))),
        (r#"{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens":"3"}"#, None),
        (r#"{"pr\u006fmpt_tokens":7,"completion_tokens":2}"#, Some(full(7, 2, 0, 0))),
        (r#"{"prompt_tokens":1.0,"completion_tokens":2}"#, None),
        (r#"{"prompt_tokens":-1,"completion_tokens":2}"#, None),
        (r#"{"prompt_tokens":18446744073709551616,"completion_tokens":2}"#, None),
        (r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0}"#, Some(full(u64::MAX, 0, 0, 0))),
        (r#"{"prompt_tokens":{"n":1},"completion_tokens":2}"#, None),
        (r#"{"prompt_tokens":[1],"completion_tokens":2}"#, None),
        (
            r#"{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4,"cached_tokens":6},"completion_tokens_details":{"reasoning_tokens":1}}"#,
            Some(full(10, 2, 6, 1)),
        ),
        (
            r#"{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4},"prompt_tokens_details":null}"#,
            Some(full(10, 2, 0, 0)),
        ),
        (
            r#"{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":[{"cached_tokens":4}],"completion_tokens_details":{"x":{"reasoning_tokens":3}}}"#,
            Some(full(10, 2, 0, 0)),
        ),
        (
            r#"{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":"4","audio_tokens":1},"completion_tokens_details":{"reasoning_tokens":[3]}}"#,
            Some(full(10, 2, 0, 0)),
        ),
        (
            r#"{"prompt_tokens_details":{"reasoning_tokens":3,"cached_tokens":2},"completion_tokens_details":{"cached_tokens":9},"completion_tokens":2,"prompt_tokens":5}"#,
            Some(full(5, 2, 2, 0)),
        ),
        (r#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"completion_tokens":3}"#, None),
        (r#"{}"#, None),
        (
            r#"{"prompt_tokens":0,"completion_tokens":0,"c\u006fmpletion_tokens_details":{"reas\u006fning_tokens":8}}"#,
            Some(full(0, 0, 0, 8)),
        ),
    ];
    for (usage_json, expected) in cases {
        assert_eq!(usage::parse_usage(usage_json), expected, "alone: {usage_json}");
        let answer =
            format!(r#"{{"id":"c","choices":[{{"usage":{{"prompt_tokens":99}}}}],"usage":{usage_json},"n":[1]}}"#);
        assert_eq!(rewritten(&answer).1.unwrap().usage, expected, "walked: {answer}");
    }
    // The last top-level `usage` counts, even when it is not an object (then Groq's is read).
    let repeated = r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"prompt_tokens":5,"completion_tokens":6}}"#;
    assert_eq!(rewritten(repeated).1.unwrap().usage, Some(ReportedUsage::new(5, 6)));
    let last_null = r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":null}"#;
    assert_eq!(rewritten(last_null).1.unwrap().usage, None);
    let then_groq =
        r#"{"choices":[],"usage":{"prompt_tokens":1},"x_groq":{"usage":{"prompt_tokens":3,"completion_tokens":4}}}"#;
    assert_eq!(rewritten(then_groq).1.unwrap().usage, Some(ReportedUsage::new(3, 4)));
}
