use super::texts::{MessageTexts, message_texts};
use super::*;

fn loaded(spec: TokenizerSpec) -> Arc<Tokenizer> {
    Tokenizer::load(&spec).expect("loads").expect("a tokenizer")
}

// Goal: the registry value names the right tokenizer, and anything else is refused with the
// accepted forms.
#[test]
fn spec_parses_names_and_paths() {
    assert_eq!(TokenizerSpec::parse("bytes"), Ok(TokenizerSpec::Bytes));
    assert_eq!(TokenizerSpec::parse("o200k_base"), Ok(TokenizerSpec::O200kBase));
    assert_eq!(TokenizerSpec::parse("cl100k_base"), Ok(TokenizerSpec::Cl100kBase));
    assert_eq!(
        TokenizerSpec::parse("/etc/fikra/llama3.json"),
        Ok(TokenizerSpec::HuggingFace("/etc/fikra/llama3.json".into()))
    );
    assert!(TokenizerSpec::parse("o200k").unwrap_err().contains("o200k_base"));
    assert_eq!(Tokenizer::load(&TokenizerSpec::Bytes), Ok(None));
}

// Goal: the embedded tables give the published counts (tiktoken's own figures for these
// strings).
#[test]
fn embedded_tables_count_like_tiktoken() {
    let o200k = loaded(TokenizerSpec::O200kBase);
    let cl100k = loaded(TokenizerSpec::Cl100kBase);
    assert_eq!(o200k.count("hello world"), 2);
    assert_eq!(cl100k.count("hello world"), 2);
    assert_eq!(o200k.count(""), 0);
    // A special token's spelling is plain text here: several tokens, never one.
    assert!(o200k.count("<|endoftext|>") > 1);
    assert_eq!(o200k.name(), "o200k_base");
}

/// A small deterministic generator for the property tests (xorshift64*).
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Random text mixing ASCII words, digits, punctuation, whitespace runs and multi-byte
    /// characters (Swahili, CJK, emoji).
    pub(crate) fn text(&mut self, max_chars: u64) -> String {
        const ALPHABET: [&str; 16] =
            ["a", "e", "k", "m", " ", "  ", "\n", "7", "42", ".", "?", "habari", "é", "中", "😀", "\t"];
        let chars = self.next() % (max_chars + 1);
        (0..chars).map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize]).collect()
    }
}

// Goal (property): for random texts, each table's count never exceeds the byte count, so the
// second stage never raises a bound.
#[test]
fn count_never_exceeds_bytes_for_random_texts() {
    let tables = [loaded(TokenizerSpec::O200kBase), loaded(TokenizerSpec::Cl100kBase)];
    let mut random = Lcg(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let text = random.text(400);
        for table in &tables {
            let tokens = table.count(&text);
            assert!(tokens <= text.len() as u64, "{tokens} tokens for {} bytes: {text:?}", text.len());
            assert_eq!(text.is_empty(), tokens == 0);
        }
    }
}

/// A byte-level BPE tokenizer.json: the 256 byte symbols (ids 0..=255 in symbol order), then
/// `merges` (each making the next id), split by `pre_tokenizer`.
fn tokenizer_json(merges: &[(&str, &str)], pre_tokenizer: &str) -> String {
    let mut vocab = serde_json::Map::new();
    let symbols: Vec<char> = (0u32..0x200).filter_map(char::from_u32).filter(|c| hf_symbol(*c)).take(256).collect();
    for (id, symbol) in symbols.iter().enumerate() {
        vocab.insert(symbol.to_string(), id.into());
    }
    for (index, (left, right)) in merges.iter().enumerate() {
        vocab.insert(format!("{left}{right}"), (256 + index).into());
    }
    let merges: Vec<String> = merges.iter().map(|(l, r)| format!("{l} {r}")).collect();
    format!(
        r#"{{"version":"1.0","normalizer":null,"pre_tokenizer":{pre_tokenizer},"model":{{"type":"BPE","vocab":{},"merges":{}}}}}"#,
        serde_json::Value::Object(vocab),
        serde_json::to_string(&merges).unwrap()
    )
}

/// Whether `c` is one of the 256 byte-level symbols.
fn hf_symbol(c: char) -> bool {
    let code = c as u32;
    (0x21..=0x7E).contains(&code)
        || (0xA1..=0xAC).contains(&code)
        || (0xAE..=0xFF).contains(&code)
        || (0x100..0x144).contains(&code)
}

const LLAMA3_STYLE_PRE: &str = r#"{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]}"#;

// Goal: a Llama-3-style tokenizer.json (Split regex + ByteLevel, merges in id order) loads and
// counts what its merges make: "Ġhello" is one token once merged ("Ġ" is the space byte).
#[test]
fn hugging_face_byte_level_bpe_loads_and_counts() {
    let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "hello")];
    let file = tokenizer_json(&merges, LLAMA3_STYLE_PRE);
    let path = std::env::temp_dir().join(format!("fikra-tok-{}.json", std::process::id()));
    std::fs::write(&path, file).unwrap();
    let spec = TokenizerSpec::HuggingFace(path.to_string_lossy().into_owned());
    let tokenizer = loaded(spec);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(tokenizer.count("hello"), 1);
    assert_eq!(tokenizer.count("hello hello"), 2);
    // No merge for "x": one token per byte.
    assert_eq!(tokenizer.count("xyz"), 3);
    assert_eq!(tokenizer.count("hel"), 2, "he + l");
}

/// Why `file` does not load (it must not).
fn load_error(file: &str) -> String {
    match hf_json::load(file.as_bytes()) {
        Ok(_) => panic!("loaded: {file}"),
        Err(reason) => reason,
    }
}

// Goal: what the loader cannot count faithfully is refused with the reason (check-config shows it).
#[test]
fn hugging_face_files_it_cannot_count_are_refused() {
    let out_of_order = tokenizer_json(&[("l", "l"), ("h", "e")], LLAMA3_STYLE_PRE)
        .replace("\"ll\":256", "\"ll\":257")
        .replace("\"he\":257", "\"he\":256");
    assert!(load_error(&out_of_order).contains("not in the order of their ids"));
    let unigram = r#"{"normalizer":null,"pre_tokenizer":{"type":"Metaspace"},"model":{"type":"Unigram","vocab":[]}}"#;
    assert_eq!(load_error(unigram), "model.type must be \"BPE\"");
    let metaspace = tokenizer_json(&[], r#"{"type":"Metaspace"}"#);
    assert!(load_error(&metaspace).contains("Metaspace"));
    assert!(load_error("{").starts_with("not JSON"));
    let missing = std::env::temp_dir().join("fikra-no-such-tokenizer.json");
    let error = Tokenizer::load(&TokenizerSpec::HuggingFace(missing.to_string_lossy().into_owned())).unwrap_err();
    assert!(error.starts_with("cannot read"), "{error}");
}

// Goal: the texts counted are the string contents and the text parts, decoded, in body order;
// the budget leaves the rest to the byte bound.
#[test]
fn message_texts_are_contents_and_text_parts_within_the_budget() {
    let body = br#"{"model":"m","messages":[{"role":"system","content":"be br\u0069ef"},{"role":"user","content":[{"type":"text","text":"one"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"two"}]},{"role":"assistant","content":null,"tool_calls":[]}]}"#;
    let texts = message_texts(body, 1 << 20).unwrap();
    assert_eq!(texts, MessageTexts { pieces: vec!["be brief".into(), "one".into(), "two".into()], text_bytes: 14 });
    let texts = message_texts(body, 11).unwrap();
    assert_eq!(texts, MessageTexts { pieces: vec!["be brief".into(), "one".into()], text_bytes: 11 });
    assert_eq!(message_texts(body, 7).unwrap(), MessageTexts::default());
    assert_eq!(message_texts(b"[1]", 10), None);
}

// Goal: the helper thread answers with the texts' bytes and the sum of their tokens, and
// `None` for a body it cannot read.
#[test]
fn helper_counts_all_texts_of_a_body() {
    let tokenizer = loaded(TokenizerSpec::O200kBase);
    let body = br#"{"messages":[{"role":"user","content":"hello world"},{"role":"user","content":[{"type":"text","text":"hello world"}]}]}"#;
    let answer = futures_executor_block_on(helper::count_off_worker(tokenizer.clone(), body.to_vec(), 1 << 20));
    assert_eq!(answer, Some(helper::MessageCount { text_bytes: 22, tokens: 4 }));
    let answer = futures_executor_block_on(helper::count_off_worker(tokenizer, b"{".to_vec(), 1 << 20));
    assert_eq!(answer, None);
}

/// Runs a future to completion on a monoio runtime (the helper's answer wakes it from another
/// thread).
fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime").block_on(future)
}
