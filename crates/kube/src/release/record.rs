//! The release record: Helm's `release.Release` JSON, field for field, and its encoding.
//! Fields Wharf does not use are kept as they were read (`extra`), so a release Helm wrote
//! and Wharf rewrites (a status change) loses nothing.

use std::io::Read as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest release JSON [`decode`] inflates (Secrets hold at most 1 MiB, gzipped).
pub const MAX_RELEASE_JSON: u64 = 32 << 20;

/// A release's status, as Helm writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Deployed,
    Uninstalled,
    Superseded,
    Failed,
    Uninstalling,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    #[serde(other)]
    Unknown,
}

impl Status {
    /// `pending-install`, as in the Secret's `status` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Deployed => "deployed",
            Status::Uninstalled => "uninstalled",
            Status::Superseded => "superseded",
            Status::Failed => "failed",
            Status::Uninstalling => "uninstalling",
            Status::PendingInstall => "pending-install",
            Status::PendingUpgrade => "pending-upgrade",
            Status::PendingRollback => "pending-rollback",
            Status::Unknown => "unknown",
        }
    }

    pub fn is_pending(self) -> bool {
        matches!(self, Status::PendingInstall | Status::PendingUpgrade | Status::PendingRollback | Status::Uninstalling)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Helm's `release.Info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    #[serde(default)]
    pub first_deployed: String,
    #[serde(default)]
    pub last_deployed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
    #[serde(default)]
    pub description: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A file of the chart: `data` is its bytes in base64 (Go's `[]byte`). Helm 4 adds the
/// file's `modtime` from the archive; Wharf leaves it out (Helm reads the zero time) and
/// keeps it on records Helm wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    #[serde(default)]
    pub data: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl FileRecord {
    pub fn new(name: &str, bytes: &[u8]) -> Self {
        FileRecord {
            name: name.to_owned(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            extra: Map::new(),
        }
    }
}

/// Helm's `chart.Chart` as a release stores it (without its subcharts: Helm does not
/// store them either; a rollback reuses the manifest, it does not render).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChartRecord {
    /// `Chart.yaml` as JSON; `name`, `version` and `appVersion` are read from it.
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub lock: Value,
    #[serde(default)]
    pub templates: Vec<FileRecord>,
    #[serde(default)]
    pub values: Map<String, Value>,
    #[serde(default)]
    pub schema: Value,
    #[serde(default)]
    pub files: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChartRecord {
    fn meta(&self, key: &str) -> &str {
        self.metadata.get(key).and_then(Value::as_str).unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.meta("name")
    }

    pub fn version(&self) -> &str {
        self.meta("version")
    }

    pub fn app_version(&self) -> &str {
        self.meta("appVersion")
    }
}

/// When a hook last ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// `""`, `Running`, `Succeeded` or `Failed`.
    #[serde(default)]
    pub phase: String,
}

/// Helm's `release.Hook`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookRecord {
    pub name: String,
    pub kind: String,
    /// `chart/templates/hook.yaml`
    pub path: String,
    /// The document, as rendered.
    pub manifest: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub last_run: LastRun,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete_policies: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Helm's `release.Release`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub info: Info,
    pub chart: ChartRecord,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub manifest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRecord>,
    pub version: u32,
    #[serde(default)]
    pub namespace: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The time as Helm writes it (Go's RFC 3339 with nanoseconds, trailing zeros dropped).
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The release → the Secret's `release` value: JSON, gzip, base64.
pub fn encode(release: &Release) -> Vec<u8> {
    let json = serde_json::to_vec(release).expect("a release serializes");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &json).expect("writing to memory");
    let zipped = gz.finish().expect("writing to memory");
    base64::engine::general_purpose::STANDARD.encode(zipped).into_bytes()
}

/// The Secret's `release` value → the release: base64, then gunzip when it starts with
/// gzip's magic bytes, then JSON; inflated at most to [`MAX_RELEASE_JSON`].
pub fn decode(value: &[u8]) -> Result<Release, String> {
    let text: Vec<u8> = value.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(&text).map_err(|e| format!("the value is not base64: {e}"))?;
    let json = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .take(MAX_RELEASE_JSON + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("the value is not valid gzip: {e}"))?;
        if out.len() as u64 > MAX_RELEASE_JSON {
            return Err(format!("the release is larger than {} MiB once inflated", MAX_RELEASE_JSON >> 20));
        }
        out
    } else {
        bytes
    };
    serde_json::from_slice(&json).map_err(|e| format!("the release JSON does not read as Helm's: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What helm v4.1.4 wrote for `helm install h1 ./hk --set msg=hi` (templates shortened).
    const HELM_JSON: &str = r#"{"name":"h1","info":{"first_deployed":"2026-12-07T09:44:50.161799373Z","last_deployed":"2026-12-07T09:44:50.161799373Z","description":"Install complete","status":"deployed"},"chart":{"metadata":{"name":"hk","version":"0.1.0","apiVersion":"v2","appVersion":"1.0"},"lock":null,"templates":[{"name":"templates/cm.yaml","data":"YQ==","modtime":"2026-12-07T10:04:21Z"}],"values":{"msg":"hello"},"schema":null,"schemamodtime":"0001-01-01T00:00:00Z","files":null,"modtime":"2026-12-07T09:44:50.060848042Z"},"config":{"msg":"hi"},"manifest":"---\n# Source: hk/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: h1-cm\ndata:\n  msg: \"hi\"\n","hooks":[{"name":"h1-hook","kind":"ConfigMap","path":"hk/templates/hook.yaml","manifest":"apiVersion: v1\nkind: ConfigMap","events":["pre-install","pre-upgrade"],"last_run":{"started_at":"2026-12-07T09:44:50.189991358Z","completed_at":"2026-12-07T09:44:50.208688586Z","phase":"Succeeded"},"weight":-5,"delete_policies":["before-hook-creation","hook-succeeded"]},{"name":"t","kind":"Pod","path":"hk/templates/t.yaml","manifest":"x","events":["test"],"last_run":{"phase":""}}],"version":1,"namespace":"default","apply_method":"ssa"}"#;

    #[test]
    fn helms_json_reads_and_writes_back_the_same() {
        let release: Release = serde_json::from_str(HELM_JSON).unwrap();
        assert_eq!(release.info.status, Status::Deployed);
        assert_eq!(release.chart.name(), "hk");
        assert_eq!(release.chart.app_version(), "1.0");
        assert_eq!(release.hooks[0].weight, -5);
        assert_eq!(release.config["msg"], "hi");
        let again: Value = serde_json::to_value(&release).unwrap();
        assert_eq!(again, serde_json::from_str::<Value>(HELM_JSON).unwrap());
    }

    #[test]
    fn encoding_round_trips_and_plain_json_is_read_too() {
        let release: Release = serde_json::from_str(HELM_JSON).unwrap();
        let value = encode(&release);
        assert!(value.starts_with(b"H4sI"), "gzip in base64 starts H4sI");
        assert_eq!(decode(&value).unwrap(), release);
        let plain = base64::engine::general_purpose::STANDARD.encode(HELM_JSON);
        assert_eq!(decode(plain.as_bytes()).unwrap(), release);
        assert!(decode(b"%%%").unwrap_err().contains("not base64"));
        let not_json = base64::engine::general_purpose::STANDARD.encode("{\"name\": 1}");
        assert!(decode(not_json.as_bytes()).unwrap_err().contains("Helm's"));
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        let zeros = vec![b' '; (MAX_RELEASE_JSON + 10) as usize];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
        let value = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        assert!(decode(value.as_bytes()).unwrap_err().contains("larger than"));
    }

    #[test]
    fn statuses_are_helms_words() {
        let s: Status = serde_json::from_str("\"pending-rollback\"").unwrap();
        assert_eq!(s, Status::PendingRollback);
        assert_eq!(serde_json::to_string(&Status::PendingInstall).unwrap(), "\"pending-install\"");
        let odd: Status = serde_json::from_str("\"something-new\"").unwrap();
        assert_eq!(odd, Status::Unknown);
    }
}
