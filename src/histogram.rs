//! Latency histograms for Prometheus: fixed bucket bounds in microseconds, one set of counters
//! per worker shard, summed when scraped.
//!
//! Owns the bucket bounds (`BUCKET_BOUNDS_US`, from 100 µs to 5 minutes: gateway overhead sits
//! at the low end, whole streams at the high end) and the text exposition of one histogram
//! (`_bucket{le=...}` cumulative, `_sum` in seconds, `_count`). Recording is one bucket search
//! and three relaxed stores, with no allocation and no lock: a shard has one writer (its
//! worker), so a load and a store cannot lose an update, and every counter saturates instead
//! of wrapping. It never reads a clock: callers pass durations.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in microseconds (the last bucket, `+Inf`, has none).
pub const BUCKET_BOUNDS_US: [u64; 20] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];
const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

// The bounds must rise, or a duration could belong to two buckets.
const _: () = {
    let mut index = 1;
    while index < BUCKET_BOUNDS_US.len() {
        assert!(BUCKET_BOUNDS_US[index - 1] < BUCKET_BOUNDS_US[index]);
        index += 1;
    }
};

/// One worker's counters for one histogram (not cumulative: each bucket counts its own range).
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }
}

/// Adds `by` to a single-writer counter, saturating.
fn add_saturating(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed).saturating_add(by), Ordering::Relaxed);
}

impl Histogram {
    /// Records one observation of `duration_us`. Call only from the shard's own worker.
    pub fn record_us(&self, duration_us: u64) {
        let index = BUCKET_BOUNDS_US.partition_point(|bound| *bound < duration_us);
        add_saturating(&self.buckets[index], 1);
        add_saturating(&self.sum_us, duration_us);
    }

    /// Adds this shard's counts into `total` (saturating).
    pub fn add_to(&self, total: &mut HistogramTotal) {
        for (sum, bucket) in total.buckets.iter_mut().zip(&self.buckets) {
            *sum = sum.saturating_add(bucket.load(Ordering::Relaxed));
        }
        total.sum_us = total.sum_us.saturating_add(self.sum_us.load(Ordering::Relaxed));
    }
}

/// Every shard's counts of one histogram, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramTotal {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl HistogramTotal {
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |count, bucket| count.saturating_add(*bucket))
    }
}

/// Writes `# HELP` and `# TYPE` for a histogram family (once per name).
pub fn render_header(text: &mut String, name: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} histogram");
}

/// Writes one histogram's series: `labels` is empty or `key="value"` pairs without braces.
pub fn render_series(text: &mut String, name: &str, labels: &str, total: &HistogramTotal) {
    let separator = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (index, count) in total.buckets.iter().enumerate() {
        cumulative = cumulative.saturating_add(*count);
        let _ = match BUCKET_BOUNDS_US.get(index) {
            Some(bound_us) => {
                writeln!(text, "{name}_bucket{{{labels}{separator}le=\"{}\"}} {cumulative}", seconds(*bound_us))
            }
            None => writeln!(text, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"),
        };
    }
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(text, "{name}_sum{braces} {}", seconds(total.sum_us));
    let _ = writeln!(text, "{name}_count{braces} {}", total.count());
}

/// Microseconds as exact decimal seconds, trailing zeros trimmed (`2500` -> `0.0025`).
fn seconds(us: u64) -> String {
    let (whole, fraction) = (us / 1_000_000, us % 1_000_000);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: an observation lands in the first bucket whose bound is not below it; sums and
    // counts are exact; the exposition is cumulative with exact decimal bounds.
    #[test]
    fn records_and_renders_exactly() {
        let histogram = Histogram::default();
        for us in [0, 100, 101, 2_500, 299_999_999, 300_000_001, u64::MAX] {
            histogram.record_us(us);
        }
        let mut total = HistogramTotal::default();
        histogram.add_to(&mut total);
        histogram.add_to(&mut total);
        assert_eq!(total.buckets[0], 4, "0 and 100 us, twice");
        assert_eq!(total.buckets[1], 2, "101 us");
        assert_eq!(total.buckets[4], 2, "2.5 ms");
        assert_eq!(total.buckets[19], 2, "just under 5 min");
        assert_eq!(total.buckets[20], 4, "over 5 min");
        assert_eq!(total.count(), 14);
        assert_eq!(total.sum_us, u64::MAX, "the sum saturates");

        let mut text = String::new();
        let mut small = HistogramTotal::default();
        small.buckets[0] = 1;
        small.buckets[3] = 2;
        small.sum_us = 1_500_100;
        render_header(&mut text, "fikra_x_seconds", "X.");
        render_series(&mut text, "fikra_x_seconds", "route=\"/v1/models\"", &small);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# HELP fikra_x_seconds X.");
        assert_eq!(lines[1], "# TYPE fikra_x_seconds histogram");
        assert_eq!(lines[2], "fikra_x_seconds_bucket{route=\"/v1/models\",le=\"0.0001\"} 1");
        assert_eq!(lines[5], "fikra_x_seconds_bucket{route=\"/v1/models\",le=\"0.001\"} 3");
        assert_eq!(lines[22], "fikra_x_seconds_bucket{route=\"/v1/models\",le=\"+Inf\"} 3");
        assert_eq!(lines[23], "fikra_x_seconds_sum{route=\"/v1/models\"} 1.5001");
        assert_eq!(lines[24], "fikra_x_seconds_count{route=\"/v1/models\"} 3");
        let mut bare = String::new();
        render_series(&mut bare, "fikra_y_seconds", "", &small);
        assert!(bare.starts_with("fikra_y_seconds_bucket{le=\"0.0001\"} 1\n"), "{bare}");
        assert!(bare.ends_with("fikra_y_seconds_sum 1.5001\nfikra_y_seconds_count 3\n"), "{bare}");
    }
}
