//! One executor in front of two: tasks that name an image go to a container executor
//! (Docker), tasks without one to the host executor where the server allows host
//! execution (DESIGN.md §3: "a `script` task without `image` uses the pipeline's
//! `default_image` when one is set; otherwise it runs on the host executor where the
//! server allows host execution"), or fail with a clear error where it does not.

use crate::{BoxFuture, Executor, ExecutorError, Exit, Leftover, LogResume, LogSink, StopSignal, TaskSpec};
use std::sync::Arc;

pub struct ByImage {
    containers: Arc<dyn Executor>,
    host: Option<Arc<dyn Executor>>,
    /// The server's default image, which the container executor gives image-less tasks.
    default_image: Option<String>,
}

impl ByImage {
    /// `host: None` refuses tasks without an image.
    pub fn new(containers: Arc<dyn Executor>, host: Option<Arc<dyn Executor>>) -> Self {
        ByImage { containers, host, default_image: None }
    }

    /// Image-less tasks run in containers of `image` (the server's default image, which
    /// the container executor applies), never on the host: an administrator who set a
    /// default image asked for containers.
    pub fn with_default_image(mut self, image: Option<String>) -> Self {
        self.default_image = image;
        self
    }

    fn pick(&self, spec: &TaskSpec) -> Result<&dyn Executor, ExecutorError> {
        match (&spec.image, &self.host) {
            (Some(_), _) => Ok(self.containers.as_ref()),
            (None, _) if self.default_image.is_some() => Ok(self.containers.as_ref()),
            (None, Some(host)) => Ok(host.as_ref()),
            (None, None) => Err(ExecutorError::Unsupported(format!(
                "task `{}` names no image and this server does not run scripts on the host; \
                 give the task an `image` or the pipeline a `default_image`",
                spec.task
            ))),
        }
    }
}

impl Executor for ByImage {
    fn name(&self) -> &'static str {
        self.containers.name()
    }

    fn supports(&self, task_type: &str) -> Result<(), ExecutorError> {
        self.containers.supports(task_type)
    }

    fn placement(&self, spec: &TaskSpec) -> String {
        match self.pick(spec) {
            Ok(_) if spec.image.is_none() && self.default_image.is_some() => format!(
                "in a container of {} (the server's default image: the task names no image and the pipeline no \
                 default_image)",
                self.default_image.as_deref().unwrap_or_default()
            ),
            Ok(executor) if spec.image.is_none() => {
                format!("{} (the task names no image and the pipeline no default_image)", executor.placement(spec))
            }
            Ok(executor) => executor.placement(spec),
            Err(e) => e.to_string(),
        }
    }

    fn run<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<Exit, ExecutorError>> {
        match self.pick(&spec) {
            Ok(executor) => executor.run(spec, logs, stop),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }

    fn adopt<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
        resume: LogResume,
    ) -> BoxFuture<'a, Result<Option<Exit>, ExecutorError>> {
        match self.pick(&spec) {
            Ok(executor) => executor.adopt(spec, logs, stop, resume),
            Err(_) => Box::pin(async { Ok(None) }),
        }
    }

    fn leftovers<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<Leftover>, ExecutorError>> {
        self.containers.leftovers(label)
    }

    fn discard<'a>(&'a self, leftover: &'a Leftover) -> BoxFuture<'a, Result<(), ExecutorError>> {
        self.containers.discard(leftover)
    }

    fn run_ended<'a>(&'a self, run: &'a crate::RunEnd) -> BoxFuture<'a, ()> {
        self.containers.run_ended(run)
    }

    /// Tasks without an image go to the host (or are refused there when it is off).
    fn runs_on_host(&self, image: Option<&str>) -> bool {
        image.is_none() || self.containers.runs_on_host(image)
    }
}
