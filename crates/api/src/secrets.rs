//! `/secrets`: project secrets by name; no answer ever holds a value.

use serde::{Deserialize, Serialize};

/// A project secret as listed: its name, never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretName {
    pub project: String,
    pub name: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `PUT /secrets/{name}?project=P`: the value (never readable back).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Secret))]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub value: Option<String>,
}

/// `PUT /secrets/{name}` when the secret is new (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretCreated {
    pub project: String,
    pub name: String,
}
