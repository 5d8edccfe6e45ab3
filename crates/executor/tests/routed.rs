//! `ByImage`: which executor a task goes to, and what its log says about where it runs.

use std::sync::Arc;
use tokio::sync::watch;
use wharf_executor::fake::FakeExecutor;
use wharf_executor::routed::ByImage;
use wharf_executor::{Executor, LogLine, LogSink, TaskSpec};

struct Nowhere;

impl LogSink for Nowhere {
    fn line(&self, _: LogLine) {}
}

fn spec(task: &str, image: Option<&str>) -> TaskSpec {
    TaskSpec {
        run: "demo#1".into(),
        stage: "build".into(),
        task: task.into(),
        attempt: 1,
        workdir: std::env::temp_dir(),
        script: "true".into(),
        image: image.map(str::to_owned),
        env: Vec::new(),
        output_file: std::env::temp_dir().join("routed-output"),
        labels: vec![],
        cluster: None,
    }
}

async fn run(routed: &ByImage, spec: TaskSpec) -> Result<(), String> {
    let (_tx, rx) = watch::channel(None);
    routed.run(spec, Arc::new(Nowhere), rx).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn image_less_tasks_go_to_the_host_unless_the_server_has_a_default_image() {
    let (containers, host) = (FakeExecutor::new(), FakeExecutor::new());
    let routed = ByImage::new(containers.clone(), Some(host.clone()));
    run(&routed, spec("with-image", Some("busybox:1.35"))).await.unwrap();
    run(&routed, spec("no-image", None)).await.unwrap();
    assert_eq!((containers.calls_of("with-image").len(), host.calls_of("no-image").len()), (1, 1));
    assert!(routed.placement(&spec("no-image", None)).contains("the task names no image"));

    // A server default image: containers, never the host.
    let (containers, host) = (FakeExecutor::new(), FakeExecutor::new());
    let routed = ByImage::new(containers.clone(), Some(host.clone())).with_default_image(Some("busybox:1.35".into()));
    run(&routed, spec("no-image", None)).await.unwrap();
    assert_eq!((containers.calls_of("no-image").len(), host.calls().len()), (1, 0));
    let placement = routed.placement(&spec("no-image", None));
    assert!(placement.starts_with("in a container of busybox:1.35 (the server's default image"), "{placement}");

    // No host and no default image: refused, saying how to fix it.
    let routed = ByImage::new(FakeExecutor::new(), None);
    let refused = run(&routed, spec("no-image", None)).await.unwrap_err();
    assert!(refused.contains("give the task an `image` or the pipeline a `default_image`"), "{refused}");
}
