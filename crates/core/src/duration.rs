//! Durations as pipelines write them: a bare number is minutes (the seed's unit),
//! a string is `90s`, `2m`, `1h` or a sum such as `1h30m`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest any timeout may be, and what a pipeline timeout of 0 means (seed: "run
/// until success or failure", capped at 14 days).
pub const MAX: Duration = Duration(std::time::Duration::from_secs(14 * 24 * 3600));

/// A non-negative span of time with millisecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u64", from = "u64")]
pub struct Duration(std::time::Duration);

/// Why a duration was not understood. The message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    #[error("a duration cannot be negative")]
    Negative,
    #[error("`{0}` is not a duration: expected minutes as a number, or text like `90s`, `2m`, `1h`, `1h30m`")]
    Syntax(String),
    #[error("{0} is longer than the 14-day maximum")]
    TooLong(String),
}

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// Minutes, as the YAML's bare numbers are. Fractions are allowed (`0.5` = 30 s).
    pub fn from_minutes(minutes: f64) -> Result<Self, DurationError> {
        if minutes.is_nan() {
            return Err(DurationError::Syntax(minutes.to_string()));
        }
        if minutes < 0.0 {
            return Err(DurationError::Negative);
        }
        let ms = minutes * 60_000.0;
        if ms > MAX.0.as_millis() as f64 {
            return Err(DurationError::TooLong(format!("{minutes} minutes")));
        }
        Ok(Duration::from_millis(ms.round() as u64))
    }

    /// Text: `90s`, `2m`, `1h`, `1h30m`, `500ms`, or a bare number of minutes (`"20"`).
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let trimmed = text.trim();
        if let Ok(minutes) = trimmed.parse::<f64>()
            && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        {
            return Self::from_minutes(minutes);
        }
        if trimmed.starts_with('-') {
            return Err(DurationError::Negative);
        }
        let syntax = || DurationError::Syntax(text.to_owned());
        let mut total_ms: u128 = 0;
        let mut rest = trimmed;
        if rest.is_empty() {
            return Err(syntax());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(syntax)?;
            if digits == 0 {
                return Err(syntax());
            }
            let amount: u128 = rest[..digits].parse().map_err(|_| syntax())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let per_unit: u128 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(syntax()),
            };
            rest = &rest[unit_len..];
            total_ms = total_ms.saturating_add(amount.saturating_mul(per_unit));
        }
        if total_ms > MAX.0.as_millis() {
            return Err(DurationError::TooLong(text.to_owned()));
        }
        Ok(Duration::from_millis(total_ms as u64))
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl From<Duration> for u64 {
    fn from(d: Duration) -> u64 {
        d.as_millis()
    }
}

impl From<u64> for Duration {
    fn from(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Duration {
        Duration(d)
    }
}

/// Shortest exact spelling: `1h30m`, `90s`, `250ms`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums() {
        assert_eq!(Duration::parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(Duration::parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(Duration::parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(Duration::parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(Duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(Duration::parse("20"), Ok(Duration::from_secs(1200)));
        assert_eq!(Duration::parse("0.5"), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn bad_text_says_what_was_expected() {
        for bad in ["", "m", "5x", "1.5h", "h1", "1 h", "ten"] {
            assert!(matches!(Duration::parse(bad), Err(DurationError::Syntax(_))), "{bad}");
        }
        assert_eq!(Duration::parse("-5"), Err(DurationError::Negative));
        assert_eq!(Duration::parse("-5m"), Err(DurationError::Negative));
        assert!(matches!(Duration::parse("15d"), Err(DurationError::TooLong(_))));
        assert!(matches!(Duration::parse("99999999999999999999999h"), Err(DurationError::TooLong(_))));
        assert_eq!(Duration::parse("14d"), Ok(MAX));
    }

    #[test]
    fn display_is_the_shortest_exact_spelling() {
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::from_millis(1250).to_string(), "1s250ms");
        assert_eq!(Duration::ZERO.to_string(), "0s");
        for text in ["1h30m", "90s", "2d3h", "45m10s"] {
            let d = Duration::parse(text).unwrap();
            assert_eq!(Duration::parse(&d.to_string()), Ok(d));
        }
    }
}
