//! `wharf-bench chart`: rendering Helm charts natively (wharf-chart), per render, against
//! `helm template` on the same charts in the same run (issue 14's figures).
//!
//! ```text
//! cargo build --release -p wharf-bench
//! target/release/wharf-bench chart [--reps 200] [--helm PATH]
//! ```
//!
//! Charts: the starter chart `helm create` writes, and a large chart made here — 40
//! templates of its own (Deployments, Services, ConfigMaps, Secrets, Ingresses, HPAs using
//! `include`, `toYaml`, `tpl`, `range`) and three `helm create` subcharts, 70 templates in
//! all. Per chart: the load (`load_dir`), the render's median and p95 over `--reps`
//! renders (values merged, templates parsed and executed, documents split and sorted,
//! printed as `helm template` prints), the resident memory it took (VmHWM growth over
//! the process before the first render), and `helm template`'s wall time (its process
//! included: what a script running helm would pay) for scale.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Chart rendering: wharf-chart against `helm template` (issue 14).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Renders per chart.
    #[arg(long, default_value_t = 200, value_parser = crate::positive)]
    reps: usize,
    /// The helm binary (`helm create` makes the starter chart); default: what
    /// scripts/k8s-tools.sh installs.
    #[arg(long)]
    helm: Option<PathBuf>,
}

fn helm_path(args: &Args) -> PathBuf {
    if let Some(h) = &args.helm {
        return h.clone();
    }
    let out = Command::new("bash").arg("scripts/k8s-tools.sh").output().expect("run scripts/k8s-tools.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let helm = text.lines().find_map(|l| l.strip_prefix("WHARF_TEST_HELM=")).expect("scripts/k8s-tools.sh names helm");
    PathBuf::from(helm)
}

fn helm_create(helm: &Path, dir: &Path, name: &str) -> PathBuf {
    let out =
        Command::new(helm).current_dir(dir).args(["create", name]).env("HOME", dir).output().expect("helm create");
    assert!(out.status.success(), "helm create: {}", String::from_utf8_lossy(&out.stderr));
    dir.join(name)
}

/// The large chart: 40 templates of its own and three starter subcharts.
fn large_chart(helm: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("large");
    std::fs::create_dir_all(root.join("templates")).unwrap();
    std::fs::create_dir_all(root.join("charts")).unwrap();
    std::fs::write(
        root.join("Chart.yaml"),
        "apiVersion: v2\nname: large\nversion: 1.0.0\nappVersion: \"3.1\"\ndependencies:\n  - name: api\n    \
         version: 0.1.0\n  - name: web\n    version: 0.1.0\n  - name: worker\n    version: 0.1.0\n    condition: worker.enabled\n",
    )
    .unwrap();
    let mut values = String::from(
        "global:\n  registry: registry.example.com\nworker:\n  enabled: true\nlabels:\n  team: platform\n  tier: backend\n\
         resources:\n  limits: {cpu: 500m, memory: 256Mi}\n  requests: {cpu: 100m, memory: 128Mi}\nbanner: \"{{ .Release.Name }} on {{ .Release.Namespace }}\"\nservices:\n",
    );
    for i in 0..10 {
        values.push_str(&format!(
            "  svc{i}:\n    image: app{i}\n    tag: \"1.{i}.0\"\n    port: {}\n    replicas: {}\n    env:\n      LOG_LEVEL: info\n      FEATURE_{i}: \"on\"\n",
            8000 + i,
            1 + i % 3
        ));
    }
    std::fs::write(root.join("values.yaml"), values).unwrap();
    std::fs::write(
        root.join("templates/_helpers.tpl"),
        "{{- define \"large.labels\" -}}\napp.kubernetes.io/name: {{ .name }}\napp.kubernetes.io/instance: {{ .root.Release.Name }}\n\
         helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}\n{{ toYaml .root.Values.labels }}\n{{- end }}\n",
    )
    .unwrap();
    let kinds = [
        (
            "deployment",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-{{ $name }}\n  labels:\n    {{- include \"large.labels\" (dict \"name\" $name \"root\" $) | nindent 4 }}\nspec:\n  replicas: {{ $svc.replicas }}\n  template:\n    spec:\n      containers:\n        - name: {{ $name }}\n          image: \"{{ $.Values.global.registry }}/{{ $svc.image }}:{{ $svc.tag }}\"\n          env:\n            {{- range $k, $v := $svc.env }}\n            - name: {{ $k }}\n              value: {{ $v | quote }}\n            {{- end }}\n          resources:\n            {{- toYaml $.Values.resources | nindent 12 }}\n",
        ),
        (
            "service",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-{{ $name }}\n  labels:\n    {{- include \"large.labels\" (dict \"name\" $name \"root\" $) | nindent 4 }}\nspec:\n  ports:\n    - port: {{ $svc.port }}\n      targetPort: {{ $svc.port }}\n",
        ),
        (
            "configmap",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-{{ $name }}\ndata:\n  banner: {{ tpl $.Values.banner $ | quote }}\n  config.yaml: |\n    {{- toYaml $svc | nindent 4 }}\n  checksum: {{ toYaml $svc | sha256sum }}\n",
        ),
        (
            "secret",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-{{ $name }}\ndata:\n  token: {{ printf \"%s-%s\" $name $svc.tag | b64enc }}\n",
        ),
    ];
    for i in 0..10 {
        for (kind, body) in kinds {
            let text =
                format!("{{{{- $name := \"svc{i}\" }}}}\n{{{{- $svc := index .Values.services $name }}}}\n{body}");
            std::fs::write(root.join(format!("templates/{kind}-{i}.yaml")), text).unwrap();
        }
    }
    for sub in ["api", "web", "worker"] {
        helm_create(helm, &root.join("charts"), sub);
    }
    root
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn measure(name: &str, chart_dir: &Path, helm: &Path, reps: usize) {
    let t = Instant::now();
    let chart = wharf_chart::load_dir(chart_dir).expect("chart loads");
    let load = t.elapsed();
    let templates = count_templates(&chart);
    let values = wharf_chart::Values::from_user(&[], &["replicaCount=2".to_string()], &[]).unwrap();
    let opts = wharf_chart::RenderOptions::default();
    let out_opts = wharf_chart::TemplateOutput::default();
    let before = vm_hwm_kib();
    let mut times = Vec::with_capacity(reps);
    let mut bytes = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let rendered = wharf_chart::render(&chart, &values, &opts).expect("chart renders");
        let text = rendered.helm_template(&out_opts).expect("prints");
        times.push(t.elapsed());
        bytes = text.len();
    }
    let grew = vm_hwm_kib().saturating_sub(before);
    times.sort();
    let helm_reps = reps.min(10);
    let mut helm_times = Vec::new();
    for _ in 0..helm_reps {
        let t = Instant::now();
        let out = Command::new(helm)
            .args(["template"])
            .arg(chart_dir)
            .args(["--set", "replicaCount=2"])
            .output()
            .expect("helm template");
        assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
        helm_times.push(t.elapsed());
    }
    helm_times.sort();
    println!(
        "| {name} | {templates} | {bytes} B | {} | {} | {} | {} KiB | {} |",
        ms(load),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.95)),
        grew,
        ms(percentile(&helm_times, 0.5)),
    );
}

fn count_templates(chart: &wharf_chart::Chart) -> usize {
    chart.templates.len() + chart.subcharts.iter().map(count_templates).sum::<usize>()
}

pub fn main(args: Args) {
    let helm = helm_path(&args);
    let dir = tempfile::tempdir().expect("tempdir");
    let starter = helm_create(&helm, dir.path(), "starter");
    let large = large_chart(&helm, dir.path());
    println!(
        "renders per chart: {}, cores: {}",
        args.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| chart | templates | output | load | render median | render p95 | memory (VmHWM growth) | helm template (process) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    measure("starter (`helm create`)", &starter, &helm, args.reps);
    measure("large (40 + 3 subcharts)", &large, &helm, args.reps);
}
