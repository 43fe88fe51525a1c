//! simd-json against the project's own scanner, on the same bytes: the chat request (its facts,
//! and the body rewritten for the backend) and the upstream's answer (usage and facts read,
//! model id rewritten), at 1 KiB, 32 KiB and 1 MiB, plus one streamed chunk for the answer.
//!
//! simd-json parses in place, so every simd-json contender first copies the input into a
//! buffer it reuses, and that copy is inside the timed work: the gateway must keep the original
//! bytes (they are forwarded). Its parse buffers (`simd_json::Buffers`) and the tape are reused
//! across iterations too, as a worker would. What simd-json does not give, and so is not asked
//! of it: spans into the original body (the project's rewrite edits the original bytes; simd-json
//! can only re-serialize its value), the SPEC §1 checks, the input bound's byte count and the
//! refusal of repeated keys. Its figures are a lower bound for the same job.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use fikra_gateway::backend::upstream::rewrite::{ModelNames, ReportedUsage, rewrite_object};
use fikra_gateway::openai::chat::{parse_chat_request, write_backend_body};
use simd_json::prelude::*;
use simd_json::{BorrowedValue, Buffers, INPUT_PADDING, Tape};

use crate::inputs::{self, PUBLIC_MODEL, UPSTREAM_MODEL};
use crate::report_allocations;

const NAMES: ModelNames<'static> = ModelNames { public: PUBLIC_MODEL, upstream: UPSTREAM_MODEL };
/// The output cap the rewrite writes.
const OUTPUT_CAP_TOKENS: u64 = 256;

/// The request sizes of the issue: 1 KiB, 32 KiB, 1 MiB.
pub const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (32 * 1024, "32KiB"), (1024 * 1024, "1MiB")];

/// What both sides read from a chat request (content sizes differ in kind, so they are not
/// compared: the project counts raw bytes between the quotes, simd-json decoded ones).
#[derive(Debug, PartialEq, Eq)]
struct ChatFacts {
    model_len: usize,
    stream: bool,
    max_tokens: Option<u64>,
    messages: usize,
}

fn project_chat_facts(body: &[u8]) -> Option<(ChatFacts, u64)> {
    let request = parse_chat_request(body).ok()?;
    let facts = ChatFacts {
        model_len: request.model.len(),
        stream: request.stream,
        max_tokens: request.max_tokens,
        messages: request.message_count,
    };
    Some((facts, request.content_bytes))
}

fn project_chat_rewrite(body: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let Ok(request) = parse_chat_request(body) else { return 0 };
    write_backend_body(body, &request, UPSTREAM_MODEL, OUTPUT_CAP_TOKENS, out);
    out.len()
}

/// simd-json's parse state, reused across requests as a worker would keep it.
pub struct SimdJson {
    /// The mutable copy simd-json parses (padded for the tape path).
    copy: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

impl SimdJson {
    pub fn new() -> SimdJson {
        SimdJson { copy: Vec::new(), buffers: Buffers::default(), tape: Some(Tape::null().reset()) }
    }

    /// Copies `input`, parses the copy into a borrowed DOM and hands it to `read`.
    fn borrowed<R>(&mut self, input: &[u8], read: impl FnOnce(&mut BorrowedValue<'_>) -> R) -> Option<R> {
        self.copy.clear();
        self.copy.extend_from_slice(input);
        let mut value = simd_json::to_borrowed_value_with_buffers(&mut self.copy, &mut self.buffers).ok()?;
        Some(read(&mut value))
    }

    /// Copies `input` with the padding `fill_tape_padded` wants (so simd-json makes no second
    /// copy), fills the reused tape and hands its root to `read`.
    fn tape<R>(&mut self, input: &[u8], read: impl FnOnce(simd_json::tape::Value<'_, '_>) -> R) -> Option<R> {
        self.copy.clear();
        self.copy.extend_from_slice(input);
        self.copy.resize(input.len() + INPUT_PADDING, 0);
        let mut tape = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = simd_json::fill_tape_padded(&mut self.copy, input.len(), &mut self.buffers, &mut tape)
            .ok()
            .map(|()| read(tape.as_value()));
        self.tape = Some(tape.reset());
        result
    }
}

/// The smaller of `max_tokens` and `max_completion_tokens`, as the project reads the cap.
fn cap(first: Option<u64>, second: Option<u64>) -> Option<u64> {
    match (first, second) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The facts of a chat request read from a simd-json value (a DOM or a tape: the same calls).
macro_rules! chat_facts_from {
    ($value:expr) => {{
        let value = $value;
        let messages = value.get_array("messages")?;
        let content_bytes = messages.iter().map(|m| m.get_str("content").map_or(0, str::len) as u64).sum();
        let facts = ChatFacts {
            model_len: value.get_str("model")?.len(),
            stream: value.get_bool("stream").unwrap_or(false),
            max_tokens: cap(value.get_u64("max_tokens"), value.get_u64("max_completion_tokens")),
            messages: messages.len(),
        };
        Some((facts, content_bytes))
    }};
}

fn borrowed_chat_facts(value: &BorrowedValue<'_>) -> Option<(ChatFacts, u64)> {
    chat_facts_from!(value)
}

fn tape_chat_facts(value: simd_json::tape::Value<'_, '_>) -> Option<(ChatFacts, u64)> {
    chat_facts_from!(value)
}

/// The backend body by simd-json: the DOM edited (model, cap, `include_usage`) and
/// re-serialized. Numbers and escapes come out in simd-json's spelling, not the client's.
fn borrowed_chat_rewrite(value: &mut BorrowedValue<'_>, out: &mut Vec<u8>) -> usize {
    out.clear();
    let _ = value.insert("model", UPSTREAM_MODEL);
    let _ = value.insert("max_tokens", OUTPUT_CAP_TOKENS);
    if value.get_bool("stream") == Some(true) {
        match value.get_mut("stream_options") {
            Some(options) if options.is_object() => {
                let _ = options.insert("include_usage", true);
            }
            _ => {
                let mut options = BorrowedValue::object();
                let _ = options.insert("include_usage", true);
                let _ = value.insert("stream_options", options);
            }
        }
    }
    if value.write(out).is_err() {
        return 0;
    }
    out.len()
}

/// What both sides read from an upstream answer.
#[derive(Debug, PartialEq, Eq)]
struct AnswerFacts {
    usage: Option<ReportedUsage>,
    has_choices: bool,
    is_error: bool,
}

fn project_answer(json: &[u8], out: &mut Vec<u8>) -> Option<AnswerFacts> {
    out.clear();
    let facts = rewrite_object(json, &NAMES, out)?;
    Some(AnswerFacts { usage: facts.usage, has_choices: facts.is_result(), is_error: facts.is_error })
}

/// Usage read from a usage object the way the project reads it (both counts required).
macro_rules! usage_from {
    ($usage:expr) => {{
        let usage = $usage;
        match (usage.get_u64("prompt_tokens"), usage.get_u64("completion_tokens")) {
            (Some(prompt), Some(completion)) => Some(ReportedUsage {
                prompt_tokens: prompt,
                cached_prompt_tokens: usage
                    .get("prompt_tokens_details")
                    .and_then(|d| d.get_u64("cached_tokens"))
                    .unwrap_or(0),
                completion_tokens: completion,
                reasoning_tokens: usage
                    .get("completion_tokens_details")
                    .and_then(|d| d.get_u64("reasoning_tokens"))
                    .unwrap_or(0),
            }),
            _ => None,
        }
    }};
}

fn tape_answer_facts(value: simd_json::tape::Value<'_, '_>) -> AnswerFacts {
    let usage = value.get("usage").and_then(|usage| usage_from!(usage));
    let has_choices = value.get("choices").is_some_and(|choices| choices.is_array());
    let is_error = value.get("error").is_some_and(|error| !error.is_null());
    AnswerFacts { usage, has_choices: has_choices && !is_error, is_error }
}

/// The answer by simd-json: facts read, the top-level model replaced, the DOM re-serialized.
/// (Less than the project's rewrite does: no model name replaced at depth.)
fn borrowed_answer_rewrite(value: &mut BorrowedValue<'_>, out: &mut Vec<u8>) -> AnswerFacts {
    out.clear();
    let usage = value.get("usage").and_then(|usage| usage_from!(usage));
    let has_choices = value.get("choices").is_some_and(|choices| choices.is_array());
    let is_error = value.get("error").is_some_and(|error| !error.is_null());
    let _ = value.insert("model", PUBLIC_MODEL);
    let _ = value.write(out);
    AnswerFacts { usage, has_choices: has_choices && !is_error, is_error }
}

pub fn benches(c: &mut Criterion) {
    let mut simd = SimdJson::new();
    let mut out = Vec::with_capacity(2 * 1024 * 1024);

    let mut group = c.benchmark_group("chat_request");
    for (size, label) in SIZES {
        let body = inputs::chat_request(size);
        let (project, _) = project_chat_facts(&body).expect("the project parses the request");
        let (borrowed, _) = simd.borrowed(&body, |v| borrowed_chat_facts(v)).flatten().expect("simd-json parses");
        let (taped, _) = simd.tape(&body, tape_chat_facts).flatten().expect("simd-json tape parses");
        assert_eq!(project, borrowed, "{label}: the contenders read the same facts");
        assert_eq!(project, taped, "{label}: the contenders read the same facts");
        println!("chat request {label}: {} bytes", body.len());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("project_scan", label), &body, |b, body| {
            b.iter(|| project_chat_facts(black_box(body)).map(|(_, bytes)| bytes))
        });
        group.bench_with_input(BenchmarkId::new("simd_json_borrowed", label), &body, |b, body| {
            b.iter(|| simd.borrowed(black_box(body), |v| borrowed_chat_facts(v).map(|(_, bytes)| bytes)))
        });
        group.bench_with_input(BenchmarkId::new("simd_json_tape", label), &body, |b, body| {
            b.iter(|| simd.tape(black_box(body), |v| tape_chat_facts(v).map(|(_, bytes)| bytes)))
        });
        group.bench_with_input(BenchmarkId::new("project_scan_and_rewrite", label), &body, |b, body| {
            b.iter(|| project_chat_rewrite(black_box(body), &mut out))
        });
        group.bench_with_input(BenchmarkId::new("simd_json_borrowed_and_reserialize", label), &body, |b, body| {
            b.iter(|| simd.borrowed(black_box(body), |v| borrowed_chat_rewrite(v, &mut out)))
        });
        report_allocations(&format!("chat_request/project_scan/{label}"), || {
            black_box(project_chat_facts(&body));
        });
        report_allocations(&format!("chat_request/simd_json_borrowed/{label}"), || {
            black_box(simd.borrowed(&body, |v| borrowed_chat_facts(v).map(|(_, bytes)| bytes)));
        });
        report_allocations(&format!("chat_request/simd_json_tape/{label}"), || {
            black_box(simd.tape(&body, |v| tape_chat_facts(v).map(|(_, bytes)| bytes)));
        });
        report_allocations(&format!("chat_request/project_scan_and_rewrite/{label}"), || {
            black_box(project_chat_rewrite(&body, &mut out));
        });
        report_allocations(&format!("chat_request/simd_json_borrowed_and_reserialize/{label}"), || {
            black_box(simd.borrowed(&body, |v| borrowed_chat_rewrite(v, &mut out)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("upstream_answer");
    let mut cases: Vec<(Vec<u8>, &str)> =
        SIZES.iter().map(|&(size, label)| (inputs::upstream_answer(size), label)).collect();
    cases.insert(0, (inputs::sse_chunk_json(), "sse_chunk"));
    for (json, label) in &cases {
        let label = *label;
        let project = project_answer(json, &mut out).expect("the project reads the answer");
        let taped = simd.tape(json, tape_answer_facts).expect("simd-json tape parses");
        let borrowed = simd.borrowed(json, |v| borrowed_answer_rewrite(v, &mut out)).expect("simd-json parses");
        assert_eq!(project, taped, "{label}: the contenders read the same facts");
        assert_eq!(project, borrowed, "{label}: the contenders read the same facts");
        if label != "sse_chunk" {
            let expected = ReportedUsage {
                cached_prompt_tokens: inputs::CACHED_TOKENS,
                ..ReportedUsage::new(inputs::PROMPT_TOKENS, inputs::COMPLETION_TOKENS)
            };
            assert_eq!(project.usage, Some(expected), "{label}: the generated usage is read");
        }
        println!("upstream answer {label}: {} bytes", json.len());
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_with_input(BenchmarkId::new("project_rewrite_object", label), json, |b, json| {
            b.iter(|| project_answer(black_box(json), &mut out))
        });
        group.bench_with_input(BenchmarkId::new("simd_json_tape_facts_only", label), json, |b, json| {
            b.iter(|| simd.tape(black_box(json), tape_answer_facts))
        });
        group.bench_with_input(BenchmarkId::new("simd_json_borrowed_and_reserialize", label), json, |b, json| {
            b.iter(|| simd.borrowed(black_box(json), |v| borrowed_answer_rewrite(v, &mut out)))
        });
        report_allocations(&format!("upstream_answer/project_rewrite_object/{label}"), || {
            black_box(project_answer(json, &mut out));
        });
        report_allocations(&format!("upstream_answer/simd_json_tape_facts_only/{label}"), || {
            black_box(simd.tape(json, tape_answer_facts));
        });
        report_allocations(&format!("upstream_answer/simd_json_borrowed_and_reserialize/{label}"), || {
            black_box(simd.borrowed(json, |v| borrowed_answer_rewrite(v, &mut out)));
        });
    }
    group.finish();
}
