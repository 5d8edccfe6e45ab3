//! Stage triggers: a stage's hook URL (`POST /pipelines/{key}/stages/{stage}/hook`
//! makes its token, shown once) and what a call to it (`POST /hooks/stages/{token}`,
//! outside `/api/v1`) reached.

use serde::{Deserialize, Serialize};

/// A stage's new hook URL. The token is shown this once; the server keeps its SHA-256.
/// Making another replaces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageHook {
    pub pipeline: String,
    pub stage: String,
    /// `/hooks/stages/{token}`, on this server.
    pub url: String,
    pub token: String,
}

/// One run whose waiting stage got a signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalledRun {
    pub pipeline: String,
    pub number: i64,
    pub stage: String,
}

/// The answer to a stage hook call (202): the runs whose stage got the signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signalled {
    pub runs: Vec<SignalledRun>,
}
