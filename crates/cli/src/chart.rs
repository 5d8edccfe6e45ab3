//! `wharf chart …`: Helm charts without a server and without helm. `template` prints
//! exactly what `helm template` prints for the same chart and flags; `package` writes the
//! `.tgz` `helm package` writes; `push` stores one in a registry as `helm push` does (an
//! OCI Helm artifact, tagged with the chart's version), straight to the registry.

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use wharf_executor::build::RegistryLogin;
use wharf_executor::chart::{ChartUpload, MAX_CHART_ARCHIVE_BYTES};

#[derive(clap::Args, Debug)]
pub struct ChartArgs {
    #[command(subcommand)]
    command: ChartCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ChartCommand {
    /// Render a chart's templates and print them, as `helm template` does.
    Template(TemplateArgs),
    /// Package a chart directory into `NAME-VERSION.tgz`, as `helm package` does
    /// (`.helmignore` honoured).
    #[command(disable_version_flag = true)]
    Package {
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
    },
    /// Push a packaged chart to a registry's workspace as an OCI Helm artifact
    /// (`helm pull oci://REGISTRY/WORKSPACE/NAME --version V` fetches it).
    Push {
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
    },
}

pub async fn chart(args: ChartArgs) -> Result<ExitCode> {
    match args.command {
        ChartCommand::Template(t) => template(t),
        ChartCommand::Package { dir, version, app_version, destination } => {
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
        ChartCommand::Push { archive, target, username, password, password_stdin, insecure } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_to_string(&mut line).context("reading the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                password
            };
            let (url, workspace) = match target.trim_end_matches('/').rsplit_once('/') {
                Some((url, workspace)) if !url.is_empty() && !url.ends_with(':') && !url.ends_with('/') => {
                    (url.to_owned(), workspace.to_owned())
                }
                _ => bail!(
                    "`{target}`: give the registry and the workspace, as REGISTRY/WORKSPACE (127.0.0.1:5055/charts)"
                ),
            };
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

#[derive(Debug, clap::Args)]
pub struct TemplateArgs {
    /// The chart: a directory or a `.tgz`.
    pub chart: PathBuf,
    /// Set values (`a.b=c`, `list={x,y}`, `a[0]=x`); repeatable, applied in order.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set values, always as strings.
    #[arg(long = "set-string", value_name = "KEY=VALUE")]
    pub set_string: Vec<String>,
    /// Values files, merged in order (later ones win).
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// `.Release.Name`.
    #[arg(long = "release-name", default_value = "release-name")]
    pub release_name: String,
    /// `.Release.Namespace`.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// `.Capabilities.KubeVersion`.
    #[arg(long = "kube-version", default_value = "v1.35.0")]
    pub kube_version: String,
    /// Extra `.Capabilities.APIVersions`; repeatable.
    #[arg(short = 'a', long = "api-versions", value_name = "GROUP/VERSION")]
    pub api_versions: Vec<String>,
    /// Print the chart's `crds/` first.
    #[arg(long = "include-crds")]
    pub include_crds: bool,
    /// Leave out `test` hooks.
    #[arg(long = "skip-tests")]
    pub skip_tests: bool,
    /// Only the output of these templates (`templates/x.yaml`, globs allowed); repeatable.
    #[arg(short = 's', long = "show-only", value_name = "PATH")]
    pub show_only: Vec<String>,
}

fn template(a: TemplateArgs) -> Result<ExitCode> {
    let chart = if a.chart.is_dir() {
        wharf_chart::load_dir(&a.chart)?
    } else {
        let bytes = std::fs::read(&a.chart).with_context(|| format!("reading {}", a.chart.display()))?;
        wharf_chart::load_archive(&bytes)?
    };
    let mut files = Vec::new();
    for f in &a.values {
        let meta = std::fs::metadata(f).with_context(|| format!("reading {}", f.display()))?;
        if meta.len() > wharf_chart::MAX_FILE_BYTES as u64 {
            anyhow::bail!(
                "{}: larger than the {} bytes a values file may have",
                f.display(),
                wharf_chart::MAX_FILE_BYTES
            );
        }
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        files.push((f.display().to_string(), text));
    }
    let values = wharf_chart::Values::from_user(&files, &a.set, &a.set_string)?;
    let opts = wharf_chart::RenderOptions {
        release_name: a.release_name,
        namespace: a.namespace,
        kube_version: a.kube_version,
        api_versions: a.api_versions,
        ..Default::default()
    };
    let rendered = wharf_chart::render(&chart, &values, &opts)?;
    let out = rendered.helm_template(&wharf_chart::TemplateOutput {
        include_crds: a.include_crds,
        show_only: a.show_only,
        skip_tests: a.skip_tests,
    })?;
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes()).context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
