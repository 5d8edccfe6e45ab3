//! Oracle tests: the same chart and the same flags give the same bytes as the real
//! `helm template` (helm v4, installed by scripts/k8s-tools.sh). Charts: the starter
//! chart `helm create` writes (made at test time) and the charts in tests/charts/.

use std::path::{Path, PathBuf};
use std::process::Command;

use wharf_chart::{HookDeletePolicy, HookEvent, RenderOptions, TemplateOutput, Values};

fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts")
}

/// The flags both sides understand, in `wharf chart template`'s words.
#[derive(Default, Clone)]
struct Flags {
    set: Vec<&'static str>,
    set_string: Vec<&'static str>,
    files: Vec<PathBuf>,
    release: Option<&'static str>,
    namespace: Option<&'static str>,
    kube_version: Option<&'static str>,
    api_versions: Vec<&'static str>,
    include_crds: bool,
    skip_tests: bool,
    show_only: Vec<&'static str>,
}

/// `helm template` on `chart`: Ok(stdout) or Err(the error line without `Error: `).
fn helm(helm: &Path, chart: &Path, f: &Flags) -> Result<String, String> {
    let mut cmd = Command::new(helm);
    cmd.arg("template");
    if let Some(r) = f.release {
        cmd.arg(r);
    }
    cmd.arg(chart);
    for s in &f.set {
        cmd.args(["--set", s]);
    }
    for s in &f.set_string {
        cmd.args(["--set-string", s]);
    }
    for file in &f.files {
        cmd.arg("-f").arg(file);
    }
    if let Some(n) = f.namespace {
        cmd.args(["--namespace", n]);
    }
    if let Some(k) = f.kube_version {
        cmd.args(["--kube-version", k]);
    }
    for a in &f.api_versions {
        cmd.args(["--api-versions", a]);
    }
    if f.include_crds {
        cmd.arg("--include-crds");
    }
    if f.skip_tests {
        cmd.arg("--skip-tests");
    }
    for s in &f.show_only {
        cmd.args(["--show-only", s]);
    }
    let out = cmd.env("HOME", std::env::temp_dir()).output().expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find_map(|l| l.strip_prefix("Error: ")).unwrap_or(&err);
        Err(line.to_string())
    }
}

/// helm's whole error message (standard error without `Error: ` and its advice).
fn helm_error(helm_bin: &Path, chart: &Path, f: &Flags) -> String {
    helm(helm_bin, chart, f).expect_err("helm fails");
    let mut cmd = Command::new(helm_bin);
    cmd.arg("template").arg(chart);
    for s in &f.set {
        cmd.args(["--set", s]);
    }
    let out = cmd.env("HOME", std::env::temp_dir()).output().expect("run helm");
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.trim_end().trim_end_matches("Use --debug flag to render out invalid YAML").trim_end();
    err.strip_prefix("Error: ").unwrap_or(err).to_string()
}

/// The same through wharf-chart.
fn wharf(chart: &Path, f: &Flags) -> Result<String, String> {
    let chart = if chart.is_dir() {
        wharf_chart::load_dir(chart).map_err(|e| e.to_string())?
    } else {
        wharf_chart::load_archive(&std::fs::read(chart).unwrap()).map_err(|e| e.to_string())?
    };
    let files: Vec<(String, String)> =
        f.files.iter().map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap())).collect();
    let set: Vec<String> = f.set.iter().map(|s| s.to_string()).collect();
    let set_string: Vec<String> = f.set_string.iter().map(|s| s.to_string()).collect();
    let values = Values::from_user(&files, &set, &set_string).map_err(|e| e.to_string())?;
    let mut opts = RenderOptions::default();
    if let Some(r) = f.release {
        opts.release_name = r.into();
    }
    if let Some(n) = f.namespace {
        opts.namespace = n.into();
    }
    if let Some(k) = f.kube_version {
        opts.kube_version = k.into();
    }
    opts.api_versions = f.api_versions.iter().map(|s| s.to_string()).collect();
    let rendered = wharf_chart::render(&chart, &values, &opts).map_err(|e| e.to_string())?;
    rendered
        .helm_template(&TemplateOutput {
            include_crds: f.include_crds,
            skip_tests: f.skip_tests,
            show_only: f.show_only.iter().map(|s| s.to_string()).collect(),
        })
        .map_err(|e| e.to_string())
}

fn same(helm_bin: &Path, chart: &Path, f: &Flags) {
    let want = helm(helm_bin, chart, f).unwrap_or_else(|e| panic!("helm failed on {}: {e}", chart.display()));
    let got = wharf(chart, f).unwrap_or_else(|e| panic!("wharf-chart failed on {}: {e}", chart.display()));
    if want != got {
        let line = want.lines().zip(got.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{}: output differs from helm template at line {}\n--- helm:\n{}\n--- wharf:\n{}",
            chart.display(),
            line + 1,
            want.lines().skip(line.saturating_sub(3)).take(8).collect::<Vec<_>>().join("\n"),
            got.lines().skip(line.saturating_sub(3)).take(8).collect::<Vec<_>>().join("\n"),
        );
    }
}

fn starter(helm_bin: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(helm_bin)
        .current_dir(dir.path())
        .args(["create", "starter"])
        .env("HOME", dir.path())
        .output()
        .expect("helm create");
    assert!(out.status.success(), "helm create: {}", String::from_utf8_lossy(&out.stderr));
    let path = dir.path().join("starter");
    (dir, path)
}

#[test]
fn the_starter_chart_renders_as_helm_template_with_every_kind_of_flag() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let (_dir, chart) = starter(&tools.helm);
    let overrides = charts().join("starter-overrides.yaml");
    let cases = [
        Flags::default(),
        Flags { release: Some("shop"), namespace: Some("prod"), ..Default::default() },
        Flags {
            set: vec!["replicaCount=3", "image.tag=1.27.1", "service.port=8080", "ingress.enabled=true"],
            ..Default::default()
        },
        Flags { files: vec![overrides.clone()], ..Default::default() },
        Flags { files: vec![overrides], set: vec!["autoscaling.enabled=false"], ..Default::default() },
        Flags {
            set: vec![
                "podAnnotations.a\\.b/c=x\\,y",
                "tolerations[0].key=k,tolerations[0].operator=Exists",
                "imagePullSecrets={one,two}",
                "serviceAccount.create=false",
                "podLabels.big=1000000",
            ],
            set_string: vec!["podLabels.num=0123"],
            ..Default::default()
        },
        Flags { set: vec!["autoscaling.enabled=true"], kube_version: Some("1.24.0"), ..Default::default() },
        Flags { skip_tests: true, ..Default::default() },
        Flags { show_only: vec!["templates/service.yaml", "templates/tests/*"], ..Default::default() },
    ];
    for f in &cases {
        same(&tools.helm, &chart, f);
    }
}

#[test]
fn subcharts_globals_conditions_tags_library_crds_and_hooks_render_as_helm_template() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let chart = charts().join("umbrella");
    let cases = [
        Flags::default(),
        Flags { files: vec![charts().join("umbrella-overrides.yaml")], ..Default::default() },
        Flags { files: vec![charts().join("yaml-edge-values.yaml")], ..Default::default() },
        Flags { set: vec!["sub.enabled=false", "tags.extras=true", "off.enabled=true"], ..Default::default() },
        Flags { set: vec!["global.off=true", "off.enabled=null"], ..Default::default() },
        Flags {
            release: Some("rel"),
            namespace: Some("prod"),
            include_crds: true,
            set: vec!["big=1000000"],
            set_string: vec!["replicas=7"],
            ..Default::default()
        },
        Flags {
            show_only: vec!["templates/configmap.yaml", "charts/sub/templates/service.yaml"],
            ..Default::default()
        },
        Flags { kube_version: Some("1.25.3"), api_versions: vec!["example.com/v1"], ..Default::default() },
        Flags { set: vec!["image.tag=null", "extraEnv[0].name=X", "extraEnv[0].value=y"], ..Default::default() },
    ];
    for f in &cases {
        same(&tools.helm, &chart, f);
    }
}

#[test]
fn import_values_render_as_helm_template() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let chart = charts().join("imports");
    same(&tools.helm, &chart, &Flags::default());
    same(
        &tools.helm,
        &chart,
        &Flags { set: vec!["kid.deep.settings.only=user", "fromkid.shared=user"], ..Default::default() },
    );
}

#[test]
fn a_packaged_chart_renders_as_helm_template_renders_the_archive() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&tools.helm)
        .args(["package", "--destination"])
        .arg(dir.path())
        .arg(charts().join("umbrella"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "helm package: {}", String::from_utf8_lossy(&out.stderr));
    let tgz = dir.path().join("umbrella-1.2.3.tgz");
    same(&tools.helm, &tgz, &Flags { include_crds: true, ..Default::default() });
}

#[test]
fn a_subchart_packaged_in_charts_renders_as_helm_template() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("umbrella");
    copy_dir(&charts().join("umbrella"), &copy);
    // charts/tagged/ becomes charts/tagged-0.1.0.tgz, as `helm dependency build` leaves it.
    let out = Command::new(&tools.helm)
        .args(["package", "--destination"])
        .arg(copy.join("charts"))
        .arg(copy.join("charts/tagged"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "helm package: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(copy.join("charts/tagged")).unwrap();
    same(&tools.helm, &copy, &Flags { set: vec!["tags.extras=true"], ..Default::default() });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn template_errors_name_the_file_and_line_as_helm_does() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("errs");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: errs\nversion: 0.1.0\n").unwrap();
    let cases = [
        "a: {{ required \"x is required\" .Values.x }}",
        "a: {{ .Values.x | required \"piped required\" }}",
        "a: {{ fail \"boom\" }}",
        "{{ foo 1 }}",
        "a: {{ .Values.a.b.c }}",
        "a: {{ $x := dict }}{{ $x.a.b }}",
        "a: {{ if $.Values.a.b }}x{{ end }}",
        "a: {{ .Values.s.b }}",
        "{{ define \"r\" }}{{ include \"r\" . }}{{ end }}a: {{ include \"r\" . }}",
    ];
    for template in cases {
        std::fs::write(chart.join("templates/a.yaml"), format!("# line 1\n{template}\n")).unwrap();
        let flags = Flags { set: vec!["s=text"], ..Default::default() };
        let want = helm_error(&tools.helm, &chart, &flags);
        let got = wharf(&chart, &flags).expect_err("wharf-chart fails");
        let want_last = want.rsplit("error calling include: ").next().unwrap();
        assert_eq!(got, want_last, "for {template}");
    }
}

#[test]
fn a_render_carries_what_a_release_record_needs() {
    let chart = wharf_chart::load_dir(&charts().join("umbrella")).unwrap();
    let values = Values::from_user(&[], &["replicas=4".into()], &[]).unwrap();
    let r = wharf_chart::render(&chart, &values, &RenderOptions::default()).unwrap();

    // Hooks are set apart with their events, weights and delete policies.
    let names: Vec<_> = r.hooks.iter().map(|h| (h.manifest.kind.as_str(), h.manifest.name.as_str())).collect();
    assert_eq!(names, [("ConfigMap", "release-name-umbrella-post"), ("Job", "release-name-umbrella-migrate")]);
    let job = &r.hooks[1];
    assert_eq!(job.events, [HookEvent::PreInstall, HookEvent::PreUpgrade]);
    assert_eq!(job.weight, -5);
    assert_eq!(job.delete_policies, [HookDeletePolicy::BeforeHookCreation, HookDeletePolicy::HookSucceeded]);
    assert!(r.manifests.iter().all(|m| m.kind != "Job"), "hooks are not in the manifest");

    // Install order: Namespace first, unknown kinds last by name.
    let kinds: Vec<_> = r.manifests.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"Namespace"));
    assert_eq!(&kinds[kinds.len() - 2..], ["Apple", "Zebra"]);

    // The manifest text is Helm's, the notes are the top chart's, CRDs are kept apart.
    assert!(
        r.manifest().starts_with("---\n# Source: umbrella/templates/namespace.yaml\napiVersion: v1\nkind: Namespace\n")
    );
    assert_eq!(r.notes.as_deref(), Some("Installed release-name (umbrella 1.2.3).\n"));
    assert_eq!(r.crds.len(), 1);
    assert_eq!(r.crds[0].path, "umbrella/crds/crontab.yaml");
    assert_eq!(r.config.to_json(), serde_json::json!({"replicas": 4}));
    assert_eq!(r.values.get("replicas"), Some(&wharf_chart::Value::Int(4)));
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    let no_chart = tempfile::tempdir().unwrap();
    let err = wharf_chart::load_dir(no_chart.path()).unwrap_err().to_string();
    assert!(err.contains("Chart.yaml"), "{err}");
    assert!(wharf_chart::load_archive(b"not a gzip").unwrap_err().to_string().starts_with("chart archive:"));
    let err = Values::from_user(&[], &["a.b".into()], &[]).unwrap_err().to_string();
    assert_eq!(err, "failed parsing --set data: key \"b\" has no value");
    let err = Values::from_user(&[("v.yaml".into(), "a: [".into())], &[], &[]).unwrap_err().to_string();
    assert!(err.starts_with("v.yaml: line 1"), "{err}");

    // A library chart is not rendered on its own.
    let lib = wharf_chart::load_dir(&charts().join("umbrella/charts/lib")).unwrap();
    let err = wharf_chart::render(&lib, &Values::default(), &RenderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("library charts are not installable"), "{err}");
}

fn one_template_chart(dir: &Path, template: &str) -> wharf_chart::Chart {
    let chart = dir.join("limits");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: limits\nversion: 0.1.0\n").unwrap();
    std::fs::write(chart.join("templates/a.yaml"), template).unwrap();
    wharf_chart::load_dir(&chart).unwrap()
}

#[test]
fn a_chart_cannot_make_a_render_grow_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let opts = RenderOptions::default();
    // 1 GB if it ran to the end: stopped once the render has written its budget.
    let huge = one_template_chart(dir.path(), "{{ range until 1000000 }}{{ repeat 1000 \"x\" }}{{ end }}\n");
    let err = wharf_chart::render(&huge, &Values::default(), &opts).unwrap_err();
    assert_eq!(err, wharf_chart::RenderError::TooLarge);

    // Runaway recursion ends with Helm's message, even when the caller's thread has a
    // small stack (a tokio worker's 2 MiB).
    let deep = one_template_chart(
        &dir.path().join("deep"),
        "{{ define \"r\" }}{{ include \"r\" . }}{{ end }}a: {{ include \"r\" . }}\n",
    );
    let err = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || wharf_chart::render(&deep, &Values::default(), &RenderOptions::default()).unwrap_err())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(err.to_string(), "rendering template has a nested reference name: r: unable to execute template");
}
