//! The Docker executor: a `script` task runs as `sh -e -c <script>` in a container of
//! its image, one container per attempt, over the Docker Engine API (no docker CLI).
//!
//! Start with [`DockerExecutor`]; one attempt's lifecycle is `run_script` (create,
//! start, then `supervise`), taking over a container an earlier server process
//! started is `adopt_container`, and `supervise` holds the rules every attempt ends
//! by: logs read from the daemon with its timestamps until the container exits,
//! stop as SIGTERM then SIGKILL after the grace, the exit code from the daemon, and
//! the container removed in every outcome.
//!
//! Paths: the run's workspace (`TaskSpec::workdir`) and the directory of
//! `$WHARF_OUTPUT` are bind-mounted at the same paths inside the container, so every
//! path the engine hands a task means the same inside as outside.
//!
//! Re-attach: containers are not auto-removed, so one that ends while no server
//! watches keeps its exit code and its log until a restarted server adopts it
//! ([`Executor::adopt`]) or discards it ([`Executor::discard`]). The labels that find
//! them are the spec's (`TaskSpec::labels`) plus [`LABEL_RUN`], [`LABEL_STAGE`],
//! [`LABEL_TASK`] and [`LABEL_ATTEMPT`]. Labels are never passed as environment
//! variables: the server's sweep of leftover host processes reads those, and container
//! processes are visible to it.

mod lines;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use lines::{LineBuffer, Skipping, split_timestamp};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use wharf_executor::{
    AttemptId, BoxFuture, Executor, ExecutorError, Exit, Leftover, LogLine, LogResume, LogSink, StopReason,
    StopRequest, StopSignal, Stream, TaskSpec,
};

/// `<pipeline>#<number>`.
pub const LABEL_RUN: &str = "wharf.run";
pub const LABEL_STAGE: &str = "wharf.stage";
pub const LABEL_TASK: &str = "wharf.task";
/// `1` for the first attempt.
pub const LABEL_ATTEMPT: &str = "wharf.attempt";

/// The default socket of the Docker Engine.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Seconds an API request may take to answer (log streams run longer: the limit is
/// on the response's start).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How long log lines are still read after the container has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Registry credentials by host (`registry.example.com`, `127.0.0.1:5000`,
/// `docker.io`): the server answers from its registered registries. Asked only when
/// an image has to be pulled, so a lookup may read a database.
pub trait Credentials: Send + Sync {
    /// `(username, password)` for pulling from `host`, if any are known.
    fn for_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<(String, String)>>;
}

/// Credentials from a fixed table.
#[derive(Clone, Default)]
pub struct StaticCredentials(pub BTreeMap<String, (String, String)>);

impl Credentials for StaticCredentials {
    fn for_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<(String, String)>> {
        let found = self.0.get(host).cloned();
        Box::pin(async move { found })
    }
}

/// Passwords stay out of `Debug`.
impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(host, (user, _))| (host, user))).finish()
    }
}

/// How the Docker executor reaches the daemon and sets up containers.
#[derive(Clone, Default)]
pub struct DockerConfig {
    /// `unix:///path/to/docker.sock` (or a bare path); default [`DEFAULT_SOCKET`].
    pub socket: Option<String>,
    /// The containers' network mode (`bridge`, `host`, `none`, a network's name);
    /// default: the daemon's (`bridge`).
    pub network: Option<String>,
    /// The image of tasks that name none (the engine already applies the pipeline's
    /// `default_image`); without one, such a task fails with a clear error.
    pub default_image: Option<String>,
    /// Credentials for pulling images, by registry host.
    pub credentials: Option<Arc<dyn Credentials>>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("socket", &self.socket)
            .field("network", &self.network)
            .field("default_image", &self.default_image)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .finish()
    }
}

/// The daemon could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Docker Engine at {socket}: {source}")]
pub struct ConnectError {
    pub socket: String,
    #[source]
    pub source: BollardError,
}

fn connect(socket: &str) -> Result<Docker, ConnectError> {
    let path = socket.strip_prefix("unix://").unwrap_or(socket);
    Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        .map_err(|source| ConnectError { socket: socket.to_owned(), source })
}

/// Whether a Docker Engine answers on `socket` (default [`DEFAULT_SOCKET`]) within
/// two seconds: what decides the server's default executor.
pub async fn docker_available(socket: Option<&str>) -> bool {
    let Ok(docker) = connect(socket.unwrap_or(DEFAULT_SOCKET)) else { return false };
    matches!(tokio::time::timeout(Duration::from_secs(2), docker.ping()).await, Ok(Ok(_)))
}

/// Runs `script` tasks in containers. Cheap to share: one instance serves concurrent
/// `run` calls.
pub struct DockerExecutor {
    docker: Docker,
    config: DockerConfig,
}

impl fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerExecutor").field("config", &self.config).finish()
    }
}

impl DockerExecutor {
    /// Sets up the client; nothing is sent to the daemon yet (see [`docker_available`]).
    pub fn new(config: DockerConfig) -> Result<Self, ConnectError> {
        let docker = connect(config.socket.as_deref().unwrap_or(DEFAULT_SOCKET))?;
        Ok(DockerExecutor { docker, config })
    }

    /// The Docker client, for tests and tools that look at what the executor did.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn run_script(
        &self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> Result<Exit, ExecutorError> {
        let logs = &*logs;
        let already = *stop.borrow_and_update();
        if let Some(request) = already {
            system(logs, format!("not started: {} before it began", request.reason));
            return Ok(Exit { code: None, signal: None, stopped: Some(request.reason) });
        }
        let image = match spec.image.clone().or_else(|| self.config.default_image.clone()) {
            Some(image) => image,
            None => {
                return Err(start_error(format!(
                    "task `{}` names no image: give it `image:` (or the pipeline `default_image:`) to run it on \
                     the docker executor",
                    spec.task
                )));
            }
        };
        let body = self.container_body(&spec, &image);
        let id = match self.docker.create_container(None, body.clone()).await {
            Ok(created) => created.id,
            Err(e) if is_no_such_image(&e) => {
                self.pull(&image, logs).await?;
                self.docker
                    .create_container(None, body)
                    .await
                    .map_err(|e| start_error(format!("cannot create a container of {image}: {}", reason(&e))))?
                    .id
            }
            Err(e) => return Err(start_error(format!("cannot create a container of {image}: {}", reason(&e)))),
        };
        // From here on the guard removes the container, whatever happens.
        let mut container = Container::new(self.docker.clone(), id);
        if let Err(e) = self.docker.start_container(&container.id, None).await {
            container.remove().await;
            return Err(start_error(format!("cannot start a container of {image}: {}", reason(&e))));
        }
        let exit = self.supervise(&container, logs, &mut stop, LogResume::default()).await;
        container.remove().await;
        exit
    }

    async fn adopt_container(
        &self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
        resume: LogResume,
    ) -> Result<Option<Exit>, ExecutorError> {
        let mut filters: Vec<String> = spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        filters.extend(own_labels(&spec).into_iter().map(|(k, v)| format!("{k}={v}")));
        let found = self.list(filters).await?;
        let Some((first, _)) = found.first() else { return Ok(None) };
        // Two containers for one attempt cannot come from Wharf; keep the first.
        for (extra, _) in &found[1..] {
            let _ = self.discard_container(extra).await;
        }
        let mut container = Container::new(self.docker.clone(), first.clone());
        // Created but never started (the server died in between): start it now; its
        // attempt had not begun.
        let inspected = self.docker.inspect_container(&container.id, None).await;
        let never_started = inspected.as_ref().ok().and_then(|i| i.state.as_ref()).and_then(|s| s.status)
            == Some(bollard::models::ContainerStateStatusEnum::CREATED);
        if never_started {
            system(&*logs, "the server restarted before the container started; starting it now".to_owned());
            if let Err(e) = self.docker.start_container(&container.id, None).await {
                container.remove().await;
                return Err(start_error(format!("cannot start container {}: {}", container.id, reason(&e))));
            }
        } else {
            system(&*logs, "the server restarted; took over the container and resumed its log".to_owned());
        }
        let exit = self.supervise(&container, &*logs, &mut stop, resume).await;
        container.remove().await;
        exit.map(Some)
    }

    fn container_body(&self, spec: &TaskSpec, image: &str) -> ContainerCreateBody {
        let workdir = spec.workdir.display().to_string();
        let mut mounts = vec![bind(&spec.workdir)];
        if let Some(outputs) = spec.output_file.parent()
            && !outputs.starts_with(&spec.workdir)
        {
            mounts.push(bind(outputs));
        }
        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        labels.extend(own_labels(spec));
        ContainerCreateBody {
            image: Some(image.to_owned()),
            // The script is one argument of `sh`: never pasted into another command line.
            entrypoint: Some(vec!["/bin/sh".to_owned()]),
            cmd: Some(vec!["-e".to_owned(), "-c".to_owned(), spec.script.clone()]),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(workdir),
            labels: Some(labels),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            open_stdin: Some(false),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                network_mode: self.config.network.clone(),
                // A real init as PID 1: a shell there ignores SIGTERM, and it reaps
                // what the script leaves behind.
                init: Some(true),
                // The executor reads logs back from the daemon (also after a restart),
                // which needs a driver that keeps them.
                log_config: Some(HostConfigLogConfig { typ: Some("json-file".to_owned()), config: None }),
                auto_remove: Some(false),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }

    /// Pulls `image`, with the credentials of its registry when there are some.
    async fn pull(&self, image: &str, logs: &dyn LogSink) -> Result<(), ExecutorError> {
        let host = registry_host(image);
        let found = match &self.config.credentials {
            Some(lookup) => lookup.for_host(&host).await,
            None => None,
        };
        let credentials = found.map(|(user, password)| DockerCredentials {
            username: Some(user),
            password: Some(password),
            serveraddress: Some(host.clone()),
            ..DockerCredentials::default()
        });
        let auth = if credentials.is_some() { format!(" with the credentials for {host}") } else { String::new() };
        system(logs, format!("pulling {image}{auth}"));
        let (name, tag) = split_tag(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(name);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let mut progress = self.docker.create_image(Some(options.build()), None, credentials);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                return Err(start_error(format!("cannot pull image {image}: {}", reason(&e))));
            }
        }
        system(logs, format!("pulled {image}"));
        Ok(())
    }

    /// The containers (any state) matching every `label` filter (`key` or
    /// `key=value`): their ids and labels.
    async fn list(&self, label_filters: Vec<String>) -> Result<Vec<(String, HashMap<String, String>)>, ExecutorError> {
        let filters = HashMap::from([("label".to_owned(), label_filters)]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| start_error(format!("cannot list containers: {}", reason(&e))))?;
        Ok(containers.into_iter().filter_map(|c| Some((c.id?, c.labels.unwrap_or_default()))).collect())
    }

    /// The containers carrying the label `label`, owned by its value, with the attempt
    /// their own labels name.
    async fn leftover_containers(&self, label: &str) -> Result<Vec<Leftover>, ExecutorError> {
        let found = self.list(vec![label.to_owned()]).await?;
        Ok(found
            .into_iter()
            .filter_map(|(id, labels)| {
                let attempt = (|| {
                    Some(AttemptId {
                        stage: labels.get(LABEL_STAGE)?.clone(),
                        task: labels.get(LABEL_TASK)?.clone(),
                        attempt: labels.get(LABEL_ATTEMPT)?.parse().ok()?,
                    })
                })();
                Some(Leftover { id, owner: labels.get(label)?.clone(), attempt })
            })
            .collect())
    }

    async fn discard_container(&self, id: &str) -> Result<(), ExecutorError> {
        match self.docker.remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(start_error(format!("cannot remove container {id}: {}", reason(&e)))),
        }
    }

    /// Reads the container's log until it ends while acting on stop requests, then
    /// asks the daemon how it ended.
    async fn supervise(
        &self,
        container: &Container,
        logs: &dyn LogSink,
        stop: &mut StopSignal,
        resume: LogResume,
    ) -> Result<Exit, ExecutorError> {
        let since = i32::try_from(resume.since_second).unwrap_or(0).max(0);
        let options =
            LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).timestamps(true).since(since).build();
        let mut frames = self.docker.logs(&container.id, Some(options));
        let mut out = Skipping { sink: logs, skip: resume.skip_lines };
        let mut buffers = [LineBuffer::default(), LineBuffer::default()];
        let mut stopping: Option<Stopping> = None;
        let mut watching = true;
        // A stop that came before we got here (an adopted task of a stopped run).
        let already = *stop.borrow_and_update();
        if let Some(request) = already {
            self.begin_or_hurry_stop(container, request, &mut stopping, logs).await;
        }
        let mut log_error = None;
        // The last message's timestamp and how many messages carried it.
        let mut last: Option<(jiff::Timestamp, usize)> = None;
        loop {
            let kill_at = stopping.as_ref().and_then(|s| s.kill_at);
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(output)) => {
                        let Some((slot, stream)) = frame_slot(&output) else { continue };
                        let bytes = output.into_bytes();
                        let (at, text) = split_timestamp(&bytes);
                        last = Some(match last {
                            Some((l, n)) if l == at => (l, n + 1),
                            _ => (at, 1),
                        });
                        buffers[slot].push(at, text, stream, &mut |line| out.line(line));
                    }
                    Some(Err(e)) => {
                        log_error = Some(reason(&e));
                        break;
                    }
                    None => break,
                },
                changed = stop.changed(), if watching => match changed {
                    Ok(()) => {
                        let request = *stop.borrow_and_update();
                        if let Some(request) = request {
                            self.begin_or_hurry_stop(container, request, &mut stopping, logs).await;
                        }
                    }
                    Err(_) => watching = false,
                },
                () = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                    if let Some(s) = stopping.as_mut()
                        && let Some(planned) = s.kill_at.take()
                    {
                        let waited = Duration::from_millis(u64::try_from((planned - s.term_sent).as_millis()).unwrap_or(u64::MAX));
                        match self.kill(container, "SIGKILL").await {
                            Ok(()) => system(logs, format!("did not exit within {waited:?} of SIGTERM; sent SIGKILL")),
                            Err(e) => system(logs, format!("could not send SIGKILL: {e}")),
                        }
                    }
                }
            }
        }
        if log_error.is_none() {
            // The follow stream can end before the daemon stored the container's last
            // message (seen with a last line without a newline): read what came after
            // the last message received, once, now that the container has ended.
            let since = last.map_or(since, |(at, _)| i32::try_from(at.as_second()).unwrap_or(since));
            let options = LogsOptionsBuilder::new().stdout(true).stderr(true).timestamps(true).since(since).build();
            let mut again = self.docker.logs(&container.id, Some(options));
            let mut seen = last;
            while let Some(Ok(output)) = again.next().await {
                let Some((slot, stream)) = frame_slot(&output) else { continue };
                let bytes = output.into_bytes();
                let (at, text) = split_timestamp(&bytes);
                match &mut seen {
                    Some((l, _)) if at < *l => continue,
                    Some((l, n)) if at == *l && *n > 0 => {
                        *n -= 1;
                        continue;
                    }
                    _ => {}
                }
                buffers[slot].push(at, text, stream, &mut |line| out.line(line));
            }
        }
        buffers[0].finish(Stream::Stdout, &mut |line| out.line(line));
        buffers[1].finish(Stream::Stderr, &mut |line| out.line(line));
        if let Some(why) = log_error {
            system(logs, format!("reading the container's log failed: {why}"));
        }
        let state = self.wait_ended(container, stop, &mut stopping, logs).await?;
        let stopped = stopping.map(|s| s.reason);
        let code = state.exit_code.and_then(|c| i32::try_from(c).ok());
        if state.oom_killed == Some(true) {
            system(logs, "the container ran out of memory and was killed".to_owned());
        }
        if let Some(error) = state.error.filter(|e| !e.is_empty()) {
            system(logs, format!("the Docker Engine reports: {error}"));
        }
        Ok(match (stopped, code) {
            // tini reports a child killed by signal N as 128 + N.
            (Some(reason), Some(code @ 129..=159)) => {
                Exit { code: None, signal: Some(code - 128), stopped: Some(reason) }
            }
            (stopped, code) => Exit { code, signal: None, stopped },
        })
    }

    /// The container's final state. The log stream ends when the container does; if
    /// it ended early (a daemon error), polls until the container has exited, still
    /// honouring stop requests.
    async fn wait_ended(
        &self,
        container: &Container,
        stop: &mut StopSignal,
        stopping: &mut Option<Stopping>,
        logs: &dyn LogSink,
    ) -> Result<bollard::models::ContainerState, ExecutorError> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let inspected = self
                .docker
                .inspect_container(&container.id, None)
                .await
                .map_err(|e| start_error(format!("cannot inspect container {}: {}", container.id, reason(&e))))?;
            let state = inspected.state.unwrap_or_default();
            if state.running != Some(true) {
                return Ok(state);
            }
            let request = *stop.borrow_and_update();
            if let Some(request) = request {
                self.begin_or_hurry_stop(container, request, stopping, logs).await;
            }
            if let Some(s) = stopping.as_mut()
                && s.kill_at.is_some_and(|at| at <= Instant::now())
            {
                s.kill_at = None;
                let _ = self.kill(container, "SIGKILL").await;
            }
            if Instant::now() > deadline {
                // Still running with no log stream: keep waiting, slower.
                tokio::time::sleep(Duration::from_millis(500)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn begin_or_hurry_stop(
        &self,
        container: &Container,
        request: StopRequest,
        stopping: &mut Option<Stopping>,
        logs: &dyn LogSink,
    ) {
        let now = Instant::now();
        let reason = request.reason;
        match stopping {
            None => {
                match self.kill(container, "SIGTERM").await {
                    Ok(()) => system(logs, format!("stopping: sent SIGTERM to the container (reason: {reason})")),
                    Err(e) => system(logs, format!("stopping (reason: {reason}): could not send SIGTERM: {e}")),
                }
                *stopping =
                    Some(Stopping { reason: request.reason, term_sent: now, kill_at: Some(now + request.grace) });
            }
            Some(Stopping { kill_at: Some(kill_at), .. }) => {
                let sooner = now + request.grace;
                if sooner < *kill_at {
                    *kill_at = sooner;
                    let when =
                        if request.grace.is_zero() { "now".to_owned() } else { format!("in {:?}", request.grace) };
                    system(logs, format!("stop requested again (reason: {reason}); SIGKILL {when}"));
                }
            }
            Some(_) => {}
        }
    }

    /// Sends a signal; a container that is no longer running is fine.
    async fn kill(&self, container: &Container, signal: &str) -> Result<(), String> {
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        match self.docker.kill_container(&container.id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(reason(&e)),
        }
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn placement(&self, spec: &TaskSpec) -> String {
        let image = spec.image.as_deref().or(self.config.default_image.as_deref()).unwrap_or("(no image)");
        match self.config.network.as_deref() {
            Some(network) => format!("in a container of {image} (network {network})"),
            None => format!("in a container of {image}"),
        }
    }

    fn supports(&self, task_type: &str) -> Result<(), ExecutorError> {
        match task_type {
            "script" => Ok(()),
            other => Err(ExecutorError::Unsupported(format!(
                "task type `{other}` does not run on the docker executor, which runs `script` tasks"
            ))),
        }
    }

    fn run<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<Exit, ExecutorError>> {
        Box::pin(self.run_script(spec, logs, stop))
    }

    fn adopt<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
        resume: LogResume,
    ) -> BoxFuture<'a, Result<Option<Exit>, ExecutorError>> {
        Box::pin(self.adopt_container(spec, logs, stop, resume))
    }

    fn leftovers<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<Leftover>, ExecutorError>> {
        Box::pin(self.leftover_containers(label))
    }

    fn discard<'a>(&'a self, leftover: &'a Leftover) -> BoxFuture<'a, Result<(), ExecutorError>> {
        Box::pin(self.discard_container(&leftover.id))
    }
}

/// A stop being carried out: SIGTERM went out at `term_sent`, SIGKILL follows at
/// `kill_at` (`None` once it went out).
struct Stopping {
    reason: StopReason,
    term_sent: Instant,
    kill_at: Option<Instant>,
}

/// A container of one attempt. Dropped before [`Container::remove`] ran (the `run`
/// future was cancelled), it is force-removed in the background, so nothing outlives
/// `run` even then.
struct Container {
    docker: Docker,
    id: String,
    removed: bool,
}

impl Container {
    fn new(docker: Docker, id: String) -> Self {
        Container { docker, id, removed: false }
    }

    async fn remove(&mut self) {
        self.removed = true;
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        // A failure here leaves a labelled container, which the next start discards.
        let _ = self.docker.remove_container(&self.id, Some(options)).await;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let id = std::mem::take(&mut self.id);
            handle.spawn(async move {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = docker.remove_container(&id, Some(options)).await;
            });
        }
    }
}

fn own_labels(spec: &TaskSpec) -> [(String, String); 4] {
    [
        (LABEL_RUN.to_owned(), spec.run.clone()),
        (LABEL_STAGE.to_owned(), spec.stage.clone()),
        (LABEL_TASK.to_owned(), spec.task.clone()),
        (LABEL_ATTEMPT.to_owned(), spec.attempt.to_string()),
    ]
}

fn bind(path: &Path) -> Mount {
    let path = path.display().to_string();
    Mount { target: Some(path.clone()), source: Some(path), typ: Some(MountType::BIND), ..Mount::default() }
}

/// The registry host an image reference names: its first component when that looks
/// like a host (has a `.` or a `:`, or is `localhost`), else Docker Hub's.
pub fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_owned(),
        _ => "docker.io".to_owned(),
    }
}

/// `name[:tag]` → (name, tag); a digest reference stays whole.
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rsplit_once(':') {
        // A colon before the last slash is a registry port, not a tag.
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    }
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_no_such_image(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, message } if message.contains("No such image"))
}

/// The daemon's own words when it gave some.
fn reason(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        BollardError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

fn start_error(message: String) -> ExecutorError {
    ExecutorError::Start { message, source: None }
}

fn system(logs: &dyn LogSink, text: String) {
    logs.line(LogLine::system(text));
}

/// A log frame's buffer slot and stream (`None`: stdin, never logged).
fn frame_slot(output: &bollard::container::LogOutput) -> Option<(usize, Stream)> {
    use bollard::container::LogOutput;
    match output {
        LogOutput::StdOut { .. } | LogOutput::Console { .. } => Some((0, Stream::Stdout)),
        LogOutput::StdErr { .. } => Some((1, Stream::Stderr)),
        LogOutput::StdIn { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_and_tags() {
        assert_eq!(registry_host("busybox:1.36"), "docker.io");
        assert_eq!(registry_host("library/busybox"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5055/devops/app:1"), "127.0.0.1:5055");
        assert_eq!(registry_host("registry.example.com/app"), "registry.example.com");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(split_tag("127.0.0.1:5055/devops/app:1"), ("127.0.0.1:5055/devops/app", Some("1")));
        assert_eq!(split_tag("127.0.0.1:5055/devops/app"), ("127.0.0.1:5055/devops/app", None));
        assert_eq!(split_tag("busybox"), ("busybox", None));
        assert_eq!(split_tag("app@sha256:abc"), ("app@sha256:abc", None));
    }
}
