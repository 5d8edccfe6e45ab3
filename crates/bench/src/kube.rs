//! `wharf-bench kube`: the kubernetes executor's per-task overhead against `kubectl run --rm
//! -i` of the same pod on the same Kubernetes test double in the same run, and pods per
//! second with two slots (issue 15's figures).
//!
//! ```text
//! cargo build --release -p wharf-kube-fake -p wharf-bench
//! bash scripts/k8s-tools.sh        # kubectl 1.35 (prints WHARF_TEST_KUBECTL=…)
//! target/release/wharf-bench kube [--tasks 10] [--reps 5] [--pods 20]
//!     [--image wharf-test/busybox:1.35] [--kube-fake target/release/wharf-kube-fake]
//!     [--kubectl /tmp/wharf-test-env/k8s-tools/kubectl/kubectl]
//! ```
//!
//! The fake runs as its own process (`wharf-kube-fake --kubelet docker`) on 127.0.0.1, its
//! kubelet running each pod's container on the local Docker Engine. Per repetition (odd
//! ones in this order, even ones in the reverse order), in the namespace `bench`:
//! 1. **kubectl**: `kubectl run NAME --rm -i --restart=Never --image=IMAGE -- true`,
//!    `--tasks` times in a row: the pod created, waited for, its output read, deleted. The
//!    fake has no `pods/attach`: kubectl says "couldn't attach … falling back to streaming
//!    logs" and reads the log instead (one refused request more than a real cluster's
//!    attach), then waits for the pod to end and deletes it, as it does after an attach;
//! 2. **executor-only**: `KubeExecutor::run` of a `true` script `--tasks` times, no engine:
//!    the env Secret, the pod, its log followed with timestamps, the exit code read, pod
//!    and Secret deleted;
//! 3. **engine**: a pipeline of `--tasks` sequential `script: 'true'` tasks in the image,
//!    run in-process by the engine on that executor (statuses, output files, masking);
//! 4. **floor**: the kubelet's own container work for as many pods, straight on the Engine
//!    API: create (`true`, `Init`, as the kubelet creates it), start, wait (the removal,
//!    which the kubelet does after the pod is gone, is not timed). Both
//!    sides pay it for each pod; a side's **overhead** is its time above it, and the goal
//!    (engine/kubectl ≤ 0.5) is read on the overheads, the raw ratio printed beside it.
//!
//! Then, once: `--pods` tasks of one parallel stage on an engine with two slots (two pods
//! at a time): pods per second. Every step has a deadline; the counts are capped at 200.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use wharf_core::status::Status;
use wharf_engine::{Engine, EngineConfig, Observer, Part};
use wharf_executor::{Executor, LogLine, LogSink, TaskSpec};
use wharf_kube::{Connection, FileAccess, KubeExecutor, KubeExecutorConfig, Policy, ensure_namespace};

const NAMESPACE: &str = "bench";
/// The longest any one step may take (a run of `--tasks` pods, one kubectl call).
const STEP_DEADLINE: Duration = Duration::from_secs(600);

/// The kubernetes executor against `kubectl run --rm -i` on the test double (issue 15).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pods (tasks) one after another per repetition, for the per-task figures.
    #[arg(long, default_value_t = 10, value_parser = at_most_200)]
    tasks: usize,
    /// Repetitions.
    #[arg(long, default_value_t = 5, value_parser = at_most_200)]
    reps: usize,
    /// Tasks of the parallel stage run two at a time, for pods per second.
    #[arg(long, default_value_t = 20, value_parser = at_most_200)]
    pods: usize,
    /// The image the pods run (a local image of the Docker Engine the fake's kubelet uses).
    #[arg(long, default_value = "wharf-test/busybox:1.35")]
    image: String,
    /// The `wharf-kube-fake` binary to run the cluster with.
    #[arg(long, default_value = "target/release/wharf-kube-fake")]
    kube_fake: PathBuf,
    /// The kubectl to compare with (`bash scripts/k8s-tools.sh` installs it here).
    #[arg(long, default_value = "/tmp/wharf-test-env/k8s-tools/kubectl/kubectl")]
    kubectl: PathBuf,
}

/// A count from 1 to 200: every loop here is bounded.
fn at_most_200(text: &str) -> Result<usize, String> {
    match crate::positive(text)? {
        n if n <= 200 => Ok(n),
        n => Err(format!("{n} is more than 200")),
    }
}

struct Discard;

impl LogSink for Discard {
    fn line(&self, _: LogLine) {}
}

impl Observer for Discard {
    fn changed(&self, _: &wharf_core::run::RunRecord, _: Part) {}
    fn log(&self, _: Part, _: &LogLine) {}
}

/// The fake as a process of its own, with its kubelet; stopped with SIGINT when dropped, so
/// that it removes any container it started.
struct Fake {
    child: std::process::Child,
    kubeconfig: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fake(bin: &Path, dir: &Path) -> Fake {
    let kubeconfig = dir.join("kubeconfig");
    let child = Command::new(bin)
        .args(["--port", "0", "--kubelet", "docker", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e} (cargo build --release -p wharf-kube-fake)", bin.display()));
    let fake = Fake { child, kubeconfig };
    let started = Instant::now();
    while !fake.kubeconfig.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "wharf-kube-fake wrote no kubeconfig in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    fake
}

/// `kubectl run --rm -i` of `tasks` pods in a row.
fn kubectl_runs(kubectl: &Path, kubeconfig: &Path, home: &Path, image: &str, rep: usize, tasks: usize) -> Duration {
    let started = Instant::now();
    for i in 0..tasks {
        let name = format!("kubectl-{rep}-{i}");
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", NAMESPACE, "run", &name, "--rm", "-i", "--restart=Never"])
            .arg(format!("--image={image}"))
            .args(["--", "true"])
            .env("HOME", home)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e} (bash scripts/k8s-tools.sh)", kubectl.display()));
        let deadline = Instant::now() + STEP_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("kubectl's status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kubectl run {name} took more than {STEP_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if !status.success() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut err);
            panic!("kubectl run {name}: {status}: {err}");
        }
    }
    started.elapsed()
}

/// The floor: `tasks` containers of `true` in `image` as the kubelet runs a pod's, on the
/// Engine API with no Kubernetes client in between: the time of their create, start and
/// wait (the kubelet removes a pod's container after the pod is gone, off both sides' path).
fn floor(runtime: &tokio::runtime::Runtime, docker: &bollard::Docker, image: &str, tasks: usize) -> Duration {
    use futures_util::StreamExt;
    runtime.block_on(async {
        let mut took = Duration::ZERO;
        for _ in 0..tasks {
            let started = Instant::now();
            let body = bollard::models::ContainerCreateBody {
                image: Some(image.to_owned()),
                cmd: Some(vec!["true".into()]),
                host_config: Some(bollard::models::HostConfig { init: Some(true), ..Default::default() }),
                ..Default::default()
            };
            let id = docker.create_container(None, body).await.expect("create").id;
            docker.start_container(&id, None).await.expect("start");
            let waited: Vec<_> = docker.wait_container(&id, None).collect().await;
            assert!(waited.iter().all(Result::is_ok), "{waited:?}");
            took += started.elapsed();
            docker.remove_container(&id, None).await.expect("remove");
        }
        took
    })
}

fn executor_only(runtime: &tokio::runtime::Runtime, executor: &KubeExecutor, dir: &Path, tasks: usize) -> Duration {
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
                image: None,
                env: vec![],
                output_file: output_file.clone(),
                labels: vec![],
                cluster: None,
            };
            let (_tx, rx) = tokio::sync::watch::channel(None);
            let exit = tokio::time::timeout(STEP_DEADLINE, executor.run(spec, sink.clone(), rx))
                .await
                .expect("a pod within the deadline")
                .expect("the kubernetes executor runs");
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
    let record = runtime
        .block_on(async { tokio::time::timeout(STEP_DEADLINE, engine.run(request, Arc::new(Discard), stop_rx)).await })
        .expect("the run within the deadline");
    let took = started.elapsed();
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    took
}

fn pipeline(name: &str, mode: &str, tasks: usize) -> Arc<wharf_core::model::Pipeline> {
    let mut yaml = format!("name: {name}\nstages:\n  - name: Trivial\n    mode: {mode}\n    tasks:\n");
    for i in 0..tasks {
        yaml.push_str(&format!("      - {{name: t{i}, type: script, script: 'true'}}\n"));
    }
    Arc::new(wharf_pipeline::parse(&yaml).expect("bench pipeline parses"))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn main(args: Args) {
    assert!(
        args.kubectl.exists(),
        "no kubectl at {} (bash scripts/k8s-tools.sh; --kubectl PATH)",
        args.kubectl.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("outputs")).unwrap();
    let fake = start_fake(&args.kube_fake, dir.path());
    let kubeconfig = std::fs::read_to_string(&fake.kubeconfig).expect("the fake's kubeconfig");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let policy = Policy::new(&["127.0.0.1"]).expect("policy");
    let conn = runtime.block_on(async { Connection::from_kubeconfig(&kubeconfig, None, &FileAccess::Refuse, &policy) });
    let conn = conn.expect("the fake's kubeconfig connects");
    runtime.block_on(ensure_namespace(&conn, NAMESPACE, &Default::default())).expect("namespace");
    let config = KubeExecutorConfig {
        namespace: NAMESPACE.into(),
        default_image: Some(args.image.clone()),
        workspace: wharf_kube::Workspace::HostPath,
        pending_limit: wharf_kube::executor::DEFAULT_PENDING_LIMIT,
    };
    let executor = Arc::new(KubeExecutor::new(&conn, config));
    let engine = Engine::new(EngineConfig::default(), executor.clone());
    let sequential = pipeline("bench-kube", "sequential", args.tasks);
    let home = dir.path();
    let docker = bollard::Docker::connect_with_local_defaults().expect("a Docker Engine client");

    // Warm up: the image's layers in the page cache, kubectl's discovery cache, the fake's
    // first connections.
    kubectl_runs(&args.kubectl, &fake.kubeconfig, home, &args.image, 0, 2);
    executor_only(&runtime, &executor, dir.path(), 2);
    floor(&runtime, &docker, &args.image, 2);

    let mut rows = Vec::new();
    for rep in 1..=args.reps {
        // Odd repetitions measure in one order, even ones in the reverse order, so a
        // machine getting busier or quieter during a repetition favours neither side.
        let measure = |which: usize| match which {
            0 => kubectl_runs(&args.kubectl, &fake.kubeconfig, home, &args.image, rep, args.tasks),
            1 => executor_only(&runtime, &executor, dir.path(), args.tasks),
            2 => engine_run(&runtime, &engine, sequential.clone(), dir.path(), rep as u64),
            _ => floor(&runtime, &docker, &args.image, args.tasks),
        };
        let mut row = [Duration::ZERO; 4];
        let order: Vec<usize> = if rep % 2 == 1 { vec![0, 1, 2, 3] } else { vec![3, 2, 1, 0] };
        for which in order {
            row[which] = measure(which);
        }
        rows.push(row);
    }

    // Two slots: `--pods` tasks of one parallel stage, two pods at a time.
    let two = Engine::new(EngineConfig { max_parallel_tasks: 2, ..EngineConfig::default() }, executor.clone());
    let parallel = pipeline("bench-kube-two-slots", "parallel", args.pods);
    let two_slots = engine_run(&runtime, &two, parallel, dir.path(), 1000);

    // Nothing is left in the namespace.
    let (pods, secrets) = runtime.block_on(async {
        let pods = Api::<Pod>::namespaced(conn.client().clone(), NAMESPACE).list(&ListParams::default()).await;
        let secrets = Api::<Secret>::namespaced(conn.client().clone(), NAMESPACE).list(&ListParams::default()).await;
        (pods.expect("list pods").items.len(), secrets.expect("list secrets").items.len())
    });

    println!(
        "pods per repetition: {}, repetitions: {}, image: {}, cores: {}",
        args.tasks,
        args.reps,
        args.image,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| rep | floor ms | kubectl run --rm -i ms | executor-only ms | engine ms | kubectl per pod ms | engine per task \
         ms | engine/kubectl | overhead: kubectl per pod ms | overhead: engine per task ms | overhead: engine/kubectl |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let n = args.tasks as f64;
    let per = |d: &Duration| d.as_secs_f64() * 1000.0 / n;
    // A side's time per pod above the floor's (never below zero: the floor is measured
    // apart, and a quiet moment can favour a side).
    let above = |d: &Duration, floor: &Duration| (per(d) - per(floor)).max(0.0);
    for (i, [kubectl, alone, engine, floor]) in rows.iter().enumerate() {
        let over = above(engine, floor) / above(kubectl, floor);
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {} |",
            i + 1,
            ms(*floor),
            ms(*kubectl),
            ms(*alone),
            ms(*engine),
            per(kubectl),
            per(engine),
            per(engine) / per(kubectl),
            above(kubectl, floor),
            above(engine, floor),
            if over.is_finite() { format!("{over:.2}") } else { "—".into() }
        );
    }
    let ratio = median(rows.iter().map(|[k, _, e, _]| per(e) / per(k)).collect());
    let per_task = median(rows.iter().map(|[_, _, e, _]| per(e)).collect());
    let per_pod = median(rows.iter().map(|[k, _, _, _]| per(k)).collect());
    let per_floor = median(rows.iter().map(|[_, _, _, f]| per(f)).collect());
    let engine_over = median(rows.iter().map(|[_, _, e, f]| above(e, f)).collect());
    let kubectl_over = median(rows.iter().map(|[k, _, _, f]| above(k, f)).collect());
    // The medians' ratio: a repetition whose kubectl column fell to the floor has none.
    let overhead = engine_over / kubectl_over;
    println!();
    println!(
        "median over repetitions: floor {per_floor:.1} ms, engine per task {per_task:.1} ms, kubectl per pod \
         {per_pod:.1} ms, engine/kubectl {ratio:.2}; above the floor: engine {engine_over:.1} ms, kubectl \
         {kubectl_over:.1} ms, engine/kubectl {overhead:.2} (goal ≤ 0.5)"
    );
    println!(
        "two slots: {} pods in {} ms, {:.2} pods per second",
        args.pods,
        ms(two_slots),
        args.pods as f64 / two_slots.as_secs_f64()
    );
    println!("left in namespace {NAMESPACE}: {pods} pods, {secrets} Secrets");
}
