//! `GET /pipelines/{key}/schedule?count=5[&after=RFC 3339]`: the next fire times of
//! each timer trigger of a pipeline's latest version.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// The pipeline's id.
    pub pipeline: i64,
    pub name: String,
    pub version: i64,
    /// An inactive pipeline's timers do not fire; the times are what they would be.
    pub active: bool,
    /// The instant the times are counted from (now, unless `?after=`), RFC 3339.
    pub after: String,
    pub triggers: Vec<TimerSchedule>,
}

/// One timer trigger and its next fire times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimerSchedule {
    /// Position in the pipeline's `triggers` (event triggers count too).
    pub index: usize,
    /// The kind's key as written in the YAML: `every_minutes`, `cron`, …
    pub kind: String,
    /// The trigger's fields as written, e.g. `{"every_hours": 2, "at_minute": 28}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub trigger: serde_json::Value,
    /// The zone its wall-clock times are read in (the server's when it names none).
    pub timezone: String,
    /// What happens to fire times missed while the server was down.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "once"))]
    pub missed: wharf_core::model::Missed,
    /// The next fire times, strictly after `after`, RFC 3339 with the offset in force.
    pub next: Vec<String>,
}
