//! Criterion benches of the input bound's two stages: the first (byte bound: the chat body's
//! single parse, which already yields it) and the second (the message text counted by
//! o200k_base and cl100k_base, plus finding that text in the body), for English text of 1 KiB,
//! 40 KiB and 1 MiB. The first stage is what every admitted request pays; the second only a
//! request the byte bound would refuse or clamp. Divide a time by the size in KiB for the cost
//! per KiB.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fikra_gateway::openai::chat::{MediaAllowance, input_tokens_upper_bound, parse_chat_request};
use fikra_gateway::openai::tokenize::texts::message_texts;
use fikra_gateway::openai::tokenize::{Tokenizer, TokenizerSpec};

/// Ordinary English prose, repeated to `bytes`.
fn english(bytes: usize) -> String {
    const PROSE: &str = "The gateway holds enough of the prepaid wallet to pay for the worst case of every \
        request, then charges what the upstream reports and releases the rest. Customers in Nairobi \
        top up by M-Pesa or card, and their requests resume within a second. ";
    PROSE.chars().cycle().take(bytes).collect()
}

fn chat_body(text: &str) -> Vec<u8> {
    let content = serde_json::to_string(text).expect("a string");
    format!(r#"{{"model":"fikra-pro-20b","messages":[{{"role":"user","content":{content}}}]}}"#).into_bytes()
}

fn benches(c: &mut Criterion) {
    let o200k = Tokenizer::load(&TokenizerSpec::O200kBase).expect("embedded").expect("a tokenizer");
    let cl100k = Tokenizer::load(&TokenizerSpec::Cl100kBase).expect("embedded").expect("a tokenizer");
    let mut group = c.benchmark_group("input_bound");
    for (label, bytes) in [("1KiB", 1usize << 10), ("40KiB", 40 << 10), ("1MiB", 1 << 20)] {
        let text = english(bytes);
        let body = chat_body(&text);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("byte_bound", label), &body, |b, body| {
            b.iter(|| {
                let chat = parse_chat_request(black_box(body)).expect("valid");
                black_box(input_tokens_upper_bound(&chat, MediaAllowance::default()))
            })
        });
        group.bench_with_input(BenchmarkId::new("find_texts", label), &body, |b, body| {
            b.iter(|| black_box(message_texts(black_box(body), u64::MAX)))
        });
        for tokenizer in [&o200k, &cl100k] {
            group.bench_with_input(BenchmarkId::new(tokenizer.name(), label), &text, |b, text| {
                b.iter(|| black_box(tokenizer.count(black_box(text))))
            });
        }
    }
    group.finish();
}

criterion_group!(tokenize, benches);
criterion_main!(tokenize);
