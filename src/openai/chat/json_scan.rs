//! A strict RFC 8259 JSON scanner over a borrowed request body.
//!
//! Owns the grammar and nothing else: strings (escapes checked, `\uXXXX` surrogates paired,
//! no raw control characters), numbers (`-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`),
//! the three literals, structure (no trailing commas, no comments, only space, tab, CR and LF
//! between tokens) and a nesting bound of `MAX_JSON_DEPTH`. UTF-8 is checked once for the whole
//! body by the caller (outside strings only ASCII is legal, so that covers string contents).
//! It never allocates, never recurses (nested containers are tracked on a fixed stack), never
//! copies or decodes a string into a buffer (key comparisons decode on the fly) and never
//! panics, whatever the input. What the values mean is for the caller (`openai::chat`, the
//! registry's parameter check).

use crate::json::special_bytes;
use crate::limits::MAX_JSON_DEPTH;
use crate::words::skip_unmarked_words;

/// A byte range of the body (`start..end`). Bodies are bounded far below 4 GiB, so `u32` fits.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub const EMPTY: Span = Span { start: 0, end: 0 };

    /// Callers only pass offsets into a body they checked to be shorter than `u32::MAX`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }
    pub fn len(&self) -> u64 {
        u64::from(self.end.saturating_sub(self.start))
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    /// The bytes this span covers in `body` (empty if it does not fit, never a panic).
    pub fn slice<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        body.get(self.start as usize..self.end as usize).unwrap_or(&[])
    }
    /// The text this span covers in `body` (empty if it does not fit or cuts a character).
    /// Slicing a `str` checks two character boundaries, never the text again.
    pub fn text<'a>(&self, body: &'a str) -> &'a str {
        body.get(self.start as usize..self.end as usize).unwrap_or("")
    }
    /// The span without its first and last byte: a string value's content without its quotes.
    pub fn inner(&self) -> Span {
        if self.len() < 2 {
            Span { start: self.start, end: self.start }
        } else {
            Span { start: self.start + 1, end: self.end - 1 }
        }
    }
}

/// A string the scanner read: its span (quotes included) and whether its content holds an
/// escape. Without one the raw content is the text itself, so it compares byte for byte.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StringToken {
    pub span: Span,
    pub escaped: bool,
}

impl StringToken {
    /// The raw content (between the quotes) in `body`.
    pub fn raw<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        self.span.inner().slice(body)
    }

    /// The content in `body`, to compare (slice it once, compare it many times).
    #[inline]
    pub fn content<'a>(&self, body: &'a [u8]) -> Content<'a> {
        Content { raw: self.raw(body), escaped: self.escaped }
    }

    /// Whether the content decodes to exactly `plain` (`Content::is`).
    #[inline]
    pub fn is(&self, body: &[u8], plain: &[u8]) -> bool {
        self.content(body).is(plain)
    }
}

/// A string's raw content and whether it holds an escape (from a `StringToken`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Content<'a> {
    pub raw: &'a [u8],
    pub escaped: bool,
}

impl Content<'_> {
    /// Whether the content decodes to exactly `plain` (as `content_eq`, byte for byte without
    /// an escape).
    #[inline]
    pub fn is(&self, plain: &[u8]) -> bool {
        if self.escaped { content_eq(self.raw, plain) } else { self.raw == plain }
    }

    /// What `table` pairs with the first name the content decodes to, if any.
    #[inline]
    pub fn pick<N: AsRef<[u8]>, T: Copy>(&self, table: &[(N, T)]) -> Option<T> {
        table.iter().find(|(name, _)| self.is(name.as_ref())).map(|(_, value)| *value)
    }
}

/// Why a body is not acceptable JSON. Each becomes a 400 `invalid_json` with its message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum JsonFault {
    NotUtf8,
    Syntax,
    BadString,
    BadNumber,
    TooDeep,
    TrailingData,
    NotAnObject,
    TooLarge,
    /// More top-level members than `limits::MAX_TOP_LEVEL_KEYS`.
    TooManyKeys,
}

impl JsonFault {
    pub fn message(self) -> &'static str {
        match self {
            JsonFault::NotUtf8 => "The request body is not valid UTF-8.",
            JsonFault::Syntax => "The request body is not valid JSON.",
            JsonFault::BadString => {
                "The request body contains an invalid JSON string (bad escape, lone surrogate, unescaped control character or missing quote)."
            }
            JsonFault::BadNumber => "The request body contains an invalid JSON number.",
            JsonFault::TooDeep => "The request body is nested too deeply.",
            JsonFault::TrailingData => "The request body has data after the JSON object.",
            JsonFault::NotAnObject => "The request body must be a JSON object.",
            JsonFault::TooLarge => "The request body is too large to parse.",
            JsonFault::TooManyKeys => "The request body has too many top-level keys.",
        }
    }
}

/// The kind of a JSON value, known from its first byte.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

/// A cursor over the body. Every method leaves the cursor just past what it consumed.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Scanner<'a> {
        Scanner { bytes, position: 0 }
    }

    pub fn position(&self) -> usize {
        self.position
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    #[inline]
    pub fn skip_whitespace(&mut self) {
        self.position = whitespace_end(self.bytes, self.position);
    }

    /// Skips whitespace and tells which kind of value starts here, without consuming it.
    #[inline]
    pub fn peek_kind(&mut self) -> Result<ValueKind, JsonFault> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => Ok(ValueKind::Object),
            Some(b'[') => Ok(ValueKind::Array),
            Some(b'"') => Ok(ValueKind::String),
            Some(b'-' | b'0'..=b'9') => Ok(ValueKind::Number),
            Some(b't') => Ok(ValueKind::True),
            Some(b'f') => Ok(ValueKind::False),
            Some(b'n') => Ok(ValueKind::Null),
            _ => Err(JsonFault::Syntax),
        }
    }

    /// Enters the object or array that starts here and sits at nesting level `depth` (the
    /// top-level value is level 1). Returns the offset just past its opening bracket.
    #[inline]
    pub fn enter(&mut self, depth: usize) -> Result<usize, JsonFault> {
        self.skip_whitespace();
        if !matches!(self.peek(), Some(b'{' | b'[')) {
            return Err(JsonFault::Syntax);
        }
        if depth > MAX_JSON_DEPTH {
            return Err(JsonFault::TooDeep);
        }
        self.position += 1;
        Ok(self.position)
    }

    /// Moves to the next member (`close` = `}`) or element (`close` = `]`) of the container
    /// entered last; `Ok(false)` once it has closed. `first` starts true for each container.
    #[inline]
    pub fn next_item(&mut self, close: u8, first: &mut bool) -> Result<bool, JsonFault> {
        self.skip_whitespace();
        if *first {
            *first = false;
            if self.peek() == Some(close) {
                self.position += 1;
                return Ok(false);
            }
            return Ok(true);
        }
        match self.peek() {
            Some(b',') => {
                self.position += 1;
                self.skip_whitespace();
                Ok(true)
            }
            Some(byte) if byte == close => {
                self.position += 1;
                Ok(false)
            }
            _ => Err(JsonFault::Syntax),
        }
    }

    /// Reads a member's key and the colon after it; returns the key's span including quotes.
    #[inline]
    pub fn key(&mut self) -> Result<Span, JsonFault> {
        self.key_string().map(|key| key.span)
    }

    /// `key`, telling also whether the key holds an escape.
    #[inline(always)]
    pub fn key_string(&mut self) -> Result<StringToken, JsonFault> {
        self.skip_whitespace();
        if self.peek() != Some(b'"') {
            return Err(JsonFault::Syntax);
        }
        let key = self.string()?;
        self.skip_whitespace();
        if self.peek() != Some(b':') {
            return Err(JsonFault::Syntax);
        }
        self.position += 1;
        Ok(key)
    }

    /// Reads the string value that starts here (after whitespace).
    #[inline(always)]
    pub fn string_value(&mut self) -> Result<StringToken, JsonFault> {
        self.skip_whitespace();
        if self.peek() != Some(b'"') {
            return Err(JsonFault::Syntax);
        }
        self.string()
    }

    /// Reads the scalar of kind `kind` that starts here (as `peek_kind` just told); returns
    /// its span. A container kind is a syntax error (use `value` or `enter` for those).
    #[inline]
    pub fn scalar_value(&mut self, kind: ValueKind) -> Result<Span, JsonFault> {
        let start = self.position;
        self.scalar_of(kind)?;
        Ok(Span::new(start, self.position))
    }

    /// Reads one whole value of any kind sitting at nesting level `depth`; returns its kind and
    /// span. Containers are walked iteratively, so no input can exhaust the stack.
    pub fn value(&mut self, depth: usize) -> Result<(ValueKind, Span), JsonFault> {
        let kind = self.peek_kind()?;
        let start = self.position;
        match kind {
            ValueKind::Object | ValueKind::Array => self.skip_container(depth)?,
            _ => self.scalar_of(kind)?,
        }
        Ok((kind, Span::new(start, self.position)))
    }

    /// Checks that only whitespace follows.
    pub fn finish(&mut self) -> Result<(), JsonFault> {
        self.skip_whitespace();
        if self.position == self.bytes.len() { Ok(()) } else { Err(JsonFault::TrailingData) }
    }

    fn skip_container(&mut self, depth: usize) -> Result<(), JsonFault> {
        // closers[i] is the closing byte of the container open at level depth + i.
        let mut closers = [0u8; MAX_JSON_DEPTH];
        let mut open = 0usize;
        let mut first = true;
        self.push_container(&mut closers, &mut open, depth)?;
        while open > 0 {
            let close = closers[open - 1];
            if !self.next_item(close, &mut first)? {
                open -= 1;
                continue;
            }
            if close == b'}' {
                self.key()?;
                self.skip_whitespace();
            }
            match self.peek() {
                Some(b'{' | b'[') => {
                    self.push_container(&mut closers, &mut open, depth)?;
                    first = true;
                }
                _ => self.scalar()?,
            }
        }
        Ok(())
    }

    fn push_container(
        &mut self,
        closers: &mut [u8; MAX_JSON_DEPTH],
        open: &mut usize,
        depth: usize,
    ) -> Result<(), JsonFault> {
        let level = depth + *open;
        let slot =
            closers.get_mut(*open).filter(|_| (1..=MAX_JSON_DEPTH).contains(&level)).ok_or(JsonFault::TooDeep)?;
        *slot = if self.peek() == Some(b'{') { b'}' } else { b']' };
        *open += 1;
        self.position += 1;
        Ok(())
    }

    fn scalar(&mut self) -> Result<(), JsonFault> {
        let kind = self.peek_kind()?;
        self.scalar_of(kind)
    }

    /// The scalar of kind `kind` (as `peek_kind` just told) that starts here.
    #[inline(always)]
    fn scalar_of(&mut self, kind: ValueKind) -> Result<(), JsonFault> {
        match kind {
            ValueKind::String => self.string().map(|_| ()),
            ValueKind::Number => self.number().map(|_| ()),
            ValueKind::True => self.literal(b"true"),
            ValueKind::False => self.literal(b"false"),
            ValueKind::Null => self.literal(b"null"),
            ValueKind::Object | ValueKind::Array => Err(JsonFault::Syntax),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonFault> {
        if self.bytes.get(self.position..).is_some_and(|rest| rest.starts_with(word)) {
            self.position += word.len();
            Ok(())
        } else {
            Err(JsonFault::Syntax)
        }
    }

    /// A string starting at its opening quote; returns its span including both quotes.
    #[inline(always)]
    fn string(&mut self) -> Result<StringToken, JsonFault> {
        let start = self.position;
        let (end, escaped) = string_end(self.bytes, start)?;
        self.position = end;
        Ok(StringToken { span: Span::new(start, end), escaped })
    }

    /// A number per the RFC grammar; returns its span.
    fn number(&mut self) -> Result<Span, JsonFault> {
        let start = self.position;
        self.position = number_end(self.bytes, start)?;
        Ok(Span::new(start, self.position))
    }
}

/// Where the string whose opening quote is at `bytes[start]` ends (just past its closing
/// quote), and whether it holds an escape: `Scanner`'s strings, for walks over a position.
#[inline(always)]
pub fn string_end(bytes: &[u8], start: usize) -> Result<(usize, bool), JsonFault> {
    let mut at = start + 1;
    let mut escaped = false;
    loop {
        // Skip plain bytes eight at a time (none is a quote, a backslash or a control byte),
        // then straight to the first special byte of the word that has one.
        at = skip_unmarked_words(bytes, at, special_bytes);
        let Some(&byte) = bytes.get(at) else {
            return Err(JsonFault::BadString);
        };
        at += 1;
        match byte {
            b'"' => return Ok((at, escaped)),
            b'\\' => {
                at = escape_end(bytes, at)?;
                escaped = true;
            }
            0x00..=0x1f => return Err(JsonFault::BadString),
            _ => {}
        }
    }
}

/// The end of an escape whose backslash is just before `bytes[at]`.
fn escape_end(bytes: &[u8], mut at: usize) -> Result<usize, JsonFault> {
    let hex4 = |at: usize| bytes.get(at..at + 4).and_then(hex_value).ok_or(JsonFault::BadString);
    let byte = *bytes.get(at).ok_or(JsonFault::BadString)?;
    at += 1;
    match byte {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(at),
        b'u' => {
            let unit = hex4(at)?;
            at += 4;
            if is_low_surrogate(unit) {
                return Err(JsonFault::BadString);
            }
            if is_high_surrogate(unit) {
                // A high surrogate must be followed at once by an escaped low surrogate.
                if bytes.get(at..at + 2) != Some(b"\\u".as_slice()) || !is_low_surrogate(hex4(at + 2)?) {
                    return Err(JsonFault::BadString);
                }
                at += 6;
            }
            Ok(at)
        }
        _ => Err(JsonFault::BadString),
    }
}

/// Where the number starting at `bytes[start]` ends, per the RFC grammar.
#[inline(always)]
pub fn number_end(bytes: &[u8], start: usize) -> Result<usize, JsonFault> {
    let digits = |mut at: usize| {
        while let Some(b'0'..=b'9') = bytes.get(at) {
            at += 1;
        }
        at
    };
    let mut at = start + usize::from(bytes.get(start) == Some(&b'-'));
    match bytes.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at = digits(at + 1),
        _ => return Err(JsonFault::BadNumber),
    }
    if bytes.get(at) == Some(&b'.') {
        if !matches!(bytes.get(at + 1), Some(b'0'..=b'9')) {
            return Err(JsonFault::BadNumber);
        }
        at = digits(at + 1);
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1 + usize::from(matches!(bytes.get(at + 1), Some(b'+' | b'-')));
        if !matches!(bytes.get(at), Some(b'0'..=b'9')) {
            return Err(JsonFault::BadNumber);
        }
        at = digits(at);
    }
    // A digit right after a complete number ("01") is not part of any valid token.
    if matches!(bytes.get(at), Some(b'0'..=b'9')) {
        return Err(JsonFault::BadNumber);
    }
    Ok(at)
}

/// Where the whitespace (space, tab, CR, LF) starting at `bytes[at]` ends.
#[inline(always)]
pub fn whitespace_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// One whole value at `bytes[at]` (after whitespace) at nesting level `depth`, as `Scanner::value`.
pub fn value_at(bytes: &[u8], at: usize, depth: usize) -> Result<(ValueKind, Span), JsonFault> {
    Scanner { bytes, position: at }.value(depth)
}

fn is_high_surrogate(unit: u32) -> bool {
    (0xD800..0xDC00).contains(&unit)
}

fn is_low_surrogate(unit: u32) -> bool {
    (0xDC00..0xE000).contains(&unit)
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &digit| Some(value * 16 + char::from(digit).to_digit(16)?))
}

/// Walks the members of the JSON object `json`, calling `visit(key, value_span)` for each of
/// its own (top-level) members in order; `key` is the raw text between the key's quotes and the
/// value span includes a string's quotes. The whole of `json` is checked (UTF-8, strict
/// grammar, nesting bounded, nothing after the object); `None` if it is not a valid object, in
/// which case `visit` may already have seen the members before the fault.
pub fn object_members<'j>(json: &'j [u8], mut visit: impl FnMut(&'j [u8], Span)) -> Option<()> {
    let text = std::str::from_utf8(json).ok()?;
    text_members(text, |key, value| visit(key.raw(json), value))
}

/// `object_members` of text already known to be UTF-8 (a `str` sliced out of a checked body
/// carries that proof, so it is not checked again); `visit` gets the key as a token.
pub fn text_members(text: &str, mut visit: impl FnMut(StringToken, Span)) -> Option<()> {
    let json = text.as_bytes();
    if u32::try_from(json.len()).is_err() {
        return None;
    }
    let mut scanner = Scanner::new(json);
    if scanner.peek_kind().ok()? != ValueKind::Object {
        return None;
    }
    scanner.enter(1).ok()?;
    let mut first = true;
    while scanner.next_item(b'}', &mut first).ok()? {
        let key = scanner.key_string().ok()?;
        let (_, value) = scanner.value(2).ok()?;
        visit(key, value);
    }
    scanner.finish().ok()
}

/// The decoded UTF-8 bytes of a string's content (between its quotes), produced on the fly.
/// Expects content the scanner accepted; anything else decodes to U+FFFD rather than panicking.
pub struct Unescaped<'a> {
    raw: &'a [u8],
    position: usize,
    pending: [u8; 4],
    pending_next: usize,
    pending_end: usize,
}

impl<'a> Unescaped<'a> {
    pub fn new(raw: &'a [u8]) -> Unescaped<'a> {
        Unescaped { raw, position: 0, pending: [0; 4], pending_next: 0, pending_end: 0 }
    }

    fn unicode_escape(&mut self) -> u8 {
        let unit = self.hex_at(self.position);
        self.position += 4;
        let code_point = match unit {
            Some(high) if is_high_surrogate(high) => {
                let low = (self.raw.get(self.position..self.position + 2) == Some(b"\\u".as_slice()))
                    .then(|| self.hex_at(self.position + 2))
                    .flatten()
                    .filter(|low| is_low_surrogate(*low));
                match low {
                    Some(low) => {
                        self.position += 6;
                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                    }
                    None => 0xFFFD,
                }
            }
            Some(unit) => unit,
            None => 0xFFFD,
        };
        let decoded = char::from_u32(code_point).unwrap_or('\u{FFFD}');
        let len = decoded.encode_utf8(&mut self.pending).len();
        self.pending_next = 1;
        self.pending_end = len;
        self.pending[0]
    }

    fn hex_at(&self, at: usize) -> Option<u32> {
        hex_value(self.raw.get(at..at + 4)?)
    }
}

impl Iterator for Unescaped<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.pending_next < self.pending_end {
            self.pending_next += 1;
            return Some(self.pending[self.pending_next - 1]);
        }
        let byte = *self.raw.get(self.position)?;
        self.position += 1;
        if byte != b'\\' {
            return Some(byte);
        }
        let escaped = *self.raw.get(self.position)?;
        self.position += 1;
        Some(match escaped {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => self.unicode_escape(),
            other => other,
        })
    }
}

/// Whether a string's raw content (between its quotes) decodes to exactly `plain`. Costs
/// O(len(plain)) however long `raw` is: decoding stops at the first difference.
pub fn content_eq(raw: &[u8], plain: &[u8]) -> bool {
    // An escape makes the raw text longer than what it decodes to, so a raw text no longer
    // than `plain` matches only byte for byte.
    if raw.len() <= plain.len() {
        return raw == plain;
    }
    // Up to the first backslash each raw byte is itself; decode only from there (most keys and
    // values differ from `plain` in their first bytes, or have no escape at all).
    let literal =
        raw.iter().zip(plain).take_while(|&(raw_byte, plain_byte)| raw_byte == plain_byte && *raw_byte != b'\\');
    let same = literal.count();
    raw[same] == b'\\' && Unescaped::new(&raw[same..]).eq(plain[same..].iter().copied())
}

/// Whether two strings' raw contents decode to the same text (`"a"` equals `"\u0061"`).
pub fn contents_eq(a: &[u8], b: &[u8]) -> bool {
    a == b || ((a.contains(&b'\\') || b.contains(&b'\\')) && Unescaped::new(a).eq(Unescaped::new(b)))
}

/// FNV-1a hash of a string's decoded content: equal for spellings that `contents_eq` equates.
pub fn content_hash(raw: &[u8]) -> u64 {
    let hash = |state: u64, byte: u8| (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    if raw.contains(&b'\\') {
        Unescaped::new(raw).fold(0xcbf2_9ce4_8422_2325, hash)
    } else {
        raw.iter().fold(0xcbf2_9ce4_8422_2325, |state, &byte| hash(state, byte))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `text` as one top-level value followed only by whitespace.
    fn scan(text: &str) -> Result<ValueKind, JsonFault> {
        let mut scanner = Scanner::new(text.as_bytes());
        let (kind, _) = scanner.value(1)?;
        scanner.finish()?;
        Ok(kind)
    }

    // Goal: the number grammar accepts exactly RFC 8259 numbers.
    #[test]
    fn numbers_follow_the_grammar() {
        use JsonFault::*;
        let cases: [(&str, Result<ValueKind, JsonFault>); 18] = [
            ("0", Ok(ValueKind::Number)),
            ("-0", Ok(ValueKind::Number)),
            ("12.5e-3", Ok(ValueKind::Number)),
            ("1E+2", Ok(ValueKind::Number)),
            ("1e400", Ok(ValueKind::Number)),
            ("-12", Ok(ValueKind::Number)),
            ("01", Err(BadNumber)),
            ("-01", Err(BadNumber)),
            ("1.", Err(BadNumber)),
            (".5", Err(Syntax)),
            ("+1", Err(Syntax)),
            ("-", Err(BadNumber)),
            ("1e", Err(BadNumber)),
            ("1e+", Err(BadNumber)),
            ("1.e3", Err(BadNumber)),
            ("0x10", Err(TrailingData)),
            ("NaN", Err(Syntax)),
            ("Infinity", Err(Syntax)),
        ];
        for (text, expected) in cases {
            assert_eq!(scan(text), expected, "{text}");
        }
    }

    // Goal: strings accept valid escapes and pairs, and refuse every malformed escape.
    #[test]
    fn strings_check_escapes() {
        use JsonFault::*;
        let cases: [(&str, Result<ValueKind, JsonFault>); 16] = [
            (r#""plain""#, Ok(ValueKind::String)),
            (r#""\" \\ \/ \b \f \n \r \t""#, Ok(ValueKind::String)),
            (r#""\u00e9\uD83D\uDE00""#, Ok(ValueKind::String)),
            ("\"caf\u{e9} \u{1F600}\"", Ok(ValueKind::String)),
            (r#""\x""#, Err(BadString)),
            (r#""\u12""#, Err(BadString)),
            (r#""\u12G4""#, Err(BadString)),
            (r#""\ud800""#, Err(BadString)),
            (r#""\udc00""#, Err(BadString)),
            (r#""\ud800\u0041""#, Err(BadString)),
            (r#""\ud800\n""#, Err(BadString)),
            (r#""\udc00\ud800""#, Err(BadString)),
            ("\"a\nb\"", Err(BadString)),
            ("\"a\tb\"", Err(BadString)),
            ("\"open", Err(BadString)),
            ("'single'", Err(Syntax)),
        ];
        for (text, expected) in cases {
            assert_eq!(scan(text), expected, "{text}");
        }
    }

    // Goal: structure is strict: no trailing commas, comments, stray tokens or odd whitespace.
    #[test]
    fn structure_is_strict() {
        use JsonFault::*;
        let cases: [(&str, Result<ValueKind, JsonFault>); 16] = [
            (" {\"a\" : [1 , {\"b\":null}, true, false] }\r\n\t", Ok(ValueKind::Object)),
            ("[]", Ok(ValueKind::Array)),
            ("{}", Ok(ValueKind::Object)),
            ("[1,]", Err(Syntax)),
            ("{\"a\":1,}", Err(Syntax)),
            ("[,1]", Err(Syntax)),
            ("{\"a\"}", Err(Syntax)),
            ("{\"a\":}", Err(Syntax)),
            ("{a:1}", Err(Syntax)),
            ("[1 2]", Err(Syntax)),
            ("[1] // c", Err(TrailingData)),
            ("[1]]", Err(TrailingData)),
            ("[tru]", Err(Syntax)),
            ("\u{a0}[]", Err(Syntax)),
            ("[\u{c}]", Err(Syntax)),
            ("", Err(Syntax)),
        ];
        for (text, expected) in cases {
            assert_eq!(scan(text), expected, "{text:?}");
        }
    }

    // Goal: nesting to MAX_JSON_DEPTH passes, one more fails, and huge depth fails without recursion.
    #[test]
    fn depth_is_bounded() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(scan(&nested(MAX_JSON_DEPTH)), Ok(ValueKind::Array));
        assert_eq!(scan(&nested(MAX_JSON_DEPTH + 1)), Err(JsonFault::TooDeep));
        assert_eq!(scan(&"[".repeat(1_000_000)), Err(JsonFault::TooDeep));
        let objects = |levels: usize| format!("{}1{}", "{\"k\":".repeat(levels), "}".repeat(levels));
        assert_eq!(scan(&objects(MAX_JSON_DEPTH)), Ok(ValueKind::Object));
        assert_eq!(scan(&objects(MAX_JSON_DEPTH + 1)), Err(JsonFault::TooDeep));
    }

    // Goal: object_members visits each top-level member of a valid object and refuses the rest.
    #[test]
    fn walks_object_members() {
        let cases: [(&[u8], Option<&str>); 9] = [
            (
                br#" {"id":"c1", "usage":{"prompt_tokens":3}, "choices":[] , "n":-1.5e3} "#,
                Some(r#"id="c1";usage={"prompt_tokens":3};choices=[];n=-1.5e3;"#),
            ),
            (b"{}", Some("")),
            (br#"{"k\"q":null}"#, Some(r#"k\"q=null;"#)),
            (br#"{"a":1}x"#, None),
            (br#"{"a":1,}"#, None),
            (br#"[{"a":1}]"#, None),
            (br#""a""#, None),
            (b"{\"a\":\"\xff\"}", None),
            (b"", None),
        ];
        for (json, expected) in cases {
            let mut seen = String::new();
            let result = object_members(json, |key, value| {
                seen.push_str(std::str::from_utf8(key).unwrap());
                seen.push('=');
                seen.push_str(std::str::from_utf8(value.slice(json)).unwrap());
                seen.push(';');
            });
            assert_eq!(result.map(|()| seen.as_str()), expected, "{}", String::from_utf8_lossy(json));
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(MAX_JSON_DEPTH - 1), "]".repeat(MAX_JSON_DEPTH - 1));
        assert_eq!(object_members(deep.as_bytes(), |_, _| {}), Some(()));
        let deeper = format!("{{\"a\":{}{}}}", "[".repeat(MAX_JSON_DEPTH), "]".repeat(MAX_JSON_DEPTH));
        assert_eq!(object_members(deeper.as_bytes(), |_, _| {}), None);
    }

    // Goal: escaped and plain spellings of a key compare equal, different keys do not.
    #[test]
    fn compares_decoded_contents() {
        let cases: [(&[u8], &[u8], bool); 13] = [
            (b"model", b"model", true),
            // A backslash in `plain` is a decoded one: the raw text spells it `\\`.
            (br"a\\b", br"a\b", true),
            (br"\/vendor\/x", b"/vendor/x", true),
            (br"vendor\/x", b"vendor/y", false),
            (b"models", b"model", false),
            (br"model\n", b"model", false),
            (br"m\u006fdel", b"model", true),
            (br"max\u005ftokens", b"max_tokens", true),
            (br"caf\u00e9", "caf\u{e9}".as_bytes(), true),
            (br"\ud83d\ude00", "\u{1F600}".as_bytes(), true),
            (br"a\nb", b"a\nb", true),
            (br"model\u0000", b"model", false),
            (b"mode", b"model", false),
        ];
        for (raw, plain, equal) in cases {
            assert_eq!(content_eq(raw, plain), equal, "{raw:?}");
        }
        assert!(contents_eq(br"\u006dodel", br"mod\u0065l"));
        assert!(!contents_eq(br"\u006dodel", b"models"));
        assert_eq!(content_hash(br"\u006dodel"), content_hash(b"model"));
        assert_ne!(content_hash(b"model"), content_hash(b"models"));
    }
}
