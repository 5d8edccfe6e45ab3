//! The size limits (`wharf_pipeline::limits`) and the values no task could be given
//! (NUL bytes, image references that are shell syntax or options): refused at save,
//! each with its line, column and field.

use wharf_pipeline::limits::*;

/// The one diagnostic `yaml` gets, as `line:col: path: message`.
fn only_error(yaml: &str) -> String {
    match wharf_pipeline::parse(yaml) {
        Ok(_) => panic!("expected an error for:\n{}", &yaml[..yaml.len().min(400)]),
        Err(diags) => {
            let shown: Vec<String> = diags.0.iter().take(3).map(|d| d.to_string()).collect();
            assert_eq!(diags.0.len(), 1, "{}", shown.join("\n"));
            diags.0[0].to_string()
        }
    }
}

fn task(name: &str) -> String {
    format!("      - {{name: {name}, type: script, script: 'true'}}\n")
}

fn stage(name: &str, tasks: usize) -> String {
    let mut s = format!("  - name: {name}\n    mode: parallel\n    tasks:\n");
    for t in 0..tasks {
        s.push_str(&task(&format!("{name}-t{t}")));
    }
    s
}

#[test]
fn at_the_limits_a_pipeline_is_valid() {
    let mut yaml = String::from("name: p\nstages:\n");
    for s in 0..MAX_TASKS / MAX_TASKS_PER_STAGE {
        yaml.push_str(&stage(&format!("s{s}"), MAX_TASKS_PER_STAGE));
    }
    let p = wharf_pipeline::parse(&yaml).unwrap_or_else(|e| panic!("{}", e.0[0]));
    assert_eq!(p.all_stages().map(|s| s.tasks.len()).sum::<usize>(), MAX_TASKS);
}

#[test]
fn too_many_stages() {
    let mut yaml = String::from("name: p\nstages:\n");
    for s in 0..=MAX_STAGES {
        yaml.push_str(&stage(&format!("s{s}"), 1));
    }
    // Each stage takes 4 lines after the 2 of the head; stage 100 starts on line 403.
    assert_eq!(only_error(&yaml), "403:5: stages[100]: 101 stages; at most 100 (see Limits in docs/pipeline-yaml.md)");
}

#[test]
fn too_many_tasks_in_a_stage() {
    let yaml = format!("name: p\nstages:\n{}", stage("big", MAX_TASKS_PER_STAGE + 1));
    assert_eq!(
        only_error(&yaml),
        "106:9: stages[0].tasks[100]: 101 tasks in this stage; at most 100 (see Limits in docs/pipeline-yaml.md)"
    );
}

#[test]
fn too_many_tasks_in_all() {
    let mut yaml = String::from("name: p\nstages:\n");
    for s in 0..MAX_TASKS / MAX_TASKS_PER_STAGE {
        yaml.push_str(&stage(&format!("s{s}"), MAX_TASKS_PER_STAGE));
    }
    yaml.push_str(&stage("one-more", 1));
    assert_eq!(
        only_error(&yaml),
        "521:9: stages[5].tasks[0]: this is task 501 of the pipeline; a pipeline has at most 500 tasks in all, \
         `on_failure` included (see Limits in docs/pipeline-yaml.md)"
    );
}

#[test]
fn too_large_a_script_env_or_value() {
    let big_script = "x".repeat(MAX_SCRIPT_BYTES + 1);
    let yaml = format!(
        "name: p\nstages:\n  - name: b\n    tasks:\n      - name: t\n        type: script\n        script: {big_script}\n"
    );
    assert_eq!(only_error(&yaml), "7:17: stages[0].tasks[0].script: is 65537 bytes long; at most 65536 bytes");

    let mut env = String::new();
    for i in 0..=MAX_ENV_ENTRIES {
        env.push_str(&format!("          V{i}: x\n"));
    }
    let yaml = format!(
        "name: p\nstages:\n  - name: b\n    tasks:\n      - name: t\n        type: script\n        script: 'true'\n        env:\n{env}"
    );
    assert_eq!(
        only_error(&yaml),
        "109:11: stages[0].tasks[0].env: 101 variables in `env`; at most 100 (see Limits in docs/pipeline-yaml.md)"
    );

    let big = "v".repeat(MAX_VALUE_BYTES + 1);
    let yaml = format!("name: p\nparameters:\n  - name: P\n    default: {big}\nstages:\n{}", stage("b", 1));
    assert_eq!(only_error(&yaml), "4:14: parameters[0].default: is 32769 bytes long; at most 32768 bytes");
    let yaml = format!("name: p\nvariables:\n  V: {big}\nstages:\n{}", stage("b", 1));
    assert_eq!(only_error(&yaml), "3:6: variables.V: is 32769 bytes long; at most 32768 bytes");
    let yaml = with_env(&format!("X: {big}"));
    assert_eq!(only_error(&yaml), "9:14: stages[0].tasks[0].env.X: is 32769 bytes long; at most 32768 bytes");
}

fn with_env(entry: &str) -> String {
    format!(
        "name: p\nstages:\n  - name: b\n    tasks:\n      - name: t\n        type: script\n        script: 'true'\n        env:\n          {entry}\n"
    )
}

#[test]
fn nul_bytes_are_refused_where_they_are_written() {
    assert_eq!(
        only_error(&with_env(r#"X: "a\0b""#)),
        "9:16: stages[0].tasks[0].env.X: contains a NUL byte (`\\0`), which no process argument or environment can carry"
    );
    let yaml = format!("name: p\nparameters:\n  - name: P\n    default: \"\\0\"\nstages:\n{}", stage("b", 1));
    assert_eq!(
        only_error(&yaml),
        "4:15: parameters[0].default: contains a NUL byte (`\\0`), which no process argument or environment can carry"
    );
}

#[test]
fn image_references_that_are_shell_or_options_are_refused() {
    let with_image = |image: &str, default: bool| {
        let (top, field) = if default {
            (format!("default_image: '{image}'\n"), String::new())
        } else {
            (String::new(), format!("        image: '{image}'\n"))
        };
        format!(
            "name: p\n{top}stages:\n  - name: b\n    tasks:\n      - name: t\n        type: script\n{field}        script: 'true'\n"
        )
    };
    for (image, why) in [
        ("alpine;rm -rf /", "it contains ' '"),
        ("alpine;id", "`alpine;id`"),
        ("$(id)", "`$(id)`"),
        ("--privileged", "`--privileged`"),
        ("-v/:/host", "`-v/:/host`"),
    ] {
        let error = only_error(&with_image(image, false));
        assert!(error.starts_with("7:16: stages[0].tasks[0].image: "), "{image}: {error}");
        assert!(error.contains(why), "{image}: {error}");
        let error = only_error(&with_image(image, true));
        assert!(error.starts_with("2:16: default_image: "), "{image}: {error}");
    }
    // Tags join the reference: `alpine` with tag `3; id` is refused too.
    let yaml = "name: p\nstages:\n  - name: b\n    tasks:\n      - {name: t, type: script, image: alpine, tag: '3;id', script: 'true'}\n";
    assert!(only_error(yaml).contains("stages[0].tasks[0].image"), "{}", only_error(yaml));
    // Templated references are checked once rendered, before the task starts.
    let yaml = "name: p\nparameters: [{name: IMG, default: alpine}]\nstages:\n  - name: b\n    tasks:\n      - {name: t, type: script, image: '${IMG}', script: 'true'}\n";
    wharf_pipeline::parse(yaml).unwrap();
    for good in [
        "alpine",
        "alpine:3.20",
        "localhost:5000/team/app:v1",
        "ghcr.io/o/r@sha256:0123456789012345678901234567890123456789012345678901234567890123",
    ] {
        wharf_pipeline::parse(&with_image(good, false)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn values_given_at_run_time_are_checked_the_same_way() {
    assert_eq!(value_problem("fine"), None);
    assert_eq!(value_problem("a\0b").unwrap(), "contains a NUL byte, which no environment variable can carry");
    assert_eq!(
        value_problem(&"x".repeat(1_900_000)).unwrap(),
        "is 1900000 bytes long; a value may be at most 32768 bytes"
    );
}

#[test]
fn the_reference_lists_the_limits_as_they_are() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipeline-yaml.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let doc = &doc[doc.find("## Limits").expect("a Limits section")..];
    let row = |what: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| {what} |")))
            .unwrap_or_else(|| panic!("docs/pipeline-yaml.md: no Limits row for {what}"))
            .replace(['\u{a0}', ' '], "")
    };
    assert!(row("stages").contains(&format!("|{MAX_STAGES}in`stages`")));
    assert!(row("tasks per stage").contains(&format!("|{MAX_TASKS_PER_STAGE}|")));
    assert!(row("tasks in all").contains(&format!("|{MAX_TASKS},")));
    assert!(row("`script`").contains(&format!("|{MAX_SCRIPT_BYTES}bytes")));
    assert!(row("`env` / `build_args` entries").contains(&format!("|{MAX_ENV_ENTRIES}per")));
    assert!(row("`parameters` / `variables`").contains(&format!("|{MAX_PARAMETERS}each")));
    assert!(row("a value").contains(&format!("|{MAX_VALUE_BYTES}bytes")));
}
