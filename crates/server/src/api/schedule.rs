//! `GET /api/v1/pipelines/{key}/schedule?count=5[&after=RFC 3339]`: the next fire times
//! of each timer trigger of the pipeline's latest version, in the trigger's zone, as
//! RFC 3339 with the offset in force at each time (DST shows).

use super::AppStateRef;
use super::pipelines::find_for;
use crate::authz::{Action, Caller};
use crate::error::{ApiResult, AppError};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use jiff::{Timestamp, Zoned};
use serde_json::{Value, json};
use std::collections::HashMap;
use wharf_api::schedule::{Schedule as Shown, TimerSchedule};
use wharf_core::model::TriggerKind;
use wharf_trigger::Schedule;

const DEFAULT_COUNT: usize = 5;
const MAX_COUNT: usize = 50;

/// The kind's key and the fields as the YAML writes them.
fn written(kind: &TriggerKind) -> (&'static str, Value) {
    match kind {
        TriggerKind::Events { events, branches } => ("events", json!({ "events": events, "branches": branches })),
        TriggerKind::EveryMinutes { every_minutes } => ("every_minutes", json!({ "every_minutes": every_minutes })),
        TriggerKind::EveryHours { every_hours, at_minute } => {
            ("every_hours", json!({ "every_hours": every_hours, "at_minute": at_minute }))
        }
        TriggerKind::Daily { daily } => ("daily", json!({ "daily": daily })),
        TriggerKind::Weekly { weekly, at } => ("weekly", json!({ "weekly": weekly, "at": at })),
        TriggerKind::Monthly { monthly, at } => ("monthly", json!({ "monthly": monthly, "at": at })),
        TriggerKind::Cron { cron } => ("cron", json!({ "cron": cron })),
        TriggerKind::Channel { channel } => ("channel", json!({ "channel": channel })),
    }
}

/// RFC 3339 with the zone's offset at that instant: `2026-03-29T03:00:00+02:00`.
pub fn rfc3339(t: &Zoned) -> String {
    t.timestamp().display_with_offset(t.offset()).to_string()
}

fn count(query: &HashMap<String, String>) -> ApiResult<usize> {
    match query.get("count") {
        None => Ok(DEFAULT_COUNT),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
            _ => Err(AppError::invalid(
                "bad query",
                "count",
                format!("`{text}` is not allowed: expected a whole number from 1 to {MAX_COUNT}"),
            )),
        },
    }
}

fn after(query: &HashMap<String, String>) -> ApiResult<Timestamp> {
    match query.get("after") {
        None => Ok(Timestamp::now()),
        Some(text) => text.parse::<Timestamp>().map_err(|e| {
            AppError::invalid(
                "bad query",
                "after",
                format!("`{text}` is not an RFC 3339 time with an offset (2026-03-29T01:00:00Z): {e}"),
            )
        }),
    }
}

pub async fn show(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::ViewPipeline).await?;
    let count = count(&query)?;
    let after = after(&query)?;
    let model = state.runs.pipeline_version(row.id, row.version).await?;
    let zone = state.runs.timers().zone();
    let mut triggers = Vec::new();
    for (index, trigger) in model.triggers.iter().enumerate() {
        let schedule = Schedule::new(trigger, zone).map_err(|e| {
            AppError::internal(format!("trigger {index} of pipeline {} cannot be scheduled", row.id), e)
        })?;
        let Some(schedule) = schedule else { continue };
        let (kind, fields) = written(&trigger.kind);
        let timezone = match &trigger.timezone {
            Some(name) => name.clone(),
            None => zone.iana_name().unwrap_or("local").to_owned(),
        };
        triggers.push(TimerSchedule {
            index,
            kind: kind.to_owned(),
            trigger: fields,
            timezone,
            missed: schedule.missed(),
            next: schedule.fire_times_after(after).take(count).map(|t| rfc3339(&t)).collect(),
        });
    }
    let shown = Shown {
        pipeline: row.id,
        name: row.name,
        version: row.version,
        active: row.active,
        after: rfc3339(&after.to_zoned(zone.clone())),
        triggers,
    };
    Ok(axum::Json(shown).into_response())
}
