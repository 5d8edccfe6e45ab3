//! `wharf chart template` end to end: the binary prints the bytes the real
//! `helm template` prints for the same chart and flags, and fails as helm does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wharf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
}

fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../chart/tests/charts")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn wharf_chart_template_prints_what_helm_template_prints() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&tools.helm)
        .current_dir(dir.path())
        .args(["create", "shop"])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let starter = dir.path().join("shop");
    let overrides = charts().join("starter-overrides.yaml");

    let helm = Command::new(&tools.helm)
        .args(["template", "web"])
        .arg(&starter)
        .arg("-f")
        .arg(&overrides)
        .args(["--set", "service.port=8080", "--set-string", "image.tag=0123", "--namespace", "prod"])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let ours = wharf()
        .args(["chart", "template"])
        .arg(&starter)
        .arg("-f")
        .arg(&overrides)
        .args(["--set", "service.port=8080", "--set-string", "image.tag=0123", "--namespace", "prod"])
        .args(["--release-name", "web"])
        .output()
        .unwrap();
    assert_eq!(stdout(&ours), stdout(&helm));

    let umbrella = charts().join("umbrella");
    let flags = ["--include-crds", "--show-only", "templates/deployment.yaml", "--show-only", "crds/crontab.yaml"];
    let helm = Command::new(&tools.helm).arg("template").arg(&umbrella).args(flags).output().unwrap();
    let ours = wharf().args(["chart", "template"]).arg(&umbrella).args(flags).output().unwrap();
    assert_eq!(stdout(&ours), stdout(&helm));
}

#[test]
fn a_failing_template_exits_1_with_helms_message() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("bad");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: bad\nversion: 0.1.0\n").unwrap();
    std::fs::write(chart.join("templates/cm.yaml"), "a: {{ required \"image.tag is required\" .Values.image }}\n")
        .unwrap();
    let out = wharf().args(["chart", "template"]).arg(&chart).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("execution error at (bad/templates/cm.yaml:1:6): image.tag is required"), "{err}");

    let out = wharf().args(["chart", "template"]).arg(dir.path().join("missing")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}
