//! Money as integers: nano-USD balances, nano-USD-per-token prices, exact decimal parsing.
//!
//! Owns every conversion between the decimal strings operators and admins write ("1.00" USD,
//! "0.5" USD per million tokens, "1300" KES at "130" KES per USD) and the integers the wallet
//! keeps. Never uses floating point; every operation is checked or saturating by name.

use crate::digits::Num;
use std::fmt;

/// Nano-USD per USD.
pub const NANOS_PER_USD: u64 = 1_000_000_000;

/// An amount of money in nano-USD (1e-9 USD). Never negative by construction.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    pub fn checked_add(self, other: Nanos) -> Option<Nanos> {
        self.0.checked_add(other.0).map(Nanos)
    }
    pub fn checked_sub(self, other: Nanos) -> Option<Nanos> {
        self.0.checked_sub(other.0).map(Nanos)
    }
    pub fn saturating_sub(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }
    pub fn saturating_add(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }
    /// Exact decimal USD with nine fractional digits, e.g. `1.000000000`.
    pub fn to_usd_string(self) -> String {
        self.to_string()
    }
    /// `to_usd_string` without allocating.
    pub fn to_usd_text(self) -> UsdText {
        UsdText::new(self)
    }
}

/// Bytes of the longest `Nanos` in decimal USD (`18446744073.709551615`).
pub const USD_TEXT_MAX_BYTES: usize = 21;

/// An amount as `to_usd_string` writes it, on the stack: the form the request path uses (a
/// header or a field of an answer) without allocating.
#[derive(Copy, Clone)]
pub struct UsdText {
    bytes: [u8; USD_TEXT_MAX_BYTES],
    len: usize,
}

impl UsdText {
    pub fn new(amount: Nanos) -> UsdText {
        // 11 integer digits at most, the point and 9 fractional digits: always fits. Digits on
        // the stack, not `write!`: refusals (402) and every account answer write amounts.
        let whole = Num::new(amount.0 / NANOS_PER_USD);
        let whole = whole.as_bytes();
        // One followed by the nine fractional digits, leading zeros included.
        let fraction = Num::new(NANOS_PER_USD + amount.0 % NANOS_PER_USD);
        let mut bytes = [0u8; USD_TEXT_MAX_BYTES];
        bytes[..whole.len()].copy_from_slice(whole);
        bytes[whole.len()] = b'.';
        bytes[whole.len() + 1..whole.len() + 10].copy_from_slice(&fraction.as_bytes()[1..]);
        UsdText { bytes, len: whole.len() + 10 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for Nanos {
    /// Writes exact decimal USD with nine fractional digits, e.g. `0.999999500`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.0 / NANOS_PER_USD, self.0 % NANOS_PER_USD)
    }
}

/// A per-token price in nano-USD (0.5 USD per million tokens = 500).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NanosPerToken(pub u64);

impl NanosPerToken {
    /// The cost of `tokens` tokens at this price; `None` on overflow.
    pub fn cost_of(self, tokens: u64) -> Option<Nanos> {
        self.0.checked_mul(tokens).map(Nanos)
    }
}

/// Token counts of one request, as its backend reported them (or as the gateway estimated them).
/// `cached_prompt_tokens` are part of `prompt_tokens` and `reasoning_tokens` part of
/// `completion_tokens` (that is how upstreams report them): each token is counted once.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    /// Of `prompt_tokens`, those the upstream served from its prompt cache.
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of `completion_tokens`, those spent reasoning.
    pub reasoning_tokens: u64,
}

impl TokenUsage {
    /// Plain prompt and completion counts, nothing cached, no reasoning.
    pub const fn new(prompt_tokens: u64, completion_tokens: u64) -> TokenUsage {
        TokenUsage { prompt_tokens, cached_prompt_tokens: 0, completion_tokens, reasoning_tokens: 0 }
    }

    /// Tokens this usage takes from a TPM bucket: every token, or (as Groq counts them, and by
    /// default) every token but the cached prompt tokens.
    pub fn rate_limited_tokens(&self, count_cached_tokens: bool) -> u64 {
        let usage = self.consistent();
        let counted_prompt =
            if count_cached_tokens { usage.prompt_tokens } else { usage.prompt_tokens - usage.cached_prompt_tokens };
        counted_prompt.saturating_add(usage.completion_tokens)
    }

    /// The same usage with the parts clipped to their wholes: an upstream that reports more
    /// cached than prompt tokens (or more reasoning than completion tokens) is not believed
    /// beyond the whole, so no token is ever priced twice or below zero.
    pub fn consistent(self) -> TokenUsage {
        TokenUsage {
            cached_prompt_tokens: self.cached_prompt_tokens.min(self.prompt_tokens),
            reasoning_tokens: self.reasoning_tokens.min(self.completion_tokens),
            ..self
        }
    }
}

/// What one model charges per token (SPEC §3, §9): input, input served from the upstream's
/// cache, output. Reasoning tokens are output tokens.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Prices {
    pub input: NanosPerToken,
    pub cached_input: NanosPerToken,
    pub output: NanosPerToken,
}

impl Prices {
    /// The cost of `usage`: (prompt - cached) x input + cached x cached input + completion x
    /// output, in nano-USD, exact. Saturates at `u64::MAX` (a cost that large is charged as the
    /// hold anyway; the excess is the operator's loss).
    pub fn cost_of(&self, usage: &TokenUsage) -> Nanos {
        let usage = usage.consistent();
        let uncached = u128::from(usage.prompt_tokens - usage.cached_prompt_tokens);
        // Each product fits in u128 (u64 x u64); their sum may not, so it saturates too.
        let total = (uncached * u128::from(self.input.0))
            .saturating_add(u128::from(usage.cached_prompt_tokens) * u128::from(self.cached_input.0))
            .saturating_add(u128::from(usage.completion_tokens) * u128::from(self.output.0));
        Nanos(u64::try_from(total).unwrap_or(u64::MAX))
    }
}

/// What settling a hold charges for a request that cost `cost`: at most the hold (SPEC §3.4),
/// and the operator's loss, the part of the cost above it (saturating, never wrapping).
pub fn charge_within_hold(cost: Nanos, hold: Nanos) -> (Nanos, Nanos) {
    let charged = cost.min(hold);
    (charged, cost.saturating_sub(charged))
}

/// Settlement's rule for what an admitted request is charged for the usage it reports: its
/// cost at the model's prices, never more than its hold. Stream writers apply it to the usage
/// they relay, so the `cost_usd` they announce is the figure settlement then charges.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ChargeRule {
    pub prices: Prices,
    pub hold: Nanos,
}

impl ChargeRule {
    pub fn charge_for(&self, usage: &TokenUsage) -> Nanos {
        charge_within_hold(self.prices.cost_of(usage), self.hold).0
    }
}

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    Empty,
    NotADecimal,
    TooManyFractionDigits { max: u32 },
    TooLarge,
    Negative,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecimalError::Empty => write!(f, "empty decimal"),
            DecimalError::NotADecimal => write!(f, "not a decimal number (digits with an optional '.' part)"),
            DecimalError::TooManyFractionDigits { max } => {
                write!(f, "more than {max} digits after the decimal point")
            }
            DecimalError::TooLarge => write!(f, "number too large"),
            DecimalError::Negative => write!(f, "must not be negative"),
        }
    }
}

/// Parses a non-negative decimal string into an integer scaled by `10^scale_digits`, exactly.
/// `parse_scaled("1.5", 9) == Ok(1_500_000_000)`. Rejects signs other than a leading '-' (which
/// reports `Negative`), exponents, spaces and more fraction digits than `scale_digits`.
pub fn parse_scaled(text: &str, scale_digits: u32) -> Result<u128, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    if text.starts_with('-') {
        return Err(DecimalError::Negative);
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return Err(DecimalError::NotADecimal);
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecimalError::NotADecimal);
    }
    if text.ends_with('.') {
        return Err(DecimalError::NotADecimal);
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() as u32 > scale_digits {
        return Err(DecimalError::TooManyFractionDigits { max: scale_digits });
    }
    let scale = 10u128.pow(scale_digits);
    let mut whole_value: u128 = 0;
    for digit in whole.bytes() {
        whole_value = whole_value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(digit - b'0')))
            .ok_or(DecimalError::TooLarge)?;
        if whole_value > u128::from(u64::MAX) {
            return Err(DecimalError::TooLarge);
        }
    }
    let mut fraction_value: u128 = 0;
    for digit in fraction.bytes() {
        fraction_value = fraction_value * 10 + u128::from(digit - b'0');
    }
    fraction_value *= 10u128.pow(scale_digits - fraction.len() as u32);
    whole_value.checked_mul(scale).and_then(|v| v.checked_add(fraction_value)).ok_or(DecimalError::TooLarge)
}

/// Parses a USD amount ("1.00", "0.000000001") into nano-USD.
pub fn parse_usd(text: &str) -> Result<Nanos, DecimalError> {
    let value = parse_scaled(text, 9)?;
    u64::try_from(value).map(Nanos).map_err(|_| DecimalError::TooLarge)
}

/// Parses a price in USD per million tokens ("0.5") into nano-USD per token (500). The price
/// must be a whole number of nano-USD per token, i.e. a multiple of 0.001 USD per million.
pub fn parse_usd_per_million(text: &str) -> Result<NanosPerToken, DecimalError> {
    // USD per 1M tokens * 1e9 nanos/USD / 1e6 tokens = USD-per-million * 1000 nanos per token.
    let value = parse_scaled(text, 3)?;
    u64::try_from(value).map(NanosPerToken).map_err(|_| DecimalError::TooLarge)
}

/// Formats a nano-USD-per-token price back as USD per million tokens, trimmed ("0.5", "2").
pub fn format_usd_per_million(price: NanosPerToken) -> String {
    let whole = price.0 / 1000;
    let fraction = price.0 % 1000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// An exchange rate: how many units of a currency one USD buys, scaled by 1e9.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UnitsPerUsd {
    scaled_1e9: u128,
}

impl UnitsPerUsd {
    /// Parses "130" or "129.85" (up to 9 fraction digits). Zero is refused.
    pub fn parse(text: &str) -> Result<UnitsPerUsd, DecimalError> {
        let scaled_1e9 = parse_scaled(text, 9)?;
        if scaled_1e9 == 0 {
            return Err(DecimalError::NotADecimal);
        }
        Ok(UnitsPerUsd { scaled_1e9 })
    }

    /// Converts an amount in this currency (decimal string, up to 9 fraction digits) to nano-USD,
    /// rounding down to the nano-dollar.
    pub fn to_nanos(self, amount: &str) -> Result<Nanos, DecimalError> {
        let amount_scaled_1e9 = parse_scaled(amount, 9)?;
        // amount / rate USD = amount_scaled / rate_scaled USD = amount_scaled * 1e9 / rate_scaled nanos.
        let nanos =
            amount_scaled_1e9.checked_mul(u128::from(NANOS_PER_USD)).ok_or(DecimalError::TooLarge)? / self.scaled_1e9;
        u64::try_from(nanos).map(Nanos).map_err(|_| DecimalError::TooLarge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the stack form writes exactly what `to_usd_string` writes, up to the largest amount.
    #[test]
    fn usd_text_matches_usd_string() {
        let powers = (0..20).map(|power| 10u64.pow(power)).flat_map(|ten| [ten - 1, ten, ten + 1]);
        for nanos in [0, 1, 999_999_999, 1_000_000_000, 123_456_789_012, u64::MAX].into_iter().chain(powers) {
            let text = Nanos(nanos).to_usd_text();
            assert_eq!(text.as_bytes(), Nanos(nanos).to_usd_string().as_bytes());
        }
        assert_eq!(Nanos(u64::MAX).to_usd_text().as_bytes().len(), USD_TEXT_MAX_BYTES);
        assert_eq!(Nanos(0).to_usd_text().as_bytes(), b"0.000000000");
    }

    // Goal: decimal strings convert to exact integers and bad ones are refused with a reason.
    #[test]
    fn parses_usd_amounts_exactly() {
        assert_eq!(parse_usd("1.00"), Ok(Nanos(1_000_000_000)));
        assert_eq!(parse_usd("0.000000001"), Ok(Nanos(1)));
        assert_eq!(parse_usd("12"), Ok(Nanos(12_000_000_000)));
        assert_eq!(parse_usd(".5"), Ok(Nanos(500_000_000)));
        assert_eq!(parse_usd("0.1000000000"), Ok(Nanos(100_000_000)));
        assert_eq!(parse_usd("0.0000000001"), Err(DecimalError::TooManyFractionDigits { max: 9 }));
        assert_eq!(parse_usd("-1"), Err(DecimalError::Negative));
        assert_eq!(parse_usd("1e3"), Err(DecimalError::NotADecimal));
        assert_eq!(parse_usd("1."), Err(DecimalError::NotADecimal));
        assert_eq!(parse_usd(""), Err(DecimalError::Empty));
        assert_eq!(parse_usd(" 1"), Err(DecimalError::NotADecimal));
        assert_eq!(parse_usd("99999999999999999999"), Err(DecimalError::TooLarge));
    }

    // Goal: the reference registry's prices become the integers SPEC §3 names.
    #[test]
    fn prices_per_million_become_nanos_per_token() {
        assert_eq!(parse_usd_per_million("0.5"), Ok(NanosPerToken(500)));
        assert_eq!(parse_usd_per_million("2.0"), Ok(NanosPerToken(2000)));
        assert_eq!(parse_usd_per_million("5"), Ok(NanosPerToken(5000)));
        assert_eq!(parse_usd_per_million("0.001"), Ok(NanosPerToken(1)));
        assert!(parse_usd_per_million("0.0005").is_err());
        assert_eq!(format_usd_per_million(NanosPerToken(500)), "0.5");
        assert_eq!(format_usd_per_million(NanosPerToken(2000)), "2");
        assert_eq!(format_usd_per_million(NanosPerToken(1250)), "1.25");
    }

    // Goal: KES converts at the configured rate, rounding down to the nano-dollar.
    #[test]
    fn kes_converts_at_rate() {
        let rate = UnitsPerUsd::parse("130").unwrap();
        assert_eq!(rate.to_nanos("1300"), Ok(Nanos(10_000_000_000)));
        assert_eq!(rate.to_nanos("1"), Ok(Nanos(7_692_307)));
        assert!(UnitsPerUsd::parse("0").is_err());
    }

    // Goal: the price of a usage report, by table: cached tokens are part of the prompt and
    // priced once at their own price, reasoning tokens are output, parts larger than their
    // whole are clipped, and a cost beyond u64 saturates.
    #[test]
    fn prices_usage_by_table() {
        let prices =
            Prices { input: NanosPerToken(1_000), cached_input: NanosPerToken(500), output: NanosPerToken(3_000) };
        let usage = |prompt, cached, completion, reasoning| TokenUsage {
            prompt_tokens: prompt,
            cached_prompt_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: reasoning,
        };
        let cases = [
            (usage(0, 0, 0, 0), 0),
            (usage(100, 0, 10, 0), 100 * 1_000 + 10 * 3_000),
            // 60 of 100 prompt tokens cached: 40 x 1,000 + 60 x 500 + 10 x 3,000.
            (usage(100, 60, 10, 0), 40_000 + 30_000 + 30_000),
            // Reasoning tokens are inside completion: the same 10 output tokens.
            (usage(100, 60, 10, 7), 100_000),
            // Everything cached.
            (usage(100, 100, 0, 0), 50_000),
            // More cached than prompt is believed only up to the prompt.
            (usage(100, 500, 0, 0), 50_000),
            (usage(u64::MAX, 0, u64::MAX, 0), u64::MAX),
        ];
        for (usage, expected) in cases {
            assert_eq!(prices.cost_of(&usage), Nanos(expected), "{usage:?}");
        }
        assert_eq!(usage(100, 500, 10, 99).consistent(), usage(100, 100, 10, 10));
        assert_eq!(usage(100, 60, 10, 0).rate_limited_tokens(false), 50);
        assert_eq!(usage(100, 60, 10, 0).rate_limited_tokens(true), 110);
    }

    /// A small deterministic generator (xorshift64*), so the property test needs no crate and
    /// every run checks the same cases.
    struct Xorshift(u64);

    impl Xorshift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
        }
    }

    // Goal (property): for usage within what was asked (prompt within the input bound the hold
    // was taken for, completion within the output cap, cached within the prompt, a cached price
    // never above the input price, as configuration enforces) the charge is the exact cost, at
    // most the hold, and the operator loses nothing; for usage above it the charge is the hold
    // and the loss is exactly the excess, saturating at u64::MAX instead of wrapping.
    #[test]
    fn charges_never_exceed_holds_and_losses_are_exact() {
        let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let input = NanosPerToken(random.below(10_000));
            let prices = Prices {
                input,
                cached_input: NanosPerToken(random.below(input.0 + 1)),
                output: NanosPerToken(random.below(20_000)),
            };
            let input_upper = random.below(2_000_000);
            let output_cap = 1 + random.below(100_000);
            // The admission's hold: the input bound at the input price plus the cap at the output price.
            let hold = prices
                .input
                .cost_of(input_upper)
                .unwrap()
                .checked_add(prices.output.cost_of(output_cap).unwrap())
                .unwrap();
            let prompt = random.below(input_upper + 1);
            let within = TokenUsage {
                prompt_tokens: prompt,
                cached_prompt_tokens: random.below(prompt + 1),
                completion_tokens: random.below(output_cap + 1),
                reasoning_tokens: random.below(output_cap + 1),
            };
            let cost = prices.cost_of(&within);
            assert_eq!(charge_within_hold(cost, hold), (cost, Nanos::ZERO), "{prices:?} {within:?} hold {hold}");
            assert!(cost <= hold);

            let above = TokenUsage {
                prompt_tokens: input_upper + 1 + random.below(u64::MAX / 4),
                cached_prompt_tokens: 0,
                completion_tokens: output_cap + random.below(u64::MAX / 4),
                reasoning_tokens: 0,
            };
            let cost = prices.cost_of(&above);
            let (charged, loss) = charge_within_hold(cost, hold);
            assert!(charged <= hold && charged.0 + loss.0 == cost.0, "{prices:?} {above:?} hold {hold}");
            if cost > hold {
                assert_eq!((charged, loss), (hold, Nanos(cost.0 - hold.0)));
            }
        }
        // Saturation: a cost beyond u64 is charged as the hold and loses u64::MAX - hold.
        let prices =
            Prices { input: NanosPerToken(u64::MAX), cached_input: NanosPerToken(0), output: NanosPerToken(u64::MAX) };
        let cost = prices.cost_of(&TokenUsage::new(u64::MAX, u64::MAX));
        assert_eq!(charge_within_hold(cost, Nanos(7)), (Nanos(7), Nanos(u64::MAX - 7)));
    }

    #[test]
    fn displays_nine_digits() {
        assert_eq!(Nanos(999_999_500).to_string(), "0.999999500");
        assert_eq!(Nanos(12_000_000_001).to_string(), "12.000000001");
    }
}
