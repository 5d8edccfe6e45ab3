//! `wharf_chart::package` against the real `helm` 4: the archive Wharf writes has the
//! entries of `helm package`'s, in its order, and `helm show chart`, `helm template`
//! and `helm lint` read it as they read Helm's own.

use std::path::Path;
use std::process::Command;
use wharf_chart::package::{PackageOptions, package};

fn helm(tools: &wharf_testenv::K8sTools, cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(&tools.helm)
        .args(args)
        .env("HOME", cwd)
        .env("HELM_CONFIG_HOME", cwd.join(".helm/config"))
        .env("HELM_CACHE_HOME", cwd.join(".helm/cache"))
        .env("HELM_DATA_HOME", cwd.join(".helm/data"))
        .current_dir(cwd)
        .output()
        .expect("helm runs");
    assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Entry names, in archive order, and each entry's mode.
fn entries(archive: &[u8]) -> Vec<(String, u32)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), e.header().mode().unwrap())
        })
        .collect()
}

#[test]
fn helm_reads_what_wharf_packages_as_it_reads_its_own() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    helm(&tools, dir, &["create", "demo"]);
    // A subchart as a directory, one as an archive, ignored files, a README, a schema.
    helm(&tools, dir, &["create", "demo/charts/sub"]);
    helm(&tools, dir, &["create", "packed"]);
    helm(&tools, dir, &["package", "packed", "-d", "demo/charts"]);
    std::fs::write(dir.join("demo/.helmignore"), "# ours\n*.bak\nsecrets/\n").unwrap();
    std::fs::write(dir.join("demo/notes.bak"), "ignored").unwrap();
    std::fs::create_dir(dir.join("demo/secrets")).unwrap();
    std::fs::write(dir.join("demo/secrets/key"), "ignored").unwrap();
    std::fs::write(dir.join("demo/README.md"), "# demo\n").unwrap();
    std::fs::write(dir.join("demo/values.schema.json"), r#"{"type":"object"}"#).unwrap();
    let mut chart_yaml = std::fs::read_to_string(dir.join("demo/Chart.yaml")).unwrap();
    chart_yaml.push_str("home: https://example.com/demo\nmaintainers:\n  - name: Ann\n    email: ann@example.com\n");
    chart_yaml.push_str("dependencies:\n  - name: sub\n    version: 0.1.0\n  - name: packed\n    version: 0.1.0\n    condition: packed.enabled\n");
    std::fs::write(dir.join("demo/Chart.yaml"), chart_yaml).unwrap();

    helm(&tools, dir, &["package", "demo", "--version", "0.2.0+b.4", "-d", "helm-out"]);
    let theirs = std::fs::read(dir.join("helm-out/demo-0.2.0+b.4.tgz")).unwrap();

    let chart = wharf_chart::load_dir(&dir.join("demo")).unwrap();
    let options = PackageOptions { version: Some("0.2.0+b.4".into()), app_version: None, mtime: 1_700_000_000 };
    let ours = package(&chart, &options).unwrap();
    assert_eq!(ours.file_name(), "demo-0.2.0+b.4.tgz");
    std::fs::create_dir(dir.join("wharf-out")).unwrap();
    let path = dir.join("wharf-out").join(ours.file_name());
    std::fs::write(&path, &ours.archive).unwrap();
    let path = path.to_str().unwrap();
    let their_path = dir.join("helm-out/demo-0.2.0+b.4.tgz");
    let their_path = their_path.to_str().unwrap();

    // Same entries, all 0644, in the same order (Helm's order of subcharts varies from
    // run to run: it comes from a Go map); the ignored files are in neither.
    let listed = entries(&ours.archive);
    let helms = entries(&theirs);
    let top =
        |l: &[(String, u32)]| l.iter().filter(|(n, _)| !n.starts_with("demo/charts/")).cloned().collect::<Vec<_>>();
    assert_eq!(top(&listed), top(&helms));
    let sorted = |l: &[(String, u32)]| {
        let mut l = l.to_vec();
        l.sort();
        l
    };
    assert_eq!(sorted(&listed), sorted(&helms));
    assert!(listed.iter().all(|(_, mode)| *mode == 0o644));
    assert_eq!(listed[0].0, "demo/Chart.yaml");
    assert!(!listed.iter().any(|(name, _)| name.contains("secrets/") || name.ends_with(".bak")));
    assert!(listed.iter().any(|(name, _)| name == "demo/charts/packed/Chart.yaml"), "{listed:?}");

    // helm reads the same chart out of both.
    assert_eq!(helm(&tools, dir, &["show", "chart", path]), helm(&tools, dir, &["show", "chart", their_path]));
    assert_eq!(helm(&tools, dir, &["show", "values", path]), helm(&tools, dir, &["show", "values", their_path]));
    assert_eq!(helm(&tools, dir, &["template", "r1", path]), helm(&tools, dir, &["template", "r1", their_path]));
    let lint = helm(&tools, dir, &["lint", path]);
    assert!(lint.contains("1 chart(s) linted, 0 chart(s) failed"), "{lint}");

    // The OCI config is the metadata helm reads.
    let config: serde_json::Value = serde_json::from_slice(&ours.config).unwrap();
    assert_eq!(config["name"], "demo");
    assert_eq!(config["version"], "0.2.0+b.4");
    assert_eq!(config["maintainers"][0]["email"], "ann@example.com");
}

#[test]
fn a_dependency_missing_from_charts_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let chart_dir = dir.path().join("app");
    std::fs::create_dir_all(chart_dir.join("templates")).unwrap();
    std::fs::write(
        chart_dir.join("Chart.yaml"),
        "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n  - name: redis\n    version: 1.x\n",
    )
    .unwrap();
    let chart = wharf_chart::load_dir(&chart_dir).unwrap();
    let err = package(&chart, &PackageOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "Chart.yaml: dependency `redis` is listed but missing in the charts/ directory");
}

/// A chart is loaded on the server from a checkout: a symbolic link out of the chart
/// (to /etc, or the server's data directory) is refused, naming the link; links within
/// the chart are followed, and a link loop ends with an error, not a stack overflow.
#[test]
fn symbolic_links_out_of_the_chart_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let chart = tmp.path().join("c");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: c\nversion: 0.1.0\n").unwrap();
    std::fs::write(chart.join("templates/a.yaml"), "a: {{ .Files.Get \"inside.txt\" }}\n").unwrap();
    std::fs::write(chart.join("real.txt"), "kept").unwrap();
    std::os::unix::fs::symlink(chart.join("real.txt"), chart.join("inside.txt")).unwrap();
    let loaded = wharf_chart::load_dir(&chart).unwrap();
    let rendered = wharf_chart::render(&loaded, &Default::default(), &Default::default()).unwrap();
    assert!(rendered.manifests.iter().any(|m| m.content.contains("a: kept")), "{:?}", rendered.manifests);

    std::os::unix::fs::symlink("/etc/passwd", chart.join("leak.txt")).unwrap();
    let refused = wharf_chart::load_dir(&chart).unwrap_err().to_string();
    assert!(refused.contains("leak.txt") && refused.contains("outside the chart"), "{refused}");
    std::fs::remove_file(chart.join("leak.txt")).unwrap();

    std::os::unix::fs::symlink("/etc", chart.join("etc")).unwrap();
    let refused = wharf_chart::load_dir(&chart).unwrap_err().to_string();
    assert!(refused.contains("etc") && refused.contains("outside the chart"), "{refused}");
    std::fs::remove_file(chart.join("etc")).unwrap();

    std::os::unix::fs::symlink(&chart, chart.join("templates/loop")).unwrap();
    let refused = wharf_chart::load_dir(&chart).unwrap_err().to_string();
    assert!(refused.contains("nested more than"), "{refused}");
}
