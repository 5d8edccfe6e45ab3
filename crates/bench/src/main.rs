//! `wharf-bench`: engine overhead per task against the floor of spawning the same
//! processes bare, measured in the same run on the same machine.
//!
//! ```text
//! cargo build --release -p wharf -p wharf-bench
//! target/release/wharf-bench [--tasks 200] [--reps 5] [--wharf target/release/wharf]
//! ```
//!
//! Three measurements per repetition, in random-free fixed order:
//! 1. floor: `sh -c true` spawned and waited for `--tasks` times in a row;
//! 2. engine: a pipeline of `--tasks` sequential `true` script tasks run in-process by
//!    the engine on the host executor; the per-task figure is the time from one
//!    task's start to the next one's (so the engine's own work between tasks counts);
//! 3. cli: `wharf run --quiet` of the same pipeline as a fresh process, records and
//!    log files included.
//!
//! `wharf-bench --help` lists the modes, `wharf-bench MODE --help` their flags.
//! `wharf-bench server …` measures the server instead (issue 3): see `server.rs`;
//! `wharf-bench ui …` the web UI's first render (issue 7): see `ui.rs`.
//! `wharf-bench webhook …` a webhook delivery to the first task (issue 5): see `webhook.rs`.
//! `wharf-bench docker …` the Docker executor (issue 4): see `docker.rs`.
//! `wharf-bench figures …` the figures of issue 19 in one run: see `figures.rs`.
//! `wharf-bench persist …` what persisting a large run costs (issue 11): see `persist.rs`.
//! `wharf-bench deploy …` a `deploy-yaml` task against kubectl (issue 13): see `deploy.rs`.
//! `wharf-bench kube …` the kubernetes executor against `kubectl run` (issue 15): see `kube.rs`.
//! `wharf-bench replicas …` the reliability suite and runs/s on 1 vs 3 replicas (issue 18):
//! see `replicas.rs` (in the library, which the test suite shares).
//!
//! Also the host executor alone (no engine) as a column, to tell the executor's cost
//! from the engine's. `BENCH_SPLIT=1` prints, per repetition, the median time a task
//! spends `running` and the median gap between one task's end and the next's start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wharf_core::run::{Cause, RunRecord};
use wharf_core::status::Status;
use wharf_engine::{Engine, EngineConfig, Observer, Part, RunRequest, Workspace};
use wharf_executor::LogLine;
use wharf_executor::host::{HostConfig, HostExecutor};

mod chart;
mod deploy;
mod docker;
mod figures;
mod kube;
mod persist;
mod server;
mod ui;
mod webhook;
use wharf_bench::replicas;

/// A local run of `pipeline` as number `number`: the checkout `src` as it is, the run's
/// directory `run<number>` under `dir`, nothing from a server (the engine benchmarks').
pub(crate) fn local_request(
    pipeline: Arc<wharf_core::model::Pipeline>,
    number: u64,
    src: PathBuf,
    dir: &std::path::Path,
) -> RunRequest {
    RunRequest {
        pipeline,
        number,
        increment: number,
        cause: Cause::Local { user: "bench".into() },
        parameters: BTreeMap::new(),
        secrets: BTreeMap::new(),
        workspace: Workspace::Existing { src, run_dir: dir.join(format!("run{number}")) },
        commit: None,
        git_ref: None,
        resume: None,
        created_at: None,
        labels: vec![],
        registries: Default::default(),
        clusters: Default::default(),
        local_sources: true,
        approvals: None,
        signals: None,
    }
}

/// Benchmarks of Wharf against a floor measured in the same run (docs/BENCHMARKS.md).
/// Without a mode: engine overhead per task (issue 2).
#[derive(clap::Parser, Debug)]
#[command(name = "wharf-bench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    engine: Args,
}

/// The modes; each lives in its own module with its `Args` and `main`.
#[derive(clap::Subcommand, Debug)]
enum Mode {
    Server(server::Args),
    Ui(ui::Args),
    Webhook(webhook::Args),
    Docker(docker::Args),
    Persist(persist::Args),
    Figures(figures::Args),
    Deploy(deploy::Args),
    Chart(chart::Args),
    Kube(kube::Args),
    Replicas(replicas::Args),
}

/// Engine overhead per task: floor, host executor alone, engine, `wharf run`.
#[derive(clap::Args, Debug)]
struct Args {
    /// Trivial tasks per run.
    #[arg(long, default_value_t = 200, value_parser = positive)]
    tasks: usize,
    /// Repetitions.
    #[arg(long, default_value_t = 5, value_parser = positive)]
    reps: usize,
    /// The `wharf` binary of the cli column (skipped when missing).
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
}

/// A count of at least one.
fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 1")),
    }
}

/// `tasks` sequential trivial tasks, in stages of at most the per-stage limit
/// (stages run one after the other, so the tasks still run one at a time).
fn pipeline_yaml(tasks: usize) -> String {
    let mut yaml = String::from("name: bench\nstages:\n");
    for i in 0..tasks {
        if i % wharf_pipeline::limits::MAX_TASKS_PER_STAGE == 0 {
            yaml.push_str(&format!("  - name: Trivial{i}\n    tasks:\n"));
        }
        yaml.push_str(&format!("      - {{name: t{i}, type: script, script: 'true'}}\n"));
    }
    yaml
}

/// Records when each task started running, and when each one ended.
#[derive(Default)]
struct StartTimes(Mutex<Vec<Instant>>, Mutex<Vec<Instant>>);

impl Observer for StartTimes {
    fn changed(&self, record: &RunRecord, part: Part) {
        if let Part::Task(s, t) = part {
            match record.stages[s].tasks[t].progress.status {
                Status::Running => self.0.lock().unwrap().push(Instant::now()),
                Status::Succeeded => self.1.lock().unwrap().push(Instant::now()),
                _ => {}
            }
        }
    }
    fn log(&self, _: Part, _: &LogLine) {}
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn floor(tasks: usize) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut each = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let t = Instant::now();
        let status = std::process::Command::new("sh").arg("-c").arg("true").status().expect("spawn sh");
        assert!(status.success());
        each.push(t.elapsed());
    }
    (started.elapsed(), each)
}

fn engine_run(
    runtime: &tokio::runtime::Runtime,
    pipeline: Arc<wharf_core::model::Pipeline>,
    dir: &std::path::Path,
    number: u64,
) -> (Duration, Vec<Duration>) {
    let executor =
        Arc::new(HostExecutor::new(HostConfig { base_env: std::env::vars().collect(), ..HostConfig::default() }));
    let engine = Engine::new(EngineConfig::default(), executor);
    let observer = Arc::new(StartTimes::default());
    let request = crate::local_request(pipeline, number, dir.to_path_buf(), dir);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let started = Instant::now();
    let record = runtime.block_on(engine.run(request, observer.clone(), stop_rx));
    let total = started.elapsed();
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    let starts = observer.0.lock().unwrap().clone();
    let ends = observer.1.lock().unwrap().clone();
    if std::env::var("BENCH_SPLIT").is_ok() {
        let running: Vec<Duration> = starts.iter().zip(&ends).map(|(s, e)| *e - *s).collect();
        let between: Vec<Duration> = ends.iter().zip(starts.iter().skip(1)).map(|(e, s)| *s - *e).collect();
        eprintln!("split: running median {:?}, between tasks median {:?}", median(running), median(between));
    }
    let end = started + total;
    let cycles = starts.windows(2).map(|w| w[1] - w[0]).chain(starts.last().map(|s| end - *s)).collect();
    (total, cycles)
}

/// The host executor alone: the same tasks without the engine around them.
fn executor_run(runtime: &tokio::runtime::Runtime, dir: &std::path::Path, tasks: usize) -> Duration {
    use wharf_executor::{Executor, LogSink, TaskSpec};
    struct Discard;
    impl LogSink for Discard {
        fn line(&self, _: LogLine) {}
    }
    let executor = HostExecutor::new(HostConfig { base_env: std::env::vars().collect(), ..HostConfig::default() });
    let output_file = dir.join("executor-only.env");
    std::fs::write(&output_file, b"").unwrap();
    let sink: Arc<dyn LogSink> = Arc::new(Discard);
    runtime.block_on(async {
        let started = Instant::now();
        for i in 0..tasks {
            let spec = TaskSpec {
                run: "bench#0".into(),
                stage: "Trivial".into(),
                task: format!("t{i}"),
                attempt: 1,
                workdir: dir.to_path_buf(),
                script: "true".into(),
                image: None,
                env: vec![],
                output_file: output_file.clone(),
                labels: vec![],
                cluster: None,
            };
            let (_tx, rx) = tokio::sync::watch::channel(None);
            let exit = executor.run(spec, sink.clone(), rx).await.expect("host executor runs");
            assert!(exit.succeeded());
        }
        started.elapsed()
    })
}

fn cli_run(wharf: &PathBuf, file: &std::path::Path, data: &std::path::Path) -> Duration {
    let started = Instant::now();
    let out = std::process::Command::new(wharf)
        .args(["run", "--quiet", "--data-dir"])
        .arg(data)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (build it: cargo build --release -p wharf)", wharf.display()));
    let took = started.elapsed();
    assert!(out.status.success(), "wharf run failed:\n{}", String::from_utf8_lossy(&out.stdout));
    took
}

fn main() {
    let cli = <Cli as clap::Parser>::parse();
    match cli.mode {
        Some(Mode::Server(args)) => server::main(args),
        Some(Mode::Ui(args)) => ui::main(args),
        Some(Mode::Webhook(args)) => webhook::main(args),
        Some(Mode::Docker(args)) => docker::main(args),
        Some(Mode::Persist(args)) => persist::main(args),
        Some(Mode::Figures(args)) => figures::main(args),
        Some(Mode::Deploy(args)) => deploy::main(args),
        Some(Mode::Chart(args)) => chart::main(args),
        Some(Mode::Kube(args)) => kube::main(args),
        Some(Mode::Replicas(args)) => replicas::main(args),
        None => engine(cli.engine),
    }
}

fn engine(args: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = pipeline_yaml(args.tasks);
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let pipeline = Arc::new(wharf_pipeline::parse(&yaml).expect("bench pipeline parses"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let cli_available = args.wharf.exists();

    // Warm up caches (sh, the page cache) before measuring.
    floor(20);
    let mut rows = Vec::new();
    for rep in 1..=args.reps {
        let (floor_total, floor_each) = floor(args.tasks);
        let executor_total = executor_run(&runtime, dir.path(), args.tasks);
        let (engine_total, engine_each) = engine_run(&runtime, pipeline.clone(), dir.path(), rep as u64);
        let cli_total = cli_available.then(|| cli_run(&args.wharf, &file, &dir.path().join("data")));
        rows.push((floor_total, median(floor_each), executor_total, engine_total, median(engine_each), cli_total));
    }

    let n = args.tasks as u32;
    println!(
        "tasks per run: {}, repetitions: {}, cores: {}",
        args.tasks,
        args.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| rep | floor total ms | floor median/task ms | executor-only total ms | engine total ms | engine median/task ms | overhead median/task ms | engine/floor | cli total ms | cli/floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, (ft, fm, xt, et, em, ct)) in rows.iter().enumerate() {
        let overhead = em.as_secs_f64() - fm.as_secs_f64();
        let cli = ct
            .map(|c| (ms(c), format!("{:.2}", c.as_secs_f64() / ft.as_secs_f64())))
            .unwrap_or(("-".into(), "-".into()));
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.2} | {} | {} |",
            i + 1,
            ms(*ft),
            ms(*fm),
            ms(*xt),
            ms(*et),
            ms(*em),
            overhead * 1000.0,
            et.as_secs_f64() / ft.as_secs_f64(),
            cli.0,
            cli.1
        );
    }
    let overheads: Vec<f64> = rows.iter().map(|r| r.4.as_secs_f64() - r.1.as_secs_f64()).collect();
    let mut sorted = overheads.clone();
    sorted.sort_by(f64::total_cmp);
    let ratio: Vec<f64> = rows.iter().map(|r| r.3.as_secs_f64() / r.0.as_secs_f64()).collect();
    let mut ratio_sorted = ratio.clone();
    ratio_sorted.sort_by(f64::total_cmp);
    println!();
    println!(
        "median over repetitions: overhead per task {:.3} ms (goal < 2 ms), engine/floor {:.2} (goal < 1.5), per-task floor {:.3} ms over {n} tasks",
        sorted[sorted.len() / 2] * 1000.0,
        ratio_sorted[ratio_sorted.len() / 2],
        rows.iter().map(|r| r.1.as_secs_f64()).sum::<f64>() / rows.len() as f64 * 1000.0
    );
    if !cli_available {
        println!(
            "(cli column skipped: {} not found; build it with cargo build --release -p wharf)",
            args.wharf.display()
        );
    }
}
