//! Values: a chart's `values.yaml`, the user's `-f` files and `--set` flags, merged in
//! Helm's order (chart defaults ← `-f` files in order ← `--set` ← `--set-string`), and
//! coalesced into subcharts (their section, `global` handed down, parents winning).

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::Value;

use crate::strvals;
use crate::yaml;

/// The largest values text (a `-f` file or a `--set` argument) accepted.
pub const MAX_VALUES_BYTES: usize = 5 * 1024 * 1024;

pub(crate) type Map = BTreeMap<Arc<str>, Value>;

/// A values tree (a YAML mapping), as templates see it under `.Values`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values(pub(crate) Arc<Map>);

/// Values that could not be read: which source and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValuesError {
    /// A values file is not valid YAML, or not a mapping.
    #[error("{source_name}: {message}")]
    File { source_name: String, message: String },
    /// A `--set` argument Helm's parser would refuse.
    #[error("failed parsing --set data: {0}")]
    Set(String),
    #[error("{0}: larger than the {MAX_VALUES_BYTES} bytes values may have")]
    TooLarge(String),
}

impl Values {
    /// Values read from YAML text (a mapping; empty text is empty values).
    pub fn from_yaml(text: &str) -> Result<Values, ValuesError> {
        Self::from_named_yaml("values", text)
    }

    fn from_named_yaml(name: &str, text: &str) -> Result<Values, ValuesError> {
        if text.len() > MAX_VALUES_BYTES {
            return Err(ValuesError::TooLarge(name.to_string()));
        }
        match yaml::from_yaml(text) {
            Ok(Value::Map(m)) => Ok(Values(m)),
            Ok(Value::Nil) => Ok(Values::default()),
            Ok(_) => Err(ValuesError::File {
                source_name: name.to_string(),
                message:
                    "error unmarshaling JSON: json: cannot unmarshal into Go value of type map[string]interface {}"
                        .into(),
            }),
            Err(e) => Err(ValuesError::File { source_name: name.to_string(), message: e.to_string() }),
        }
    }

    /// The user's values as `helm template`/`install` build them: each `-f` file
    /// (name, text) merged over the previous ones, then every `--set`, then every
    /// `--set-string` applied in order.
    pub fn from_user(files: &[(String, String)], set: &[String], set_string: &[String]) -> Result<Values, ValuesError> {
        let mut base = Map::new();
        for (name, text) in files {
            let v = Self::from_named_yaml(name, text)?;
            merge_maps(&mut base, &v.0);
        }
        for s in set {
            if s.len() > MAX_VALUES_BYTES {
                return Err(ValuesError::TooLarge("--set".into()));
            }
            strvals::parse_into(s, &mut base, false).map_err(ValuesError::Set)?;
        }
        for s in set_string {
            if s.len() > MAX_VALUES_BYTES {
                return Err(ValuesError::TooLarge("--set-string".into()));
            }
            strvals::parse_into(s, &mut base, true).map_err(ValuesError::Set)?;
        }
        Ok(Values(Arc::new(base)))
    }

    /// The values as a template value (a map).
    pub fn as_value(&self) -> Value {
        Value::Map(self.0.clone())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values as JSON (what a Helm release record stores as `config`).
    pub fn to_json(&self) -> serde_json::Value {
        to_json(&self.as_value())
    }

    /// The values as YAML, written the way Helm writes them (`toYaml`).
    pub fn to_yaml(&self) -> String {
        yaml::to_yaml(&self.as_value())
    }
}

/// A template value as JSON (numbers stay integers where Go's would).
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Uint(u) => serde_json::Value::from(*u),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                serde_json::Value::from(*f as i64)
            } else {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::List(l) => serde_json::Value::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        Value::Function(_) => serde_json::Value::Null,
    }
}

/// Helm's `mergeMaps`: `over` into `base`, maps merged key by key, anything else replaced.
pub(crate) fn merge_maps(base: &mut Map, over: &Map) {
    for (k, v) in over {
        if let Value::Map(ov) = v
            && let Some(Value::Map(bv)) = base.get_mut(k)
        {
            merge_maps(Arc::make_mut(bv), ov);
            continue;
        }
        base.insert(k.clone(), v.clone());
    }
}
