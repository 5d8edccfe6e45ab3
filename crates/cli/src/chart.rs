//! `wharf chart …`: Helm charts without helm. `template` prints exactly what
//! `helm template` prints for the same chart and flags.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ChartArgs {
    #[command(subcommand)]
    pub command: ChartCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChartCommand {
    /// Render a chart's templates and print them, as `helm template` does.
    Template(TemplateArgs),
    /// Package a chart directory into `NAME-VERSION.tgz`, as `helm package` does
    /// (`.helmignore` honoured).
    #[command(disable_version_flag = true)]
    Package(crate::chart_oci::PackageArgs),
    /// Push a packaged chart to a registry's workspace as an OCI Helm artifact
    /// (`helm pull oci://REGISTRY/WORKSPACE/NAME --version V` fetches it).
    Push(crate::chart_oci::PushArgs),
}

#[derive(Debug, Args)]
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

pub fn chart(args: ChartArgs) -> Result<ExitCode> {
    let result = match args.command {
        ChartCommand::Template(t) => template(t),
        ChartCommand::Package(p) => crate::chart_oci::package(p),
        ChartCommand::Push(p) => crate::on_runtime(crate::chart_oci::push(p)),
    };
    // As helm: `Error: …` on standard error and exit 1.
    result.or_else(|err| {
        eprintln!("Error: {err:#}");
        Ok(ExitCode::from(1))
    })
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
    std::io::stdout().write_all(out.as_bytes()).context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
