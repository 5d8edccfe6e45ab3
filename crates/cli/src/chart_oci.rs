//! `wharf chart package` and `wharf chart push`: `package` writes the `.tgz` `helm
//! package` writes; `push` stores one in a registry as `helm push` does (an OCI Helm
//! artifact, tagged with the chart's version), straight to the registry.

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use wharf_executor::build::RegistryLogin;
use wharf_executor::chart::{ChartUpload, MAX_CHART_ARCHIVE_BYTES};

/// `wharf chart package`.
#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// The chart directory (holding Chart.yaml).
    dir: PathBuf,
    /// Set the chart's version (SemVer 2) instead of Chart.yaml's.
    #[arg(long = "version", id = "chart_version", value_name = "VERSION")]
    version: Option<String>,
    /// Set the chart's appVersion.
    #[arg(long)]
    app_version: Option<String>,
    /// Where to write the archive.
    #[arg(short = 'd', long = "destination", default_value = ".")]
    destination: PathBuf,
}

/// `wharf chart push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The packaged chart (`.tgz`).
    archive: PathBuf,
    /// `host[:port]/workspace`, or `http://host[:port]/workspace` with --insecure.
    target: String,
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// The password (prefer WHARF_REGISTRY_PASSWORD or --password-stdin: a flag
    /// shows in the process list).
    #[arg(long, env = "WHARF_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,
    /// Plain HTTP (a registry on this machine).
    #[arg(long)]
    insecure: bool,
}

pub fn package(args: PackageArgs) -> Result<ExitCode> {
    let PackageArgs { dir, version, app_version, destination } = args;
    {
        {
            let chart =
                wharf_chart::load_dir(&dir).with_context(|| format!("loading the chart in {}", dir.display()))?;
            let options = wharf_chart::package::PackageOptions {
                version,
                app_version,
                mtime: jiff::Timestamp::now().as_second().max(0) as u64,
            };
            let package = wharf_chart::package::package(&chart, &options)
                .with_context(|| format!("packaging the chart in {}", dir.display()))?;
            std::fs::create_dir_all(&destination).with_context(|| format!("creating {}", destination.display()))?;
            let path = destination.join(package.file_name());
            std::fs::write(&path, &package.archive).with_context(|| format!("writing {}", path.display()))?;
            println!("Successfully packaged chart and saved it to: {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn push(args: PushArgs) -> Result<ExitCode> {
    let PushArgs { archive, target, username, password, password_stdin, insecure } = args;
    {
        {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_to_string(&mut line).context("reading the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                password
            };
            let (url, workspace) = split_target(&target)?;
            let host = wharf_image::RegistryAccess::from_url(&url, insecure).map_err(anyhow::Error::msg)?;
            let size = std::fs::metadata(&archive).with_context(|| format!("reading {}", archive.display()))?.len();
            if size > MAX_CHART_ARCHIVE_BYTES as u64 {
                bail!(
                    "{} is {size} bytes; a chart archive may have at most {MAX_CHART_ARCHIVE_BYTES}",
                    archive.display()
                );
            }
            let bytes = std::fs::read(&archive).with_context(|| format!("reading {}", archive.display()))?;
            let chart = wharf_chart::load_archive(&bytes)
                .with_context(|| format!("{} is not a chart archive", archive.display()))?;
            wharf_chart::package::check_metadata(&chart.metadata).with_context(|| archive.display().to_string())?;
            let config = serde_json::to_vec(&wharf_chart::package::metadata_json(&chart.metadata))?;
            let login = RegistryLogin { name: host.clone(), host, username, password, insecure };
            let upload = ChartUpload {
                repository: format!("{workspace}/{}", chart.metadata.name),
                version: chart.metadata.version.clone(),
                archive: bytes,
                config,
            };
            // The registry named is called wherever it is; internal addresses it sends
            // the client on to (a token realm, a redirect) are refused, as on the server.
            let policy = wharf_outbound::Policy::default();
            let pushed = wharf_image::OciCharts::new(policy).push_chart(&login, &upload).await?;
            println!("Pushed: {}", pushed.reference);
            println!("Digest: {}", pushed.digest);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `host[:port]/workspace` (or with `http://`) as the registry's address and the
/// workspace; the workspace is checked as a path component.
fn split_target(target: &str) -> Result<(String, String)> {
    match target.trim_end_matches('/').rsplit_once('/') {
        Some((url, workspace)) if !url.is_empty() && !url.ends_with(':') && !url.ends_with('/') => {
            wharf_core::reference::check_component(workspace).with_context(|| format!("`{target}`: the workspace"))?;
            Ok((url.to_owned(), workspace.to_owned()))
        }
        _ => bail!("`{target}`: give the registry and the workspace, as REGISTRY/WORKSPACE (127.0.0.1:5055/charts)"),
    }
}

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn a_push_target_is_a_registry_and_a_workspace() {
        let ok = |t: &str| split_target(t).unwrap();
        assert_eq!(ok("127.0.0.1:5055/charts"), ("127.0.0.1:5055".into(), "charts".into()));
        assert_eq!(ok("http://127.0.0.1:5055/charts/"), ("http://127.0.0.1:5055".into(), "charts".into()));
        for bad in ["charts", "http://charts", "/charts", "127.0.0.1:5055/Bad Name"] {
            let err = format!("{:#}", split_target(bad).unwrap_err());
            assert!(err.starts_with(&format!("`{bad}`")), "{bad}: {err}");
        }
    }
}
