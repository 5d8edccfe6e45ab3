//! Every validation error a person can meet, rendered as the CLI shows it and
//! snapshotted, so a change in wording or position is a reviewed diff.

use wharf_core::Duration;
use wharf_core::model::{ErrorPolicy, Mode, TaskKind, TriggerKind};

fn errors(yaml: &str) -> String {
    match wharf_pipeline::parse(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(diags) => diags.render("pipeline.yaml", yaml),
    }
}

const HEAD: &str = "name: p\nstages:\n  - name: Build\n    tasks:\n";

fn with_task(task: &str) -> String {
    format!("{HEAD}{task}")
}

#[test]
fn the_design_example_parses_with_every_field() {
    let text = include_str!("fixtures/design-example.yaml");
    let p = wharf_pipeline::parse(text).unwrap_or_else(|d| panic!("{}", d.render("design-example.yaml", text)));
    assert_eq!(p.name.as_str(), "deploy-2048");
    assert_eq!(p.timeout, Some(Duration::from_secs(20 * 60)));
    assert_eq!(p.triggers.len(), 7);
    assert!(matches!(p.triggers[1].kind, TriggerKind::EveryMinutes { every_minutes: 2 }));
    assert_eq!(p.triggers[6].timezone.as_deref(), Some("Asia/Shanghai"));
    let types: Vec<&str> = p.stages.iter().flat_map(|s| &s.tasks).map(|t| t.kind.type_name()).collect();
    assert_eq!(types, ["image", "script", "deploy-yaml", "chart-deploy", "chart-publish", "approval"]);
    let build = &p.stages[0];
    assert_eq!((build.mode, build.on_error), (Mode::Sequential, ErrorPolicy::Stop));
    assert_eq!(build.timeout, Some(Duration::from_secs(600)));
    let unit = &build.tasks[1];
    assert_eq!(unit.retries, 1);
    assert_eq!(unit.secrets[0].as_str(), "dockerHubPassword");
    let TaskKind::ChartDeploy(chart) = &p.stages[1].tasks[1].kind else { panic!() };
    assert_eq!(chart.values["replicaCount"], 2);
    let TaskKind::Image(image) = &build.tasks[0].kind else { panic!() };
    assert_eq!(image.dockerfile, "Dockerfile");
    assert_eq!(image.tag, "alpha-${BUILD_ID}");
}

#[test]
fn durations_in_every_spelling() {
    let p = wharf_pipeline::parse(&format!(
        "name: p\ntimeout: 1h30m\n{}",
        &with_task("      - {name: a, type: script, script: 'true', timeout: 90s}\n      - {name: b, type: script, script: 'true', timeout: 2}\n      - {name: c, type: script, script: 'true', timeout: 0.5}\n")[8..]
    ))
    .unwrap();
    assert_eq!(p.timeout, Some(Duration::from_secs(5400)));
    let t: Vec<_> = p.stages[0].tasks.iter().map(|t| t.timeout.unwrap().as_millis() / 1000).collect();
    assert_eq!(t, [90, 120, 30]);
}

#[test]
fn unknown_fields_suggest_the_right_one() {
    insta::assert_snapshot!(errors("name: p\nstagse: []\ntimout: 5\ncolour: red\n"));
}

#[test]
fn task_fields_depend_on_the_type() {
    insta::assert_snapshot!(errors(&with_task(
        "      - name: t\n        type: script\n        script: make\n        dockerfile: Dockerfile\n        workspace: devops\n"
    )));
}

#[test]
fn missing_fields_and_wrong_types() {
    insta::assert_snapshot!(errors(
        "name: p\nstages:\n  - name: Build\n    mode: paralel\n    on_error: explode\n    tasks:\n      - name: t\n        type: scrpt\n      - type: image\n        name: img\n      - name: x\n        type: script\n        script: [a, b]\n        retries: 11\n        env: [A, B]\n"
    ));
}

#[test]
fn duplicate_names_and_empty_stages() {
    insta::assert_snapshot!(errors(
        "name: p\nstages:\n  - name: Build\n    tasks:\n      - {name: t, type: script, script: a}\n      - {name: t, type: script, script: b}\n  - name: Build\n    tasks: []\n  - name: Test\n    tasks:\n"
    ));
}

#[test]
fn no_stages_at_all() {
    insta::assert_snapshot!(errors("name: p\nstages: []\n"));
    insta::assert_snapshot!(errors("name: p\n"));
}

#[test]
fn bad_durations() {
    insta::assert_snapshot!(errors(&format!(
        "name: p\ntimeout: forever\n{}",
        &with_task(
            "      - {name: a, type: script, script: x, timeout: 0}\n      - {name: b, type: script, script: x, timeout: -3}\n      - {name: c, type: script, script: x, timeout: 15d}\n      - {name: d, type: script, script: x, timeout: 5x}\n"
        )[8..]
    )));
}

#[test]
fn unknown_variable_references() {
    insta::assert_snapshot!(errors(
        "name: p\nvariables:\n  reponame: jack\n  image: ${reponame}-${NOPE}\nstages:\n  - name: Build\n    tasks:\n      - name: t\n        type: script\n        script: |\n          echo ${reponam}\n          for f in *; do echo ${f}; done\n          echo $${f} $HOME ${BUILD_ID}\n"
    ));
}

#[test]
fn outputs_must_come_from_earlier_tasks() {
    let yaml = "name: p
stages:
  - name: Build
    mode: parallel
    tasks:
      - name: a
        type: script
        outputs: [VERSION]
        script: echo VERSION=1 >> $WHARF_OUTPUT
      - name: b
        type: script
        script: echo ${VERSION} ${tasks.a.VERSION}
  - name: Test
    tasks:
      - name: c
        type: script
        script: echo ${VERSION} ${tasks.a.VERSION} ${tasks.a.OTHER} ${tasks.nope.X} ${tasks.d.X}
      - name: d
        type: script
        script: echo ${tasks.c.ANY}
";
    insta::assert_snapshot!(errors(yaml));
}

#[test]
fn outputs_in_order_are_fine() {
    let yaml = "name: p
parameters:
  - name: TARGET
    default: staging
variables:
  tag: v${BUILD_ID}-${GIT_COMMIT}-${TARGET}
stages:
  - name: Build
    tasks:
      - name: a
        type: script
        outputs: [VERSION]
        script: echo VERSION=1 >> \"$WHARF_OUTPUT\"
      - name: b
        type: script
        env: { MSG: \"v=${VERSION}\" }
        secrets: [TOKEN]
        script: echo ${VERSION} ${tasks.a.VERSION} ${MSG} ${TOKEN} ${tag}
on_failure:
  - name: Undo
    tasks:
      - {name: undo, type: script, script: 'echo ${tasks.b.ANY} ${VERSION}'}
";
    wharf_pipeline::parse(yaml).unwrap_or_else(|d| panic!("{}", d.render("p", yaml)));
}

#[test]
fn name_clashes_between_variables_parameters_outputs_and_builtins() {
    insta::assert_snapshot!(errors(
        "name: p\nparameters: [BUILD_ID, X]\nvariables:\n  X: 1\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: x, outputs: [X, GIT_COMMIT], secrets: [BUILD_ID]}\n"
    ));
}

#[test]
fn malformed_references_point_inside_the_script() {
    insta::assert_snapshot!(errors(&with_task(
        "      - name: t\n        type: script\n        script: |\n          echo ok\n          echo ${unclosed\n"
    )));
}

#[test]
fn hostile_names_and_paths() {
    insta::assert_snapshot!(errors(
        "name: ../etc\nsource:\n  repo: ext::sh -c touch% /tmp/pwned\n  branch: $(touch /tmp/pwned)\nstages:\n  - name: ../../x\n    tasks:\n      - name: ../t\n        type: script\n        script: x\n      - name: img\n        type: image\n        dockerfile: ../../etc/passwd\n        context: /etc\n        image: x\n        tag: y\n        workspace: devops\n"
    ));
}

#[test]
fn triggers_are_validated() {
    insta::assert_snapshot!(errors(
        "name: p\ntriggers:\n  - events: [push, fork]\n    branches: [main]\n  - every_minutes: 0\n  - every_hours: 2\n    at_minute: 61\n  - daily: \"25:00\"\n  - weekly: [mon, funday]\n    at: \"09:00\"\n  - monthly: 32\n    at: \"00:00\"\n  - cron: \"*/15 * * *\"\n  - cron: \"61 * * * *\"\n    timezone: Mars/Olympus\n  - daily: \"02:30\"\n    cron: \"* * * * *\"\n  - {}\n  - events: [tag]\n    timezone: UTC\nstages:\n  - name: S\n    tasks: [{name: t, type: script, script: x}]\n"
    ));
}

#[test]
fn notifications_and_the_other_task_types() {
    insta::assert_snapshot!(errors(
        "name: p\nnotify:\n  - on: [failure, sometimes]\n    webhook: {url: ftp://x, method: PUT}\n  - on: [success]\n  - webhook: {url: 'https://x'}\n    channel: c\nstages:\n  - name: S\n    tasks:\n      - {name: a, type: approval, approvers: []}\n      - {name: c, type: canary, deployment: d, cluster: c, namespace: n, image: i, steps: [50, 10]}\n      - {name: d, type: canary, deployment: d, cluster: c, namespace: n, image: i, steps: [10, 50]}\n      - {name: y, type: deploy-yaml, file: ../k8s.yaml, cluster: c}\n      - {name: h, type: chart-deploy, release: r, chart: c, version: 1, workspace: w, cluster: c, namespace: n, values: [1]}\n"
    ));
}

#[test]
fn container_executors_need_an_image_for_scripts() {
    insta::assert_snapshot!(errors(&format!(
        "executor: docker\n{}",
        with_task("      - {name: t, type: script, script: make}\n")
    )));
    let ok = format!(
        "executor: docker\ndefault_image: busybox\n{}",
        with_task("      - {name: t, type: script, script: make}\n")
    );
    wharf_pipeline::parse(&ok).unwrap();
}

#[test]
fn yaml_syntax_errors_and_non_mappings() {
    insta::assert_snapshot!(errors("name: p\nstages: [\n"));
    insta::assert_snapshot!(errors("- just\n- a list\n"));
    insta::assert_snapshot!(errors(""));
}

#[test]
fn anchors_and_merge_keys_work_for_real_pipelines() {
    let yaml = "name: p
x-common: &common
  type: script
  retries: 2
stages:
  - name: S
    tasks:
      - <<: *common
        name: a
        script: echo a
";
    // `x-` fields are extension fields: a place for anchors, otherwise ignored.
    let p = wharf_pipeline::parse(yaml).unwrap();
    assert_eq!(p.stages[0].tasks[0].retries, 2);
    let yaml = "name: p
stages:
  - name: S
    tasks:
      - &common {name: a, type: script, retries: 2, script: echo a}
      - <<: *common
        name: b
";
    let p = wharf_pipeline::parse(yaml).unwrap();
    assert_eq!(p.stages[0].tasks[1].name.as_str(), "b");
    assert_eq!(p.stages[0].tasks[1].retries, 2);
}

#[test]
fn hostile_documents_fail_fast_and_clearly() {
    let huge = format!("name: p\ndescription: \"{}\"\n", "x".repeat(10 * 1024 * 1024));
    assert!(errors(&huge).contains("a pipeline file may be at most 2097152 bytes"));
    let deep = format!("name: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    assert!(errors(&deep).contains("nested more than"));
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..12u8 {
        let p = (b'a' + i - 1) as char;
        let c = (b'a' + i) as char;
        bomb.push_str(&format!("{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"));
    }
    let started = std::time::Instant::now();
    assert!(errors(&bomb).contains("expands to more than"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Invalid UTF-8 never reaches the parser: the CLI reads files as UTF-8 first.
    assert!(
        errors("name: p\nstages: [{name: \"\\u0000\", tasks: [{name: t, type: script, script: x}]}]\n")
            .contains("stages[0].name: contains a NUL byte")
    );
}

#[test]
fn reserved_env_names_secret_clashes_and_rollback_without_on_failure() {
    insta::assert_snapshot!(errors(
        "name: p\nvariables:\n  TOKEN: x\nstages:\n  - name: S\n    on_error: rollback\n    tasks:\n      - name: t\n        type: script\n        env: {WHARF_OUTPUT: /tmp/x, BUILD_ID: '1', OK: fine}\n        secrets: [TOKEN]\n        script: echo ${WHARF_TASK} ${CI} ${OK}\n"
    ));
}

#[test]
fn server_settings_retry_on_restart_and_retention() {
    let ok = format!(
        "retry_on_restart: true\nretention: {{runs: 20, days: 7}}\n{}",
        with_task("      - {name: t, type: script, script: x}\n")
    );
    let p = wharf_pipeline::parse(&ok).unwrap();
    assert!(p.retry_on_restart);
    assert_eq!(p.retention, Some(wharf_core::model::Retention { runs: Some(20), days: Some(7) }));
    insta::assert_snapshot!(errors(&format!(
        "retry_on_restart: yes\nretention: {{runs: 0, weeks: 2}}\n{}",
        with_task("      - {name: t, type: script, script: x}\n")
    )));
}

#[test]
fn parameter_choices_are_distinct_and_hold_the_default() {
    let p = wharf_pipeline::parse(
        "name: p\nparameters:\n  - {name: TARGET, choices: [staging, production]}\n  - {name: MODE, default: fast, choices: [slow, fast]}\nstages:\n  - name: S\n    tasks: [{name: t, type: script, script: x}]\n",
    )
    .unwrap();
    assert_eq!(p.parameters[0].choices, ["staging", "production"]);
    assert_eq!(p.parameters[0].default_value(), Some("staging"), "the first choice is the default");
    assert_eq!(p.parameters[1].default_value(), Some("fast"));
    let text = errors(
        "name: p\nparameters:\n  - {name: A, choices: [x, x]}\n  - {name: B, default: z, choices: [x, y]}\n  - {name: C, choices: []}\nstages:\n  - name: S\n    tasks: [{name: t, type: script, script: x}]\n",
    );
    assert!(text.contains("parameters[0].choices[1]: `x` is listed twice"), "{text}");
    assert!(text.contains("parameters[1].choices: the default `z` is not one of the choices"), "{text}");
    assert!(text.contains("parameters[2].choices: list at least one choice"), "{text}");
}

#[test]
fn stage_waits_and_channels_are_validated() {
    let yaml = "name: p
triggers:
  - {channel: 'bad name'}
send: ok.channel
stages:
  - name: A
    wait: {}
    tasks:
      - {name: a, type: script, script: 'echo ${LATER}'}
  - name: B
    wait: {hook: true, for: some, params: [LATER, 1bad], channels: [x, 'y z']}
    send: ''
    tasks:
      - {name: b, type: script, script: 'echo ${LATER}'}
on_failure:
  - name: C
    wait: {hook: true}
    tasks:
      - {name: c, type: script, script: 'echo ${LATER}'}
";
    let rendered = errors(yaml);
    for expected in [
        "triggers[0].channel: `bad name` is not a channel name",
        "stages[0].wait: a stage waits for at least one signal: `hook: true` or `channels: [..]`",
        "unknown variable `${LATER}`",
        "stages[1].wait.for: ",
        "stages[1].wait.params: `1bad` is not a variable name",
        "stages[1].wait.channels[1]: `y z` is not a channel name",
        "stages[1].send: `` is not a channel name",
        "on_failure[0].wait: an `on_failure` stage cannot wait for signals",
    ] {
        assert!(rendered.contains(expected), "missing {expected:?} in:\n{rendered}");
    }
    // `${LATER}` is known from stage B on (and in on_failure), not in stage A.
    assert_eq!(rendered.matches("unknown variable `${LATER}`").count(), 1, "{rendered}");

    let ok = wharf_pipeline::parse(
        "name: p\ntriggers:\n  - channel: built\nstages:\n  - name: A\n    send: done\n    wait: {channels: [go], for: all, params: [V], timeout: 5}\n    tasks:\n      - {name: a, type: script, script: 'echo ${V}'}\n",
    )
    .unwrap();
    let wait = ok.stages[0].wait.as_ref().unwrap();
    assert!(wait.satisfied_by(["channel:go"]) && !wait.satisfied_by(["hook"]));
    assert_eq!((ok.sends(), ok.channel_triggers()), (vec!["done"], vec!["built"]));
    let again = wharf_pipeline::parse(&wharf_pipeline::to_yaml(&ok)).unwrap();
    assert_eq!(again, ok);
}

#[test]
fn pod_settings_on_the_pipeline_and_a_script_task() {
    let yaml = "name: p\nexecutor: kubernetes\ndefault_image: busybox\ncluster: dev\n\
        resources: {requests: {cpu: 500m, memory: 256Mi}, limits: {memory: 1Gi}}\n\
        node_selector: {disktype: ssd}\n\
        tolerations:\n  - {key: ci, operator: Exists, effect: NoSchedule}\n\
        service_account: wharf-builder\n\
        stages:\n  - name: Build\n    tasks:\n      - name: big\n        type: script\n        script: make\n\
        \x20       resources: {requests: {cpu: '2'}}\n        node_selector: {kubernetes.io/arch: amd64}\n";
    let p = wharf_pipeline::parse(yaml).unwrap_or_else(|d| panic!("{}", d.render("p.yaml", yaml)));
    assert_eq!(p.pod.resources.requests.cpu.as_deref(), Some("500m"));
    assert_eq!(p.pod.resources.limits.memory.as_deref(), Some("1Gi"));
    assert_eq!(p.pod.node_selector["disktype"], "ssd");
    assert_eq!(p.pod.tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(p.pod.service_account.as_deref(), Some("wharf-builder"));
    let TaskKind::Script(task) = &p.stages[0].tasks[0].kind else { panic!() };
    assert_eq!(task.pod.resources.requests.cpu.as_deref(), Some("2"));
    assert_eq!(task.pod.node_selector["kubernetes.io/arch"], "amd64");
    // The editor's YAML keeps them.
    assert_eq!(wharf_pipeline::parse(&wharf_pipeline::to_yaml(&p)).unwrap(), p);
}

#[test]
fn bad_pod_settings_say_what_and_where() {
    let out = errors(&with_task(
        "      - name: t\n        type: script\n        script: x\n\
         \x20       resources: {requests: {cpu: lots, memory: 2Gi}, limits: {memory: 1Gi}, claims: 1}\n\
         \x20       node_selector: {'bad key!': x}\n\
         \x20       tolerations:\n          - {key: ci, operator: Maybe}\n          - {key: ci, operator: Exists, value: x}\n          - {effect: NoSchedule}\n\
         \x20       service_account: Builder\n",
    ));
    for want in [
        "stages[0].tasks[0].resources.requests.cpu",
        "`lots` is not a Kubernetes quantity",
        "the memory request `2Gi` is more than its limit `1Gi`",
        "unknown field `claims`",
        "`bad key!` is not a label key",
        "tolerations[0].operator",
        "Equal, Exists",
        "a toleration with `operator: Exists` takes no `value`",
        "a toleration without `key` needs `operator: Exists`",
        "`Builder` is not a service account name",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Only a `script` task runs in a pod.
    let out = errors(&with_task("      - {name: a, type: approval, approvers: [x], resources: {}}\n"));
    assert!(out.contains("unknown field `resources`"), "{out}");
}
