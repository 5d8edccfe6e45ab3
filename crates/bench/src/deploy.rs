//! `wharf-bench deploy`: a `deploy-yaml` task's cluster side (wharf_kube::deploy) against
//! the kubectl a user would run instead, on the same Kubernetes API test double in the same
//! run (issue 13's figures).
//!
//! ```text
//! cargo build --release -p wharf-kube-fake -p wharf-bench
//! target/release/wharf-bench deploy [--reps 5] [--kube-fake target/release/wharf-kube-fake]
//!     [--kubectl /usr/bin/kubectl]
//! ```
//!
//! The fake runs as its own process (`wharf-kube-fake`, rollout delay 0) on 127.0.0.1.
//! Per repetition, each in a namespace of its own made beforehand (not timed):
//! 1. **2048**: the seed's 2048 manifests (Deployment + Service) deployed by
//!    `KubeDeployer::deploy` (its connection, discovery, dry run and apply of each object,
//!    the rollout watch) against `kubectl apply --server-side -f FILE` followed by
//!    `kubectl rollout status deployment/jack-2048` (two processes, as a script runs them).
//!    The goal: Wharf ≤ 0.5× kubectl.
//! 2. **Objects**: files of 50, 100 and 200 ConfigMaps deployed by Wharf (linear? the cost
//!    per object), and the 200 by `kubectl apply --server-side` once for scale.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_executor::deploy::{ClusterLogin, DeployExit, DeploySpec, Deployer};
use wharf_executor::{LogLine, LogSink};
use wharf_kube::deploy::KubeDeployer;
use wharf_kube::{Connection, FileAccess, Policy, ensure_namespace};

const GAME: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: jack-2048\nspec:\n  selector:\n    \
matchLabels:\n      application: jack-2048\n  strategy:\n    rollingUpdate:\n      maxSurge: 3\n      \
maxUnavailable: 70%\n    type: RollingUpdate\n  template:\n    metadata:\n      labels:\n        application: \
jack-2048\n    spec:\n      containers:\n      - image: hub.ecns.io/devops/jack-2048:alpha-1\n        \
imagePullPolicy: IfNotPresent\n        name: jack-2048\n        ports:\n        - containerPort: 80\n          \
protocol: TCP\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-2048\n  labels:\n    application: \
jack-2048\nspec:\n  ports:\n  - name: port-2048\n    port: 80\n    protocol: TCP\n    targetPort: 80\n  \
selector:\n    application: jack-2048\n  type: ClusterIP\n";

/// A `deploy-yaml` task's cluster side against kubectl, on the Kubernetes test double (issue 13).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 5, value_parser = crate::positive)]
    reps: usize,
    /// The `wharf-kube-fake` binary to run the cluster with.
    #[arg(long, default_value = "target/release/wharf-kube-fake")]
    kube_fake: PathBuf,
    /// The kubectl to compare with.
    #[arg(long, default_value = "/usr/bin/kubectl")]
    kubectl: PathBuf,
}

struct Quiet;

impl LogSink for Quiet {
    fn line(&self, _: LogLine) {}
}

/// The fake as a process of its own; killed when dropped.
struct Fake {
    child: std::process::Child,
    kubeconfig: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fake(bin: &Path, dir: &Path) -> Fake {
    let kubeconfig = dir.join("kubeconfig");
    let child = Command::new(bin)
        .args(["--port", "0", "--rollout-delay-ms", "0", "--kubeconfig"])
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

fn kubectl(bin: &Path, kubeconfig: &Path, home: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn spec(kubeconfig: &str, namespace: &str, manifests: &str) -> DeploySpec {
    DeploySpec {
        run: "bench#1".into(),
        stage: "Deploy".into(),
        task: "deploy".into(),
        file: "bench.yaml".into(),
        manifests: manifests.into(),
        cluster: ClusterLogin { name: "kube-fake".into(), kubeconfig: kubeconfig.into(), context: None },
        namespace: namespace.into(),
    }
}

async fn wharf_deploy(
    deployer: &KubeDeployer,
    kubeconfig: &str,
    namespace: &str,
    manifests: &str,
) -> (Duration, usize) {
    let (_tx, stop) = tokio::sync::watch::channel(None);
    let started = Instant::now();
    let exit = deployer.deploy(spec(kubeconfig, namespace, manifests), Arc::new(Quiet), stop).await;
    let took = started.elapsed();
    match exit {
        Ok(DeployExit::Deployed(applied)) => (took, applied.len()),
        other => panic!("deploy to {namespace}: {other:?}"),
    }
}

fn config_maps(n: usize) -> String {
    (0..n)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:03}\ndata:\n  index: \"{i}\"\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn main(args: Args) {
    assert!(args.kubectl.exists(), "no kubectl at {} (--kubectl PATH)", args.kubectl.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = start_fake(&args.kube_fake, dir.path());
    let kubeconfig = std::fs::read_to_string(&fake.kubeconfig).expect("the fake's kubeconfig");
    let game = dir.path().join("2048_env.yaml");
    std::fs::write(&game, GAME).unwrap();
    let big = dir.path().join("200.yaml");
    std::fs::write(&big, config_maps(200)).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let policy = Policy::new(&["127.0.0.1"]).expect("policy");
    let deployer = KubeDeployer::new(policy.clone());
    let conn = runtime.block_on(async { Connection::from_kubeconfig(&kubeconfig, None, &FileAccess::Refuse, &policy) });
    let conn = conn.expect("the fake's kubeconfig connects");
    let namespace = |name: &str| {
        runtime.block_on(ensure_namespace(&conn, name, &Default::default())).expect("namespace");
    };
    let home = dir.path();

    // Warm-up (page cache, kubectl's discovery cache, the fake's first connections).
    namespace("warm");
    runtime.block_on(wharf_deploy(&deployer, &kubeconfig, "warm", GAME));
    kubectl(
        &args.kubectl,
        &fake.kubeconfig,
        home,
        &["apply", "--server-side", "-n", "warm", "-f", game.to_str().unwrap()],
    );

    println!("2048 manifests (Deployment + Service), rollout delay 0, {} repetitions", args.reps);
    println!();
    println!("| rep | wharf deploy ms | kubectl apply --server-side + rollout status ms | wharf/kubectl |");
    println!("|---|---|---|---|");
    let (mut wharf_times, mut kubectl_times) = (Vec::new(), Vec::new());
    for rep in 1..=args.reps {
        let (w_ns, k_ns) = (format!("w-{rep}"), format!("k-{rep}"));
        namespace(&w_ns);
        namespace(&k_ns);
        let (w, n) = runtime.block_on(wharf_deploy(&deployer, &kubeconfig, &w_ns, GAME));
        assert_eq!(n, 2);
        let started = Instant::now();
        kubectl(
            &args.kubectl,
            &fake.kubeconfig,
            home,
            &["apply", "--server-side", "-n", &k_ns, "-f", game.to_str().unwrap()],
        );
        kubectl(&args.kubectl, &fake.kubeconfig, home, &["rollout", "status", "-n", &k_ns, "deployment/jack-2048"]);
        let k = started.elapsed();
        println!("| {rep} | {} | {} | {:.2} |", ms(w), ms(k), w.as_secs_f64() / k.as_secs_f64());
        wharf_times.push(w);
        kubectl_times.push(k);
    }
    let (w, k) = (median(wharf_times), median(kubectl_times));
    println!();
    println!(
        "median: wharf {} ms, kubectl {} ms, wharf/kubectl {:.2} (goal ≤ 0.5)",
        ms(w),
        ms(k),
        w.as_secs_f64() / k.as_secs_f64()
    );

    println!();
    println!("ConfigMaps in one file (median of {} repetitions each)", args.reps);
    println!();
    println!("| objects | wharf deploy ms | per object ms |");
    println!("|---|---|---|");
    for n in [50, 100, 200] {
        let text = config_maps(n);
        let mut times = Vec::new();
        for rep in 1..=args.reps {
            let ns = format!("cm{n}-{rep}");
            namespace(&ns);
            let (took, applied) = runtime.block_on(wharf_deploy(&deployer, &kubeconfig, &ns, &text));
            assert_eq!(applied, n);
            times.push(took);
        }
        let m = median(times);
        println!("| {n} | {} | {:.2} |", ms(m), m.as_secs_f64() * 1000.0 / n as f64);
    }
    namespace("k200");
    let started = Instant::now();
    kubectl(
        &args.kubectl,
        &fake.kubeconfig,
        home,
        &["apply", "--server-side", "-n", "k200", "-f", big.to_str().unwrap()],
    );
    let k = started.elapsed();
    println!();
    println!(
        "kubectl apply --server-side of the 200: {} ms ({:.2} ms per object)",
        ms(k),
        k.as_secs_f64() * 1000.0 / 200.0
    );
}
