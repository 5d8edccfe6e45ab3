//! `/deliveries`: stored webhook deliveries and what each started.

use serde::{Deserialize, Serialize};

/// What became of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Authentic and readable, being handled.
    Received,
    /// It started at least one run.
    Started,
    /// Authentic, but it starts nothing (a ping, a deletion, no matching pipeline…).
    Ignored,
    /// The provider's delivery id was seen before: nothing started.
    Duplicate,
    /// Refused: unknown binding, bad signature, unreadable payload, too large.
    Rejected,
}

/// A delivery as listed: everything but the headers and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    pub id: i64,
    pub binding: String,
    pub provider: String,
    /// The provider's id of the delivery.
    pub delivery_id: String,
    pub event: String,
    pub verdict: Verdict,
    pub reason: Option<String>,
    /// Ids of the runs it started.
    pub runs: Vec<i64>,
    pub body_sha256: String,
    pub received_at: i64,
}

/// `GET /deliveries/{delivery}`: with its headers (secret-bearing ones redacted when
/// stored) and its body as text (`null` when it is not UTF-8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryShown {
    #[serde(flatten)]
    pub delivery: Delivery,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub headers: serde_json::Value,
    pub body_size: Option<usize>,
    pub body: Option<String>,
}

/// What handling a delivery answers (the webhook endpoint, and a replay with
/// `replay_of`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Handled {
    /// The new delivery's id.
    pub delivery: i64,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub runs: Vec<i64>,
    /// The delivery replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<i64>,
}
