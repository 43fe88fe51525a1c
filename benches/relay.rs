//! Criterion benches for the relay's per-event and per-response work: finding the end of an
//! SSE event, rewriting one chunk (model id swapped, usage looked for), and rewriting a unary
//! body. Each runs into a warm buffer, as the relay does.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fikra_gateway::backend::upstream::rewrite::{ModelNames, next_event_end, rewrite_event, rewrite_object};

const CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"openai/gpt-oss-20b\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" habari\"},\"finish_reason\":null}]}\n\n";
const UNARY: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"openai/gpt-oss-20b","choices":[{"index":0,"message":{"role":"assistant","content":"Habari ya asubuhi! Karibu sana, rafiki."},"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":9,"total_tokens":30}}"#;

const NAMES: ModelNames<'static> = ModelNames { public: "fikra-flash", upstream: "openai/gpt-oss-20b" };

fn benches(c: &mut Criterion) {
    c.bench_function("sse_next_event_end", |b| b.iter(|| next_event_end(black_box(CHUNK))));
    let mut out = Vec::with_capacity(1024);
    c.bench_function("sse_rewrite_event", |b| {
        b.iter(|| {
            out.clear();
            let mut usage = None;
            rewrite_event(black_box(CHUNK), &NAMES, false, &mut usage, &mut out)
        })
    });
    c.bench_function("unary_rewrite_object", |b| {
        b.iter(|| {
            out.clear();
            rewrite_object(black_box(UNARY), &NAMES, &mut out)
        })
    });
}

criterion_group!(relay, benches);
criterion_main!(relay);
