//! `wharf`: the one binary. `main` parses the command line and wires the crates
//! together; the work happens in `wharf-pipeline` (reading pipelines), `wharf-engine`
//! (running them) and `wharf-executor` (running tasks).
//!
//! Exit codes: 0 succeeded, 1 failed, 2 the pipeline or the command line is invalid,
//! 124 timed out, 130 stopped (Ctrl-C). The client commands (`pipelines`, `runs`, `logs`)
//! add: 1 when the server fails or cannot be reached, 2 when it refuses the request.

mod chart;
mod chart_oci;
mod client;
mod local;
mod migrate;
mod report;
mod serve;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use wharf_core::model::{ExecutorKind, Pipeline};
use wharf_core::run::Cause;
use wharf_core::status::Status;
use wharf_engine::{Engine, EngineConfig, RunRequest, Workspace};
use wharf_executor::host::{HostConfig, HostExecutor};
use wharf_executor::{StopReason, StopRequest};

#[derive(Parser, Debug)]
#[command(name = "wharf", version, about = "Container-native CI/CD in one binary", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Wharf server: REST API, live logs, the run queue.
    Serve(Box<serve::ServeArgs>),
    /// Run a pipeline here and now, without a server.
    Run(RunArgs),
    /// Check pipeline files and report every problem with its line and column.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the starter pipeline: the Source (`source:`, to fill in) and the stages Build, Test, Deploy.
    Init {
        /// The pipeline's name.
        #[arg(default_value = "my-pipeline")]
        name: String,
        /// Where to write it (`-` for standard output).
        #[arg(short, long, default_value = "wharf.yaml")]
        output: PathBuf,
    },
    /// Pipelines on a server: apply, list, show, copy, delete, activate, deactivate, schedule, yaml.
    Pipelines(client::PipelinesArgs),
    /// Runs on a server: start, stop, rerun, retry, list, show (`list` also lists the
    /// runs `wharf run` kept locally).
    Runs(client::RunsArgs),
    /// A run's log on a server, or one task's; `-f` follows it live.
    Logs(client::LogsArgs),
    /// Registries on a server: add, list, add-workspace, remove, repos, tags,
    /// delete-tag, upload (a `docker save` tarball).
    Registries(client::registries::RegistriesArgs),
    /// Kubernetes clusters on a server: add (from a kubeconfig), list, show, check, remove.
    Clusters(client::clusters::ClustersArgs),
    /// Helm releases (template instances) in a cluster: list, show, rollback, upgrade,
    /// uninstall — Wharf's and those `helm install` made.
    Releases(client::releases::ReleasesArgs),
    /// Users on a server: add, list (admins).
    Users(client::tenancy::UsersArgs),
    /// API tokens on a server: create (shown once), list, revoke.
    Tokens(client::tenancy::TokensArgs),
    /// Project secrets on a server: set (value from standard input), list (names), delete.
    Secrets(client::tenancy::SecretsArgs),
    /// Log in with a password (from standard input) and get an API token for WHARF_TOKEN.
    Login(client::tenancy::LoginArgs),
    /// Helm charts without helm: `template` renders a chart as `helm template` does,
    /// `package` writes a `.tgz` as `helm package` does, `push` stores one in a registry.
    Chart(chart::ChartArgs),
    /// Move a server's database from SQLite to PostgreSQL: `--from sqlite://PATH --to
    /// postgres://URL` copies every table into an empty database in one transaction.
    Migrate(migrate::MigrateArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The pipeline file (YAML).
    file: PathBuf,
    /// A run parameter, `KEY=VALUE` (repeatable).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A secret, `NAME=VALUE`, or `NAME` to take the value of the environment variable
    /// NAME (repeatable). Secret values are masked as *** in every log line.
    #[arg(short = 's', long = "secret", value_name = "NAME[=VALUE]")]
    secrets: Vec<String>,
    /// A file of `NAME=VALUE` secret lines.
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// Where run records, logs and checkouts are kept.
    #[arg(long, default_value = ".wharf", env = "WHARF_DATA_DIR")]
    data_dir: PathBuf,
    /// Run in this directory instead of a fresh checkout of the pipeline's source.
    /// Without a `source:` the default is the pipeline file's directory.
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// `host` or `docker`; overrides the pipeline's `executor:`. Default: the
    /// pipeline's, else `host` (a local run starts no containers unless asked to).
    #[arg(long, value_name = "NAME")]
    executor: Option<String>,
    /// The Docker Engine's socket for `--executor docker` [default: unix:///var/run/docker.sock].
    #[arg(long, env = "WHARF_DOCKER_SOCKET", value_name = "SOCKET")]
    docker_socket: Option<String>,
    /// Network mode of task containers for `--executor docker` (bridge, host, none, …).
    #[arg(long, env = "WHARF_DOCKER_NETWORK", value_name = "MODE")]
    docker_network: Option<String>,
    /// Tasks running at once.
    #[arg(long, default_value_t = 4)]
    max_parallel: usize,
    /// Seconds between SIGTERM and SIGKILL when a timeout or Ctrl-C ends a task.
    #[arg(long, default_value_t = 5)]
    grace: u64,
    /// Show statuses only, not task log lines.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Init { name, output } => init(&name, &output),
        Command::Runs(args) => match args.local_listing() {
            Some((pipeline, data_dir, limit, page)) => runs(pipeline, data_dir, limit, page),
            None => on_runtime(client::runs(args)),
        },
        Command::Pipelines(args) => on_runtime(client::pipelines(args)),
        Command::Logs(args) => on_runtime(client::logs(args)),
        Command::Registries(args) => on_runtime(client::registries::registries(args)),
        Command::Clusters(args) => on_runtime(client::clusters::clusters(args)),
        Command::Releases(args) => on_runtime(client::releases::releases(args)),
        Command::Users(args) => on_runtime(client::tenancy::users(args)),
        Command::Tokens(args) => on_runtime(client::tenancy::tokens(args)),
        Command::Secrets(args) => on_runtime(client::tenancy::secrets(args)),
        Command::Login(args) => on_runtime(client::tenancy::login(args)),
        Command::Chart(args) => chart::chart(args),
        Command::Migrate(args) => on_runtime(migrate::migrate(args)),
        Command::Serve(args) => serve::forbid_new_privileges()
            .and_then(|()| on_runtime(async { serve::serve(*args).await.map(|()| ExitCode::SUCCESS) })),
        Command::Run(args) => on_runtime(run(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(client::exit_code(&err))
        }
    }
}

fn on_runtime(work: impl Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(work)
}

/// Reads and validates a pipeline file, printing the problems the way compilers do.
fn load(file: &Path) -> Result<Result<Pipeline, String>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return Ok(Err(format!(
                "error: {}: not UTF-8 text (invalid byte at offset {})\n",
                file.display(),
                e.utf8_error().valid_up_to()
            )));
        }
    };
    Ok(wharf_pipeline::parse(&text).map_err(|diags| diags.render(&file.display().to_string(), &text)))
}

fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut ok = true;
    for file in files {
        let loaded = match load(file) {
            Ok(loaded) => loaded,
            Err(err) => Err(format!("error: {err:#}\n")),
        };
        match loaded {
            Ok(p) => {
                let tasks: usize = p.all_stages().map(|s| s.tasks.len()).sum();
                println!("{}: ok (pipeline `{}`, {} stages, {tasks} tasks)", file.display(), p.name, p.stages.len());
            }
            Err(rendered) => {
                ok = false;
                eprint!("{rendered}");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn init(name: &str, output: &Path) -> Result<ExitCode> {
    let yaml = wharf_pipeline::starter::starter_yaml(name)?;
    if output == Path::new("-") {
        print!("{yaml}");
    } else {
        if output.exists() {
            bail!("{} already exists; choose another file with -o", output.display());
        }
        std::fs::write(output, yaml).with_context(|| format!("cannot write {}", output.display()))?;
        println!("wrote {}; run it with: wharf run {}", output.display(), output.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `wharf runs list` of the runs `wharf run` kept in `data_dir`.
fn runs(pipeline: &str, data_dir: &Path, limit: usize, page: u64) -> Result<ExitCode> {
    let name = wharf_core::names::PipelineName::new(pipeline)?;
    let store = local::LocalStore::open(data_dir)?;
    let records = store.list(&name);
    if records.is_empty() {
        println!("no runs of `{pipeline}` in {}", data_dir.display());
    }
    let now = jiff::Timestamp::now();
    let skip = usize::try_from(page.saturating_sub(1)).unwrap_or(usize::MAX).saturating_mul(limit);
    for r in records.iter().skip(skip).take(limit) {
        let started = r.progress.started_at().map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default();
        let took = r.progress.wall_time(now).map(report::human).unwrap_or_default();
        println!(
            "#{:<5} {:<10} {started}  {took:>8}  {}",
            r.number,
            r.progress.status,
            r.reason.as_deref().unwrap_or("")
        );
    }
    let shown_to = skip.saturating_add(limit);
    if records.len() > shown_to {
        println!("… {} older runs not shown (--limit, --page)", records.len() - shown_to);
    }
    Ok(ExitCode::SUCCESS)
}

fn key_values(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("{what} `{item}` must be KEY=VALUE");
        };
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn secrets(args: &RunArgs) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(file) = &args.secrets_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("{} line {}: expected NAME=VALUE", file.display(), i + 1))?;
            if let Some(why) = wharf_engine::mask::refuse_short_secret(v) {
                bail!("{} line {}: secret {}: {why}", file.display(), i + 1, k.trim());
            }
            out.insert(k.trim().to_owned(), v.to_owned());
        }
    }
    for item in &args.secrets {
        let (name, value) = match item.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => {
                let value = std::env::var(item)
                    .with_context(|| format!("--secret {item}: the environment variable {item} is not set"))?;
                (item.clone(), value)
            }
        };
        if let Some(why) = wharf_engine::mask::refuse_short_secret(&value) {
            bail!("--secret {name}: {why}");
        }
        out.insert(name, value);
    }
    Ok(out)
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let pipeline = match load(&args.file)? {
        Ok(p) => Arc::new(p),
        Err(rendered) => {
            eprint!("{rendered}");
            return Ok(ExitCode::from(2));
        }
    };
    let use_docker = match args.executor.as_deref().or(pipeline.executor.map(ExecutorKind::as_str)) {
        None | Some("host") => false,
        Some("docker") => true,
        Some(other @ "kubernetes") => bail!(
            "the pipeline asks for the {other} executor, which this build of Wharf does not have yet; \
             run with --executor host (or docker) to run its scripts here"
        ),
        Some(other) => bail!("unknown executor `{other}`: expected host or docker"),
    };
    let given = key_values(&args.params, "parameter")?;
    let secrets = secrets(&args)?;
    // A secret taken from the environment reaches only the tasks that list it.
    let base_env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| !secrets.contains_key(k)).collect();
    let host: Arc<dyn wharf_executor::Executor> =
        Arc::new(HostExecutor::new(HostConfig { base_env, ..HostConfig::default() }));
    let executor: Arc<dyn wharf_executor::Executor> = if use_docker {
        let socket = args.docker_socket.clone();
        if !wharf_docker::docker_available(socket.as_deref()).await {
            bail!(
                "--executor docker: no Docker Engine answers at {}",
                socket.as_deref().unwrap_or(wharf_docker::DEFAULT_SOCKET)
            );
        }
        let config = wharf_docker::DockerConfig {
            socket,
            network: args.docker_network.clone(),
            ..wharf_docker::DockerConfig::default()
        };
        let docker = Arc::new(wharf_docker::DockerExecutor::new(config)?);
        // Tasks without an image run on this machine, as they would without docker.
        Arc::new(wharf_executor::routed::ByImage::new(docker, Some(host)))
    } else {
        host
    };
    let grace = Duration::from_secs(args.grace);
    let engine =
        Engine::new(EngineConfig { max_parallel_tasks: args.max_parallel.max(1), timeout_grace: grace }, executor);
    let parameters = match engine.prepare(&pipeline, &given, &secrets) {
        Ok(p) => p,
        Err(err) => {
            eprintln!("error: {} cannot run:\n{err}", args.file.display());
            return Ok(ExitCode::from(2));
        }
    };

    let store = local::LocalStore::open(&args.data_dir)?;
    let new_run = store.new_run(&pipeline.name)?;
    let file_dir = args.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let workspace = match (&args.workdir, &pipeline.source) {
        (Some(dir), _) => Workspace::Existing {
            src: dir.canonicalize().with_context(|| format!("--workdir {}", dir.display()))?,
            run_dir: new_run.dir.clone(),
        },
        (None, Some(_)) => Workspace::Checkout { dir: new_run.dir.clone() },
        (None, None) => Workspace::Existing { src: file_dir.canonicalize()?, run_dir: new_run.dir.clone() },
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let request = RunRequest {
        pipeline: pipeline.clone(),
        number: new_run.number,
        increment: new_run.increment,
        cause: Cause::Local { user },
        parameters,
        secrets,
        workspace,
        commit: None,
        git_ref: None,
        resume: None,
        created_at: None,
        labels: vec![],
        registries: Default::default(),
        // `wharf run` runs on the user's own machine, as the user.
        clusters: Default::default(),
        local_sources: true,
        approvals: None,
        signals: None,
    };

    let (observer, reporter) = report::start(new_run.dir.clone(), report::Options { quiet: args.quiet });
    let (stop_tx, stop_rx) = watch::channel(None);
    let stopper = tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut presses = 0;
        loop {
            let terminated = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            presses += 1;
            let grace = if presses == 1 {
                eprintln!("\nstopping the run (SIGTERM to its tasks; press Ctrl-C again to kill them now)");
                grace
            } else {
                Duration::ZERO
            };
            stop_tx.send_replace(Some(StopRequest { reason: StopReason::Stopped, grace }));
        }
    });
    let record = engine.run(request, Arc::new(observer), stop_rx).await;
    stopper.abort();
    let _ = tokio::task::spawn_blocking(move || reporter.finish()).await;
    store.prune_workspaces(&pipeline.name, new_run.number);

    println!();
    print!("{}", report::table(&record));
    let took = record.progress.wall_time(jiff::Timestamp::now()).map(report::human).unwrap_or_default();
    let status = record.progress.status;
    let reason = record.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    println!("\n{} run #{} {status} in {took}{reason}", report::mark(status), record.number);
    println!("  record and logs: {}", new_run.dir.display());
    Ok(match status {
        Status::Succeeded => ExitCode::SUCCESS,
        Status::TimedOut => ExitCode::from(124),
        Status::Stopped => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_values_need_an_equals_sign() {
        let ok = key_values(&["A=1".into(), "B=x=y".into()], "parameter").unwrap();
        assert_eq!(ok["B"], "x=y");
        assert!(key_values(&["A".into()], "parameter").unwrap_err().to_string().contains("KEY=VALUE"));
    }
}
