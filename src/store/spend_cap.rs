//! Per-key spend caps (SPEC §10): the cap a key carries, the UTC calendar period it counts
//! spend in, and where that period starts and ends for a given instant.
//!
//! Pure data and calendar arithmetic on the gateway's clock (milliseconds since the epoch, as
//! passed into every store call, so tests cross midnight with a manual clock). It never does
//! IO, never reads the clock itself and never touches floating point: caps are `Nanos`.

#[cfg(test)]
use crate::clock::format_utc;
use crate::clock::{civil_from_days, days_from_civil};
use crate::money::Nanos;

const MS_PER_DAY: u64 = 86_400_000;

/// The calendar period a cap's spend is counted in (UTC).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CapPeriod {
    Day,
    Month,
    /// Never resets.
    Lifetime,
}

impl CapPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            CapPeriod::Day => "day",
            CapPeriod::Month => "month",
            CapPeriod::Lifetime => "lifetime",
        }
    }

    pub fn parse(text: &str) -> Option<CapPeriod> {
        match text {
            "day" => Some(CapPeriod::Day),
            "month" => Some(CapPeriod::Month),
            "lifetime" => Some(CapPeriod::Lifetime),
            _ => None,
        }
    }

    /// How the period reads after an amount in a message.
    pub fn phrase(self) -> &'static str {
        match self {
            CapPeriod::Day => "per day (UTC)",
            CapPeriod::Month => "per month (UTC)",
            CapPeriod::Lifetime => "for its lifetime",
        }
    }

    /// One letter, as the Redis store keeps it (`d`, `m`, `l`).
    pub fn letter(self) -> &'static str {
        match self {
            CapPeriod::Day => "d",
            CapPeriod::Month => "m",
            CapPeriod::Lifetime => "l",
        }
    }

    pub fn from_letter(text: &str) -> Option<CapPeriod> {
        match text {
            "d" => Some(CapPeriod::Day),
            "m" => Some(CapPeriod::Month),
            "l" => Some(CapPeriod::Lifetime),
            _ => None,
        }
    }

    /// The start (ms) of the period containing `now_ms`; 0 for a lifetime.
    pub fn start_ms(self, now_ms: u64) -> u64 {
        match self {
            CapPeriod::Day => now_ms - now_ms % MS_PER_DAY,
            CapPeriod::Month => {
                let (year, month, _) = civil_from_days((now_ms / MS_PER_DAY) as i64);
                days_from_civil(year, month, 1) as u64 * MS_PER_DAY
            }
            CapPeriod::Lifetime => 0,
        }
    }

    /// When the period containing `now_ms` ends (the next one starts); `None` for a lifetime.
    pub fn resets_at_ms(self, now_ms: u64) -> Option<u64> {
        match self {
            CapPeriod::Day => Some(self.start_ms(now_ms) + MS_PER_DAY),
            CapPeriod::Month => {
                let (year, month, _) = civil_from_days((now_ms / MS_PER_DAY) as i64);
                let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                Some(days_from_civil(year, month, 1) as u64 * MS_PER_DAY)
            }
            CapPeriod::Lifetime => None,
        }
    }
}

/// A key's cap: at most `limit` spent (settled plus held) per `period`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpendCap {
    pub limit: Nanos,
    pub period: CapPeriod,
}

/// What a key spent, each figure in the period it counts in: the day and the month it was last
/// charged in (their starts, ms) and its lifetime. A charge counts in the period it settles in.
/// The embedded store keeps one per key; the Redis store reads the library's `k:KEY` record
/// into one (its `spend_in` follows the same rule).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodSpend {
    pub day: (u64, Nanos),
    pub month: (u64, Nanos),
    pub lifetime: Nanos,
}

impl PeriodSpend {
    /// Spent in the period of kind `period` starting at `start_ms`: a record of an older period
    /// spent nothing in it; one of a newer period (the caller's clock is behind) counts whole.
    pub fn spent_in(&self, period: CapPeriod, start_ms: u64) -> Nanos {
        let (at, spent) = match period {
            CapPeriod::Day => self.day,
            CapPeriod::Month => self.month,
            CapPeriod::Lifetime => return self.lifetime,
        };
        if at >= start_ms { spent } else { Nanos::ZERO }
    }

    /// `charged` is settled at `now_ms`: it counts in that day, that month and the lifetime.
    pub fn charge(&mut self, charged: Nanos, now_ms: u64) {
        for (slot, period) in [(&mut self.day, CapPeriod::Day), (&mut self.month, CapPeriod::Month)] {
            let start_ms = period.start_ms(now_ms);
            if slot.0 < start_ms {
                *slot = (start_ms, Nanos::ZERO);
            }
            slot.1 = slot.1.saturating_add(charged);
        }
        self.lifetime = self.lifetime.saturating_add(charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a charge counts in its day, month and lifetime; a new day starts the day's figure
    // from zero and keeps the month's; a record of an older period counts nothing in a newer one.
    #[test]
    fn spend_counts_in_the_period_it_settles_in() {
        let day1 = 1_796_213_700_000; // 2026-12-02T12:15:00Z
        let day2 = day1 + MS_PER_DAY;
        let mut spend = PeriodSpend::default();
        spend.charge(Nanos(700), day1);
        spend.charge(Nanos(50), day2);
        assert_eq!(spend.spent_in(CapPeriod::Day, CapPeriod::Day.start_ms(day2)), Nanos(50));
        assert_eq!(spend.spent_in(CapPeriod::Month, CapPeriod::Month.start_ms(day2)), Nanos(750));
        assert_eq!(spend.spent_in(CapPeriod::Lifetime, 0), Nanos(750));
        let next_month = CapPeriod::Month.resets_at_ms(day2).unwrap();
        assert_eq!(spend.spent_in(CapPeriod::Month, next_month), Nanos::ZERO);
        assert_eq!(spend.spent_in(CapPeriod::Day, CapPeriod::Day.start_ms(day1)), Nanos(50));
    }

    // Goal: periods start and reset on UTC calendar boundaries, months and years included.
    #[test]
    fn periods_follow_the_utc_calendar() {
        // 2026-12-02T12:15:00Z
        let now = 1_796_213_700_000;
        assert_eq!(format_utc(now), "2026-12-02T12:15:00Z");
        assert_eq!(format_utc(CapPeriod::Day.start_ms(now)), "2026-12-02T00:00:00Z");
        assert_eq!(format_utc(CapPeriod::Day.resets_at_ms(now).unwrap()), "2026-12-03T00:00:00Z");
        assert_eq!(format_utc(CapPeriod::Month.start_ms(now)), "2026-12-01T00:00:00Z");
        assert_eq!(format_utc(CapPeriod::Month.resets_at_ms(now).unwrap()), "2027-01-01T00:00:00Z");
        assert_eq!(CapPeriod::Lifetime.start_ms(now), 0);
        assert_eq!(CapPeriod::Lifetime.resets_at_ms(now), None);
        // A leap February.
        let feb = days_from_civil(2028, 2, 10) as u64 * MS_PER_DAY;
        assert_eq!(format_utc(CapPeriod::Month.resets_at_ms(feb).unwrap()), "2028-03-01T00:00:00Z");
        for days in [0i64, 59, 365, 10_957, 20_789, 23_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
