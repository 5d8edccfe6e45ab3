//! Engine behaviour that a scenario file cannot state: the order of observer calls,
//! when the executor was called, what it was handed (environment, rendered script),
//! several runs sharing one engine's slots, and `Engine::prepare`. All on the fake
//! executor and a paused clock.

mod common;

use common::{
    Dirs, Recorder, fail_after, ok_after, pipeline, request, secs, statuses, stop_request, task, task_record,
};
use std::collections::BTreeMap;

use tokio::sync::watch;
use tokio::time::Instant;
use wharf_core::status::Status;
use wharf_engine::{EngineConfig, Part, Resume};
use wharf_executor::fake::{Behavior, FakeExecutor};
use wharf_executor::{StopReason, StopRequest};

fn env_of(spec: &wharf_executor::TaskSpec) -> BTreeMap<String, String> {
    // Later entries override earlier ones, as the executor applies them.
    spec.env.iter().cloned().collect()
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_every_change_in_the_order_it_happened() {
    let fake = FakeExecutor::new();
    fake.on("a", vec![ok_after(1)]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p
stages:
  - name: One
    tasks:
      - {name: a, type: script, script: x}
      - {name: b, type: script, script: x}
  - name: Two
    tasks:
      - {name: c, type: script, script: x}
",
    );
    let (record, recorder) = common::run(&engine, request(p, dirs.existing())).await;
    use Part::*;
    use Status::*;
    assert_eq!(
        recorder.changes(),
        [
            (Run, Queued),
            (Run, Running),
            (Stage(0), Running),
            (Task(0, 0), Running),
            (Task(0, 0), Succeeded),
            (Task(0, 1), Running),
            (Task(0, 1), Succeeded),
            (Stage(0), Succeeded),
            (Stage(1), Running),
            (Task(1, 0), Running),
            (Task(1, 0), Succeeded),
            (Stage(1), Succeeded),
            (Run, Succeeded),
        ]
    );
    // The record keeps the same story with times that never go backwards.
    for part in common::parts(&record) {
        let progress = match part {
            Run => &record.progress,
            Stage(s) => &record.stages[s].progress,
            Task(s, t) => &record.stages[s].tasks[t].progress,
            Checkout => unreachable!("no source, no checkout"),
        };
        assert!(progress.history.windows(2).all(|w| w[0].at <= w[1].at), "{part:?}");
    }
    assert!(record.checkout.is_none());
    assert_eq!(task_record(&record, "a").exit_code, Some(0));
}

#[tokio::test(start_paused = true)]
async fn parallel_tasks_run_at_the_same_time_and_stages_one_after_another() {
    let fake = FakeExecutor::new();
    fake.on("unit", vec![ok_after(10)]);
    fake.on("lint", vec![ok_after(4)]);
    fake.on("e2e", vec![ok_after(7)]);
    fake.on("deploy", vec![ok_after(2)]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p
stages:
  - name: Test
    mode: parallel
    tasks:
      - {name: unit, type: script, script: x}
      - {name: lint, type: script, script: x}
      - {name: e2e, type: script, script: x}
  - name: Deploy
    tasks:
      - {name: deploy, type: script, script: x}
",
    );
    let t0 = Instant::now();
    let (record, _) = common::run(&engine, request(p, dirs.existing())).await;
    assert_eq!(record.progress.status, Status::Succeeded);
    let call = |name: &str| {
        let calls = fake.calls_of(name);
        assert_eq!(calls.len(), 1, "{name}");
        (calls[0].started - t0, calls[0].ended - t0)
    };
    assert_eq!(call("unit"), (secs(0), secs(10)));
    assert_eq!(call("lint"), (secs(0), secs(4)));
    assert_eq!(call("e2e"), (secs(0), secs(7)));
    // The next stage waits for the slowest task of the previous one.
    assert_eq!(call("deploy"), (secs(10), secs(12)));
}

#[tokio::test(start_paused = true)]
async fn one_slot_serialises_a_parallel_stage_and_the_waiting_task_is_pending_meanwhile() {
    let fake = FakeExecutor::new();
    fake.on("a", vec![ok_after(10)]);
    fake.on("b", vec![ok_after(10)]);
    let engine = common::fake_engine(&fake, EngineConfig { max_parallel_tasks: 1, ..EngineConfig::default() });
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    mode: parallel\n    tasks:\n      - {name: a, type: script, script: x}\n      - {name: b, type: script, script: x}\n",
    );
    let t0 = Instant::now();
    let (record, recorder) = common::run(&engine, request(p, dirs.existing())).await;
    assert_eq!(fake.calls_of("b")[0].started - t0, secs(10));
    assert_eq!(recorder.transitions(task(&record, "b")), statuses("queued pending running succeeded"));
    // b was pending before a finished: the waiting shows while it happens.
    let changes = recorder.changes();
    let b_pending = changes.iter().position(|c| *c == (Part::Task(0, 1), Status::Pending)).unwrap();
    let a_done = changes.iter().position(|c| *c == (Part::Task(0, 0), Status::Succeeded)).unwrap();
    assert!(b_pending < a_done, "{changes:?}");
}

/// The slot is held by another run on the same engine: the waiting run's stage and
/// pipeline timeouts count only its own running time.
#[tokio::test(start_paused = true)]
async fn time_waiting_for_a_slot_held_by_another_run_counts_against_no_timeout() {
    let fake = FakeExecutor::new();
    fake.on("hog", vec![ok_after(50)]);
    fake.on("work", vec![ok_after(40)]);
    let engine = common::fake_engine(&fake, EngineConfig { max_parallel_tasks: 1, ..EngineConfig::default() });
    let (d1, d2) = (Dirs::new(), Dirs::new());
    let first =
        pipeline("name: first\nstages:\n  - name: S\n    tasks:\n      - {name: hog, type: script, script: x}\n");
    let second = pipeline(
        "name: second\ntimeout: 1\nstages:\n  - name: S\n    timeout: 45s\n    tasks:\n      - {name: work, type: script, script: x, timeout: 41s}\n",
    );
    let t0 = Instant::now();
    let ((r1, _), (r2, rec2)) = tokio::join!(
        common::run(&engine, request(first, d1.existing())),
        common::run(&engine, request(second, d2.existing())),
    );
    assert_eq!(r1.progress.status, Status::Succeeded);
    assert_eq!(r2.progress.status, Status::Succeeded, "{:?}", r2.reason);
    assert_eq!(rec2.transitions(Part::Task(0, 0)), statuses("queued pending running succeeded"));
    assert_eq!(t0.elapsed(), secs(90), "50s pending, then 40s running");
}

/// An executor that reports its attempt pending (a pod the scheduler cannot place yet):
/// the task is `pending` with the executor's reason meanwhile, and neither the task's nor
/// the stage's nor the pipeline's timeout counts that time.
#[tokio::test(start_paused = true)]
async fn time_an_executor_reports_pending_counts_against_no_timeout() {
    let fake = FakeExecutor::new();
    let why = "0/1 nodes are available: 1 Insufficient cpu.";
    fake.on("work", vec![Behavior { pending: Some((why.into(), secs(100))), ..ok_after(40) }]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\ntimeout: 1\nstages:\n  - name: S\n    timeout: 45s\n    tasks:\n      - {name: work, type: script, script: x, timeout: 41s}\n",
    );
    let recorder = Recorder::new();
    let (_tx, rx) = watch::channel(None);
    let t0 = Instant::now();
    let run = engine.run(request(p, dirs.existing()), recorder.clone(), rx);
    tokio::pin!(run);
    // Half-way through the pending spell the task shows why it waits.
    let record = tokio::select! {
        record = &mut run => panic!("ended early: {:?}", record.progress.status),
        () = tokio::time::sleep(secs(50)) => recorder.last_record(),
    };
    let shown = &record.stages[0].tasks[0];
    assert_eq!((shown.progress.status, shown.reason.as_deref()), (Status::Pending, Some(why)));
    let record = run.await;
    recorder.assert_consistent_with(&record);
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    assert_eq!(t0.elapsed(), secs(140), "100s pending, then 40s running");
    assert_eq!(recorder.transitions(Part::Task(0, 0)), statuses("queued running pending running succeeded"));
    assert_eq!(record.stages[0].tasks[0].reason, None);
}

/// Running time still counts around a pending spell: 30s pending, then a task that
/// would run 60s times out after its 20s.
#[tokio::test(start_paused = true)]
async fn the_task_timeout_counts_from_when_the_pending_attempt_runs() {
    let fake = FakeExecutor::new();
    fake.on("work", vec![Behavior { pending: Some(("unschedulable".into(), secs(30))), ..ok_after(60) }]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: work, type: script, script: x, timeout: 20s}\n",
    );
    let t0 = Instant::now();
    let (record, _) = common::run(&engine, request(p, dirs.existing())).await;
    assert_eq!(record.stages[0].tasks[0].progress.status, Status::TimedOut);
    assert_eq!(t0.elapsed(), secs(30 + 20));
}

/// Without the watchdog going first, the engine tossed a coin between starting the
/// first task and seeing the stop; many runs make a lost toss certain to show.
#[tokio::test(start_paused = true)]
async fn a_stop_sent_before_the_run_starts_never_reaches_the_executor() {
    let fake = FakeExecutor::new();
    let engine = common::fake_engine(&fake, EngineConfig::default());
    for mode in ["sequential", "parallel"] {
        let p = pipeline(&format!(
            "name: p\nstages:\n  - name: S\n    mode: {mode}\n    tasks:\n      - {{name: a, type: script, script: x}}\n      - {{name: b, type: script, script: x}}\n"
        ));
        for _ in 0..25 {
            let dirs = Dirs::new();
            let recorder = Recorder::new();
            let (_tx, rx) = watch::channel(stop_request(secs(1)));
            let record = engine.run(request(p.clone(), dirs.existing()), recorder.clone(), rx).await;
            recorder.assert_consistent_with(&record);
            assert_eq!(record.progress.status, Status::Stopped);
            assert_eq!(common::history(&record, Part::Task(0, 0)), statuses("queued skipped"), "{mode}");
            assert_eq!(common::history(&record, Part::Task(0, 1)), statuses("queued skipped"), "{mode}");
        }
    }
    assert!(fake.calls().is_empty(), "{} attempts started after the stop", fake.calls().len());
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_running_task_at_once_and_keeps_what_it_printed() {
    let fake = FakeExecutor::new();
    fake.on(
        "build",
        vec![Behavior { runs_for: secs(3600), lines: vec!["step 1".into(), "step 2".into()], ..Behavior::default() }],
    );
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: build, type: script, script: x}\n      - {name: after, type: script, script: x}\n",
    );
    let recorder = Recorder::new();
    let t0 = Instant::now();
    let record = common::run_stopped_when(
        &engine,
        request(p, dirs.existing()),
        recorder.clone(),
        tokio::time::sleep(secs(30)),
        stop_request(secs(5)),
    )
    .await;
    assert_eq!(record.progress.status, Status::Stopped);
    assert_eq!(record.reason.as_deref(), Some("stopped by user"));
    let call = &fake.calls_of("build")[0];
    assert_eq!(call.ended - t0, secs(30), "the fake obeys SIGTERM at once");
    assert_eq!(recorder.output(Part::Task(0, 0)), ["step 1", "step 2"]);
    assert!(fake.calls_of("after").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_superseded_run_names_the_newer_run_in_every_reason_it_ends() {
    let fake = FakeExecutor::new();
    fake.on("build", vec![Behavior { runs_for: secs(3600), ..Behavior::default() }]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: build, type: script, script: x}\n  - name: T\n    tasks:\n      - {name: after, type: script, script: x}\n",
    );
    let superseded = Some(StopRequest { reason: StopReason::Superseded { by: 9 }, grace: secs(5) });
    let record = common::run_stopped_when(
        &engine,
        request(p, dirs.existing()),
        Recorder::new(),
        tokio::time::sleep(secs(30)),
        superseded,
    )
    .await;
    let why = "superseded by run #9 (concurrency: cancel-previous)";
    assert_eq!(record.progress.status, Status::Stopped);
    assert_eq!(record.reason.as_deref(), Some(why));
    assert_eq!(record.stages[0].reason.as_deref(), Some(format!("task `build` stopped ({why})").as_str()));
    let build = task_record(&record, "build");
    assert_eq!((build.progress.status, build.reason.as_deref()), (Status::Stopped, Some(why)));
    assert_eq!(record.stages[1].progress.status, Status::Skipped);
}

#[tokio::test(start_paused = true)]
async fn a_retry_takes_over_the_stages_that_succeeded_and_records_where_they_ran() {
    let fake = FakeExecutor::new();
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p
stages:
  - name: A
    tasks:
      - {name: a, type: script, script: x, outputs: [V]}
  - name: B
    tasks:
      - {name: b, type: script, script: x}
  - name: C
    tasks:
      - {name: c, type: script, script: x}
",
    );
    fake.on("a", vec![Behavior { outputs: vec![("V".into(), "1".into())], ..Behavior::default() }]);
    fake.on("b", vec![fail_after(1)]);
    let (first, _) = common::run(&engine, request(p.clone(), dirs.existing())).await;
    assert_eq!(first.progress.status, Status::Failed);

    // Run #8 retries #7: A is taken over from #7, B runs and C fails.
    fake.on("b", vec![ok_after(1)]);
    fake.on("c", vec![fail_after(1)]);
    let mut retry = request(p.clone(), dirs.existing());
    retry.number = 8;
    retry.resume = Some(Resume::from_failed_stage(first).expect("a stage failed"));
    let (second, _) = common::run(&engine, retry).await;
    assert_eq!(second.progress.status, Status::Failed);
    assert_eq!(second.stages[0].progress.status, Status::Skipped);
    assert_eq!(second.stages[0].reused_from, Some(7));
    assert_eq!(second.stages[0].reason.as_deref(), Some("succeeded in run #7"));
    assert_eq!(task_record(&second, "a").reason.as_deref(), Some("succeeded in run #7"));
    assert_eq!(task_record(&second, "a").outputs, BTreeMap::from([("V".to_owned(), "1".to_owned())]));
    assert_eq!(second.stages[1].reused_from, None);

    // Run #9 retries #8: A still names #7, where it ran; B names #8.
    fake.on("c", vec![ok_after(1)]);
    let resume = Resume::from_failed_stage(second).expect("a stage failed");
    assert_eq!(resume.from_stage, 2, "a taken-over stage counts as done");
    let mut again = request(p, dirs.existing());
    again.number = 9;
    again.resume = Some(resume);
    let (third, _) = common::run(&engine, again).await;
    assert_eq!(third.progress.status, Status::Succeeded);
    assert_eq!(third.stages.iter().map(|s| s.reused_from).collect::<Vec<_>>(), [Some(7), Some(8), None]);
    assert_eq!(third.stages[0].reason.as_deref(), Some("succeeded in run #7"));
    assert_eq!(third.stages[1].reason.as_deref(), Some("succeeded in run #8"));
}

#[tokio::test(start_paused = true)]
async fn retries_run_the_task_again_with_a_new_attempt_number_and_output_file() {
    let fake = FakeExecutor::new();
    fake.on("flaky", vec![fail_after(1), fail_after(1), ok_after(1)]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: flaky, type: script, script: x, retries: 2}\n",
    );
    let (record, recorder) = common::run(&engine, request(p, dirs.existing())).await;
    let calls = fake.calls_of("flaky");
    assert_eq!(calls.iter().map(|c| c.spec.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(calls.iter().map(|c| c.spec.output_file.clone()).collect::<std::collections::BTreeSet<_>>().len(), 3);
    let rec = task_record(&record, "flaky");
    assert_eq!((rec.progress.status, rec.attempts, rec.exit_code), (Status::Succeeded, 3, Some(0)));
    let lines = recorder.lines(Part::Task(0, 0));
    // Each attempt says where it runs.
    assert_eq!(
        lines,
        [
            "runs on the fake executor",
            "attempt 1 failed (exit code 1); retrying (2 of 3)",
            "runs on the fake executor",
            "attempt 2 failed (exit code 1); retrying (3 of 3)",
            "runs on the fake executor"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn scripts_get_builtins_variables_parameters_and_outputs() {
    let fake = FakeExecutor::new();
    fake.on(
        "version",
        vec![Behavior {
            outputs: vec![("VERSION".into(), "1.2.3".into()), ("EXTRA".into(), "x y".into())],
            ..Behavior::default()
        }],
    );
    fake.on("meta", vec![Behavior { outputs: vec![("EXTRA".into(), "x y".into())], ..Behavior::default() }]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: vars
variables:
  reponame: jack-2048
  image: ${reponame}:${BUILD_ID}
parameters:
  - name: TARGET
    default: staging-${SYS_INCREMENT}
  - name: REGION
stages:
  - name: Build
    tasks:
      - {name: version, type: script, script: make, outputs: [VERSION]}
      - {name: meta, type: script, script: make}
  - name: Use
    tasks:
      - name: use
        type: script
        env: {TAG: 'v${VERSION}-${BUILD_ID}', WHERE: '${TARGET}/${REGION}'}
        script: |
          echo ${BUILD_ID} ${image} ${VERSION} ${tasks.meta.EXTRA} ${tasks.version.VERSION}
          echo $${HOME} $HOME
",
    );
    let given = BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]);
    let params = engine.prepare(&p, &given, &BTreeMap::new()).unwrap();
    assert_eq!(
        params,
        BTreeMap::from([("REGION".into(), "eu".into()), ("TARGET".into(), "staging-${SYS_INCREMENT}".into())])
    );
    let mut req = request(p, dirs.existing());
    req.parameters = params;
    let (record, _) = common::run(&engine, req).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    assert_eq!(
        task_record(&record, "version").outputs,
        BTreeMap::from([("EXTRA".into(), "x y".into()), ("VERSION".into(), "1.2.3".into())])
    );

    let spec = fake.calls_of("use")[0].spec.clone();
    // Values are never pasted into the script: the shell expands them from the
    // environment, task outputs through generated names; `$${HOME}` reaches it as `${HOME}`.
    assert_eq!(
        spec.script,
        "echo ${BUILD_ID} ${image} ${VERSION} ${WHARF_OUT_0_1_EXTRA} ${WHARF_OUT_0_0_VERSION}\necho ${HOME} $HOME\n"
    );
    let env = env_of(&spec);
    for (key, want) in [
        ("BUILD_ID", "7"),
        ("SYS_INCREMENT", "42"),
        ("PIPELINE_NAME", "vars"),
        ("RUN_CAUSE", "local run by tester"),
        ("reponame", "jack-2048"),
        ("image", "jack-2048:7"),
        ("TARGET", "staging-42"),
        ("REGION", "eu"),
        ("VERSION", "1.2.3"),
        ("WHARF_OUT_0_1_EXTRA", "x y"),
        ("WHARF_OUT_0_0_VERSION", "1.2.3"),
        ("TAG", "v1.2.3-7"),
        ("WHERE", "staging-42/eu"),
        ("WHARF_STAGE", "Use"),
        ("WHARF_TASK", "use"),
        ("WHARF_RUN", "vars#7"),
        ("GIT_COMMIT", ""),
        ("CI", "true"),
    ] {
        assert_eq!(env.get(key).map(String::as_str), Some(want), "{key}");
    }
    assert_eq!(env["WHARF_OUTPUT"], spec.output_file.display().to_string());
    assert_eq!(env["WHARF_WORKSPACE"], dirs.src().display().to_string());
    assert_eq!(spec.workdir, dirs.src());
    assert!(spec.output_file.starts_with(dirs.path().join("run/outputs")));
    let stamp = &env["SYS_TIMESTAMP"];
    assert!(stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()), "{stamp}");
    // Only declared outputs become plain names; the rest are recorded all the same.
    assert!(!env.contains_key("EXTRA"));
    assert_eq!(task_record(&record, "meta").outputs["EXTRA"], "x y");
}

#[tokio::test(start_paused = true)]
async fn a_given_parameter_is_data_not_a_template() {
    let fake = FakeExecutor::new();
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nparameters: [{name: MSG, default: '${BUILD_ID}'}]\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: 'echo ${MSG}', env: {COPY: 'm=${MSG}'}}\n",
    );
    let given = BTreeMap::from([("MSG".to_owned(), "${PIPELINE_NAME} $(id)".to_owned())]);
    let mut req = request(p, dirs.existing());
    req.parameters = engine.prepare(&req.pipeline, &given, &BTreeMap::new()).unwrap();
    let (record, _) = common::run(&engine, req).await;
    assert_eq!(record.progress.status, Status::Succeeded);
    let env = env_of(&fake.calls_of("t")[0].spec);
    assert_eq!(env["MSG"], "${PIPELINE_NAME} $(id)");
    assert_eq!(env["COPY"], "m=${PIPELINE_NAME} $(id)");
    assert_eq!(record.parameters["MSG"], "${PIPELINE_NAME} $(id)");
}

#[tokio::test(start_paused = true)]
async fn secrets_reach_their_task_and_are_masked_in_logs_reasons_and_outputs() {
    let fake = FakeExecutor::new();
    fake.on(
        "login",
        vec![Behavior {
            lines: vec!["password is hunter2!".into(), "no secret here".into()],
            outputs: vec![("TOKEN_COPY".into(), "pre-hunter2!-post".into())],
            ..Behavior::default()
        }],
    );
    fake.on("later", vec![Behavior { lines: vec!["hunter2!hunter2!".into()], exit_code: 1, ..Behavior::default() }]);
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: login, type: script, script: x, secrets: [PASSWORD]}\n      - {name: later, type: script, script: 'echo ${tasks.login.TOKEN_COPY}'}\n",
    );
    let mut req = request(p, dirs.existing());
    req.secrets = BTreeMap::from([("PASSWORD".into(), "hunter2!".into())]);
    let (record, recorder) = common::run(&engine, req).await;
    assert_eq!(env_of(&fake.calls_of("login")[0].spec)["PASSWORD"], "hunter2!");
    assert!(!env_of(&fake.calls_of("later")[0].spec).contains_key("PASSWORD"), "only tasks that list a secret get it");
    assert_eq!(recorder.output(Part::Task(0, 0)), ["password is ***", "no secret here"]);
    assert_eq!(recorder.output(Part::Task(0, 1)), ["******"]);
    assert_eq!(task_record(&record, "login").outputs["TOKEN_COPY"], "pre-***-post");
    // The next task still gets the real value to work with.
    assert_eq!(env_of(&fake.calls_of("later")[0].spec)["WHARF_OUT_0_0_TOKEN_COPY"], "pre-hunter2!-post");
    for (part, line) in recorder.all_lines() {
        assert!(!line.contains("hunter2"), "{part:?}: {line}");
    }
}

#[tokio::test(start_paused = true)]
async fn prepare_fills_defaults_and_refuses_unknown_or_missing_parameters_and_secrets() {
    let fake = FakeExecutor::new();
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let p = pipeline(
        "name: p
parameters:
  - {name: TARGET, default: staging}
  - {name: REGION}
stages:
  - name: Build
    tasks:
      - {name: push, type: script, script: x, secrets: [TOKEN, KEY]}
",
    );
    let none = BTreeMap::new();
    let secrets = BTreeMap::from([("TOKEN".to_owned(), "t".to_owned()), ("KEY".to_owned(), "k".to_owned())]);
    let given = BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]);
    assert_eq!(
        engine.prepare(&p, &given, &secrets).unwrap(),
        BTreeMap::from([("REGION".into(), "eu".into()), ("TARGET".into(), "staging".into())])
    );
    let given = BTreeMap::from([("REGION".to_owned(), "eu".to_owned()), ("TARGET".to_owned(), "prod".to_owned())]);
    assert_eq!(engine.prepare(&p, &given, &secrets).unwrap()["TARGET"], "prod");

    let wrong = BTreeMap::from([("REGOIN".to_owned(), "eu".to_owned())]);
    let only_token = BTreeMap::from([("TOKEN".to_owned(), "t".to_owned())]);
    let err = engine.prepare(&p, &wrong, &only_token).unwrap_err().to_string();
    assert_eq!(
        err,
        "Build/push: the secret `KEY` is not set\n\
         unknown parameter `REGOIN`; the pipeline's parameters are: TARGET, REGION\n\
         parameter `REGION` has no default and was not given (-p REGION=VALUE)"
    );
    let bare = pipeline("name: p\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: x}\n");
    let err =
        engine.prepare(&bare, &BTreeMap::from([("X".to_owned(), "1".to_owned())]), &none).unwrap_err().to_string();
    assert_eq!(err, "unknown parameter `X`: this pipeline takes no parameters");
}

#[tokio::test(start_paused = true)]
async fn prepare_refuses_task_types_that_cannot_run_here() {
    let fake = FakeExecutor::new();
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let p = pipeline(
        "name: p
stages:
  - name: Build
    tasks:
      - {name: img, type: image, dockerfile: Dockerfile, context: ., image: app, tag: '1', workspace: devops}
      - {name: ok, type: script, script: x}
      - {name: sign, type: approval, approvers: [admin]}
",
    );
    let err = engine.prepare(&p, &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
    assert_eq!(
        err,
        "Build/img: `image` tasks need the Docker Engine to build and push, and none is configured here (the server uses it when a Docker socket answers at start)\n\
         Build/sign: `approval` tasks need the Wharf server: people approve or reject them in its UI, API or CLI (`wharf runs approve`), and `wharf run` has nobody to ask"
    );
    // With a builder, `image` tasks pass: see tests/image.rs.
}

#[tokio::test(start_paused = true)]
async fn prepare_refuses_parameter_values_no_process_could_be_given() {
    let fake = FakeExecutor::new();
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let p = pipeline(
        "name: p\nparameters: [{name: MSG, default: x}]\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: x}\n",
    );
    let nul = BTreeMap::from([("MSG".to_owned(), "a\0b".to_owned())]);
    assert_eq!(
        engine.prepare(&p, &nul, &BTreeMap::new()).unwrap_err().to_string(),
        "parameter `MSG` contains a NUL byte, which no environment variable can carry"
    );
    let huge = BTreeMap::from([("MSG".to_owned(), "x".repeat(1_900_000))]);
    assert_eq!(
        engine.prepare(&p, &huge, &BTreeMap::new()).unwrap_err().to_string(),
        "parameter `MSG` is 1900000 bytes long; a value may be at most 32768 bytes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_templated_image_that_renders_to_shell_syntax_fails_before_the_executor_sees_it() {
    let fake = FakeExecutor::new();
    let engine = common::fake_engine(&fake, EngineConfig::default());
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nparameters: [{name: IMG, default: alpine}]\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, image: '${IMG}', script: x}\n",
    );
    for (bad, why) in [("alpine;id", "`alpine;id`"), ("--privileged", "`--privileged`"), ("$(id)", "`$(id)`")] {
        let mut req = request(p.clone(), dirs.existing());
        let given = BTreeMap::from([("IMG".to_owned(), bad.to_owned())]);
        req.parameters = engine.prepare(&req.pipeline, &given, &BTreeMap::new()).unwrap();
        let (record, recorder) = common::run(&engine, req).await;
        assert_eq!(record.progress.status, Status::Failed, "{bad}");
        let said = recorder.lines(Part::Task(0, 0)).join("\n");
        assert!(said.contains("image: ") && said.contains(why), "{bad}: {said}");
    }
    assert!(fake.calls_of("t").is_empty(), "the executor was never asked to run a bad image");
}

/// Counts how the engine announces changes: one part at a time, or several at once.
#[derive(Default)]
struct Announcements {
    recorder: std::sync::Arc<Recorder>,
    /// (part, status) of every one-part announcement.
    singles: std::sync::Mutex<Vec<(Part, Status)>>,
    /// The number of parts of every several-parts announcement.
    batches: std::sync::Mutex<Vec<usize>>,
}

impl wharf_engine::Observer for Announcements {
    fn changed(&self, record: &wharf_core::run::RunRecord, part: Part) {
        self.singles.lock().unwrap().push((part, common::status_of(record, part)));
        self.recorder.changed(record, part);
    }
    fn changed_parts(&self, record: &wharf_core::run::RunRecord, parts: &[Part]) {
        self.batches.lock().unwrap().push(parts.len());
        self.recorder.changed_parts(record, parts);
    }
    fn log(&self, part: Part, line: &wharf_executor::LogLine) {
        self.recorder.log(part, line);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_waiting_tasks_of_a_stage_and_skips_the_rest_in_one_change_each() {
    let fake = FakeExecutor::new();
    let mut yaml = String::from("name: p\nstages:\n  - name: Wide\n    mode: parallel\n    tasks:\n");
    for t in 0..100 {
        yaml.push_str(&format!("      - {{name: w{t}, type: script, script: x}}\n"));
        fake.on(&format!("w{t}"), vec![ok_after(3600)]);
    }
    yaml.push_str("  - name: Later\n    tasks:\n");
    for t in 0..50 {
        yaml.push_str(&format!("      - {{name: l{t}, type: script, script: x}}\n"));
    }
    let engine = common::fake_engine(&fake, EngineConfig { max_parallel_tasks: 1, ..EngineConfig::default() });
    let dirs = Dirs::new();
    let seen = std::sync::Arc::new(Announcements::default());
    let (stop_tx, stop_rx) = watch::channel(None);
    let run = engine.run(request(pipeline(&yaml), dirs.existing()), seen.clone(), stop_rx);
    tokio::pin!(run);
    let record = tokio::select! {
        record = &mut run => record,
        () = tokio::time::sleep(secs(30)) => {
            stop_tx.send_replace(stop_request(secs(5)));
            run.await
        }
    };
    seen.recorder.assert_consistent_with(&record);
    assert_eq!(record.progress.status, Status::Stopped);
    let stopped = record.stages[0].tasks.iter().filter(|t| t.progress.status == Status::Stopped).count();
    assert_eq!(stopped, 100, "the running task and the 99 waiting ones");
    assert!(record.stages[1].tasks.iter().all(|t| t.progress.status == Status::Skipped));
    // The 99 waiting tasks end in one announcement, the 50 later tasks and their stage
    // are skipped in another; only the running task ends on its own.
    assert_eq!(*seen.batches.lock().unwrap(), [99, 51]);
    let single_ends = seen
        .singles
        .lock()
        .unwrap()
        .iter()
        .filter(|(part, status)| matches!(part, Part::Task(..)) && status.is_terminal())
        .count();
    assert_eq!(single_ends, 1);
}

#[tokio::test]
async fn a_choice_parameter_takes_only_its_choices_and_defaults_to_the_first() {
    let p = pipeline(
        "name: p\nparameters: [{name: REGION, choices: [eu-west, us-east]}]\nstages:\n  - name: S\n    tasks: [{name: t, type: script, script: x}]\n",
    );
    let engine = common::host_engine();
    let params = engine.prepare(&p, &BTreeMap::new(), &BTreeMap::new()).unwrap();
    assert_eq!(params["REGION"], "eu-west");
    let given = BTreeMap::from([("REGION".to_owned(), "mars".to_owned())]);
    let err = engine.prepare(&p, &given, &BTreeMap::new()).unwrap_err().to_string();
    assert_eq!(err, "parameter `REGION` is `mars`; it must be one of: eu-west, us-east");
}
