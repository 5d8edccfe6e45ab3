//! `wharf-bench docker`: the Docker executor against the floor of the docker CLI
//! (issue 4).
//!
//! ```text
//! cargo build --release -p wharf-bench
//! target/release/wharf-bench docker [--tasks 20] [--reps 5] [--image wharf-test/busybox:1.35]
//! ```
//!
//! Per repetition (odd ones in this order, even ones in the reverse order):
//! 1. floor: `docker run --rm --network none <image> sh -e -c true`, `--tasks` times in
//!    a row (the docker CLI: create, attach, start, wait, remove);
//! 2. api-bare: the same containers over the Engine API with nothing else: create
//!    (no mounts, no init, no labels), start, wait, remove — what any API client pays;
//! 3. executor-only: the same scripts through the Docker executor alone, no engine;
//! 4. engine: a pipeline of `--tasks` sequential `script: 'true'` tasks in the image
//!    (`default_image`), run in-process by the engine on the Docker executor: one
//!    container per task with the workspace mounted, logs read back with timestamps,
//!    the container removed, statuses and outputs recorded.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wharf_core::status::Status;
use wharf_docker::{DockerConfig, DockerExecutor};
use wharf_engine::{Engine, EngineConfig, Observer, Part};
use wharf_executor::{Executor, LogLine, LogSink, TaskSpec};

/// The Docker executor against the docker CLI's floor (issue 4; needs dockerd).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Containers (tasks) per repetition.
    #[arg(long, default_value_t = 20, value_parser = crate::positive)]
    tasks: usize,
    /// Repetitions.
    #[arg(long, default_value_t = 5, value_parser = crate::positive)]
    reps: usize,
    /// The image the tasks run in.
    #[arg(long, default_value = "wharf-test/busybox:1.35")]
    image: String,
}

struct Discard;

impl LogSink for Discard {
    fn line(&self, _: LogLine) {}
}

impl Observer for Discard {
    fn changed(&self, _: &wharf_core::run::RunRecord, _: Part) {}
    fn log(&self, _: Part, _: &LogLine) {}
}

fn cli_floor(image: &str, tasks: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..tasks {
        let out = std::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", image, "sh", "-e", "-c", "true"])
            .output()
            .expect("the docker CLI runs");
        assert!(out.status.success(), "docker run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    started.elapsed()
}

fn api_bare(runtime: &tokio::runtime::Runtime, executor: &DockerExecutor, tasks: usize, image: &str) -> Duration {
    let docker = executor.client();
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..tasks {
            engine_api_container(docker, image, "true").await;
        }
        started.elapsed()
    })
}

/// `n` containers of `sh -c 'echo hi'` over the Engine API, `slots` at a time: create
/// (network `none`), start, wait, remove — the floor for container runs on `slots`
/// task slots (`wharf-bench figures`).
pub(crate) async fn api_slots_floor(image: &str, n: usize, slots: usize) -> Duration {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let executor = DockerExecutor::new(DockerConfig::default()).expect("docker client");
    let docker = executor.client().clone();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..slots {
        let (docker, next, image) = (docker.clone(), next.clone(), image.to_owned());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                engine_api_container(&docker, &image, "echo hi").await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("a floor worker");
    }
    started.elapsed()
}

fn executor_only(
    runtime: &tokio::runtime::Runtime,
    executor: &DockerExecutor,
    dir: &Path,
    tasks: usize,
    image: &str,
) -> Duration {
    let output_file = dir.join("outputs").join("executor-only.env");
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
                workdir: dir.join("src"),
                script: "true".into(),
                image: Some(image.to_owned()),
                env: vec![],
                output_file: output_file.clone(),
                labels: vec![],
                cluster: None,
            };
            let (_tx, rx) = tokio::sync::watch::channel(None);
            let exit = executor.run(spec, sink.clone(), rx).await.expect("the docker executor runs");
            assert!(exit.succeeded(), "{exit:?}");
        }
        started.elapsed()
    })
}

fn engine_run(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    pipeline: Arc<wharf_core::model::Pipeline>,
    dir: &Path,
    number: u64,
) -> Duration {
    let request = crate::local_request(pipeline, number, dir.join("src"), dir);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let started = Instant::now();
    let record = runtime.block_on(engine.run(request, Arc::new(Discard), stop_rx));
    let took = started.elapsed();
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    took
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub fn main(args: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("outputs")).unwrap();
    let mut yaml =
        format!("name: bench-docker\ndefault_image: {}\nstages:\n  - name: Trivial\n    tasks:\n", args.image);
    for i in 0..args.tasks {
        yaml.push_str(&format!("      - {{name: t{i}, type: script, script: 'true'}}\n"));
    }
    let pipeline = Arc::new(wharf_pipeline::parse(&yaml).expect("bench pipeline parses"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let config = DockerConfig { network: Some("none".into()), ..DockerConfig::default() };
    assert!(runtime.block_on(wharf_docker::docker_available(None)), "no Docker Engine answers");
    let executor = Arc::new(DockerExecutor::new(config).expect("docker client"));
    let engine = Engine::new(EngineConfig::default(), executor.clone());

    // Warm up: the image's layers in the page cache, the daemon's caches.
    cli_floor(&args.image, 3);
    executor_only(&runtime, &executor, dir.path(), 3, &args.image);
    let mut rows = Vec::new();
    for rep in 1..=args.reps {
        // Odd repetitions measure in one order, even ones in the reverse order, so a
        // machine getting busier or quieter during a repetition favours neither side.
        let measure = |which: usize| match which {
            0 => cli_floor(&args.image, args.tasks),
            1 => api_bare(&runtime, &executor, args.tasks, &args.image),
            2 => executor_only(&runtime, &executor, dir.path(), args.tasks, &args.image),
            _ => engine_run(&runtime, &engine, pipeline.clone(), dir.path(), rep as u64),
        };
        let mut row = [Duration::ZERO; 4];
        let order: Vec<usize> = if rep % 2 == 1 { vec![0, 1, 2, 3] } else { vec![3, 2, 1, 0] };
        for which in order {
            row[which] = measure(which);
        }
        rows.push(row);
    }
    println!(
        "tasks per run: {}, repetitions: {}, image: {}, cores: {}",
        args.tasks,
        args.reps,
        args.image,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| rep | floor: docker run --rm ms | api-bare ms | executor-only ms | engine ms | engine per task ms | \
         api-bare/floor | executor/floor | engine/floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, [floor, bare, alone, engine]) in rows.iter().enumerate() {
        let ratio = |d: &Duration| d.as_secs_f64() / floor.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            i + 1,
            ms(*floor),
            ms(*bare),
            ms(*alone),
            ms(*engine),
            ms(*engine / args.tasks as u32),
            ratio(bare),
            ratio(alone),
            ratio(engine)
        );
    }
    let mut ratios: Vec<f64> = rows.iter().map(|[f, _, _, e]| e.as_secs_f64() / f.as_secs_f64()).collect();
    ratios.sort_by(f64::total_cmp);
    println!();
    println!("median over repetitions: engine/floor {:.2} (goal < 1.2)", ratios[ratios.len() / 2]);
}

/// One container as the Engine API floor runs it: create (`sh -e -c script`, no
/// network), start, wait, remove.
async fn engine_api_container(docker: &bollard::Docker, image: &str, script: &str) {
    use futures_util::StreamExt;
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["sh".into(), "-e".into(), "-c".into(), script.into()]),
        host_config: Some(bollard::models::HostConfig { network_mode: Some("none".into()), ..Default::default() }),
        ..Default::default()
    };
    let id = docker.create_container(None, body).await.expect("create").id;
    docker.start_container(&id, None).await.expect("start");
    let waited: Vec<_> = docker.wait_container(&id, None).collect().await;
    assert!(waited.iter().all(Result::is_ok), "{waited:?}");
    docker.remove_container(&id, None).await.expect("remove");
}
