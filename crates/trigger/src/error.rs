use thiserror::Error;

/// Why a timer trigger cannot be scheduled. The decoder in `wharf-pipeline` rejects all
/// of these when it reads YAML; they reach this crate only through a model built or
/// stored some other way, or a time zone database that changed since validation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// `timezone` names no zone in this machine's time zone database.
    #[error("`{name}` is not a known IANA time zone")]
    UnknownTimeZone {
        name: String,
        #[source]
        source: jiff::Error,
    },
    /// The `cron` expression does not parse as 5 fields.
    #[error("`{expr}` is not a valid 5-field cron expression")]
    Cron {
        expr: String,
        #[source]
        source: croner::errors::CronError,
    },
    /// A number or clock time outside the range validation allows.
    #[error("`{field}` is {value}; expected {expected}")]
    OutOfRange { field: &'static str, value: u32, expected: &'static str },
    /// A `weekly` timer without any weekday.
    #[error("a weekly timer needs at least one weekday")]
    NoWeekday,
}
