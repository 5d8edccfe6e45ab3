//! Task logs over HTTP: the whole run as one text download, a plain tail from a byte
//! offset (for scripts), and a live Server-Sent Events stream whose event ids are byte
//! offsets, so a client that reconnects with `Last-Event-ID` gets every line exactly
//! once. `{task}` is a task's name, or `@checkout` / `@run` for those logs.

use super::AppStateRef;
use super::runs::run_for;
use crate::AppState;
use crate::authz::{Action, Caller};
use crate::error::{ApiResult, AppError};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use wharf_api::runs::{LOG_SIZE_HEADER, MORE_DATA_HEADER, NEXT_OFFSET_HEADER};
use wharf_core::status::Status;
use wharf_store::RunRow;
use wharf_store::logs::{LogFiles, LogKey};

/// The most one tail or one read of the stream returns.
const CHUNK: usize = 1024 * 1024;

fn parse_run(id: &str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| AppError::NotFound(format!("run `{id}`")))
}

/// Which log `{task}` names, and the status of what writes it.
fn resolve(row: &RunRow, task: &str) -> ApiResult<(LogKey, Status)> {
    match task {
        "@run" => Ok((LogKey::Run, row.record.progress.status)),
        "@checkout" => {
            let status = row.record.checkout.as_ref().map_or(Status::Skipped, |c| c.progress.status);
            Ok((LogKey::Checkout, status))
        }
        name => row
            .record
            .stages
            .iter()
            .enumerate()
            .find_map(|(s, stage)| {
                stage
                    .tasks
                    .iter()
                    .position(|t| t.name == name)
                    .map(|t| (LogKey::Task(s, t), stage.tasks[t].progress.status))
            })
            .ok_or_else(|| AppError::NotFound(format!("task `{name}` in run #{}", row.summary.number))),
    }
}

/// `GET /runs/{id}/tasks/{task}/log?offset=N`: whole lines from byte N. Headers:
/// `X-Log-Size` (bytes so far), `X-Next-Offset`, `X-More-Data: true` while the task
/// may still write or more is stored than this answer holds.
pub async fn tail(
    State(state): AppStateRef,
    caller: Caller,
    Path((id, task)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    parse_run(&id)?;
    let row = run_for(&state, &caller, &id, Action::ViewPipeline).await?;
    let (key, status) = resolve(&row, &task)?;
    let offset = match query.get("offset") {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| AppError::invalid("bad offset", "offset", format!("`{text}` is not a byte offset")))?,
    };
    let run_id = row.summary.id;
    let size = state
        .logs
        .size(run_id, key)
        .await
        .map_err(|e| AppError::internal(format!("cannot read the log of run {run_id}"), e))?;
    if offset > size {
        return Err(AppError::invalid(
            "bad offset",
            "offset",
            format!("{offset} is past the end of the log ({size} bytes so far)"),
        ));
    }
    let bytes = state
        .logs
        .read_from(run_id, key, offset, CHUNK)
        .await
        .map_err(|e| AppError::internal(format!("cannot read the log of run {run_id}"), e))?;
    let next = offset + bytes.len() as u64;
    let more = !status.is_terminal() || next < size;
    let mut response = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(LOG_SIZE_HEADER, HeaderValue::from(size));
    headers.insert(NEXT_OFFSET_HEADER, HeaderValue::from(next));
    headers.insert(MORE_DATA_HEADER, HeaderValue::from_static(if more { "true" } else { "false" }));
    Ok(response)
}

/// `GET /runs/{id}/log`: every log of the run, in order, as one text file. Streamed:
/// each log is read [`CHUNK`] by [`CHUNK`] as the client takes it, so a download holds
/// about one chunk in memory however long the logs are.
pub async fn whole_run(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    parse_run(&id)?;
    let row = run_for(&state, &caller, &id, Action::ViewPipeline).await?;
    let record = &row.record;
    let mut sections = VecDeque::new();
    sections.push_back((format!("{} #{} {}", record.pipeline, record.number, record.progress.status), LogKey::Run));
    if let Some(c) = &record.checkout {
        sections.push_back((format!("checkout {} {}", c.repo, c.progress.status), LogKey::Checkout));
    }
    for (s, stage) in record.stages.iter().enumerate() {
        for (t, task) in stage.tasks.iter().enumerate() {
            sections.push_back((format!("{}/{} {}", stage.name, task.name, task.progress.status), LogKey::Task(s, t)));
        }
    }
    let download = Download { logs: state.logs.clone(), run_id: row.summary.id, sections, reading: None };
    let chunks = futures_util::stream::unfold(download, |mut download| async move {
        download.next().await.map(|chunk| (Ok::<_, Infallible>(chunk), download))
    });
    let disposition = format!("attachment; filename=\"{}-{}.log\"", record.pipeline, record.number);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// The whole-run download, one piece at a time: a section's title line, then its log
/// in whole lines of at most [`CHUNK`] bytes, then the next section.
struct Download {
    logs: LogFiles,
    run_id: i64,
    /// Sections not begun yet: title and log.
    sections: VecDeque<(String, LogKey)>,
    /// The log being read and the offset reached.
    reading: Option<(LogKey, u64)>,
}

impl Download {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let Some((key, offset)) = self.reading else {
                let (title, key) = self.sections.pop_front()?;
                self.reading = Some((key, 0));
                return Some(Bytes::from(format!("===== {title} =====\n")));
            };
            let (logs, run_id) = (self.logs.clone(), self.run_id);
            // A file is read on a blocking thread; the database is asked asynchronously.
            let read = if logs.is_database() {
                Ok(logs.read_from(run_id, key, offset, CHUNK).await)
            } else {
                tokio::task::spawn_blocking(move || {
                    tokio::runtime::Handle::current().block_on(logs.read_from(run_id, key, offset, CHUNK))
                })
                .await
            };
            match read {
                Ok(Ok(chunk)) if !chunk.is_empty() => {
                    self.reading = Some((key, offset + chunk.len() as u64));
                    return Some(Bytes::from(chunk));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(run = run_id, ?key, error = %e, "cannot read a log for the download"),
                Err(e) => tracing::warn!(run = run_id, ?key, error = %e, "reading a log for the download failed"),
            }
            // This log is done (or unreadable): on to the next section.
            self.reading = None;
        }
    }
}

struct Follow {
    state: Arc<AppState>,
    run_id: i64,
    key: LogKey,
    task: String,
    offset: u64,
    lines: VecDeque<(u64, String)>,
    ended: bool,
    /// The live log this reader waits on (logs in the database).
    watch: Option<tokio::sync::watch::Receiver<wharf_lifecycle::live::LogState>>,
}

impl Follow {
    /// The next event: a line (id = the byte offset after it), or `end` once the log
    /// is complete.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some((id, line)) = self.lines.pop_front() {
                // CR would end the SSE field early; the stored log keeps it.
                return Some(Event::default().id(id.to_string()).data(line.replace('\r', " ")));
            }
            if self.ended {
                return None;
            }
            let chunk = self.state.logs.read_from(self.run_id, self.key, self.offset, CHUNK).await.unwrap_or_default();
            if !chunk.is_empty() {
                let mut at = self.offset;
                for line in chunk.split_inclusive(|b| *b == b'\n') {
                    at += line.len() as u64;
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    self.lines.push_back((at, text));
                }
                self.offset = at;
                continue;
            }
            // Nothing new: wait for the writer, or finish if it is done.
            match self.state.runs.live().subscribe(self.run_id, self.key) {
                _ if self.state.logs.is_database() => self.wait_in_database().await,
                Some(mut rx) => {
                    let state = *rx.borrow_and_update();
                    if state.closed && state.size <= self.offset {
                        self.ended = true;
                    } else if state.size <= self.offset {
                        let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
                    }
                }
                None => {
                    // Not being written by this process: over, or not started yet.
                    let done = self.task_ended().await;
                    if done && self.state.logs.size(self.run_id, self.key).await.unwrap_or(0) <= self.offset {
                        self.ended = true;
                    } else if !done {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
            if self.ended {
                return Some(Event::default().event("end").data(""));
            }
        }
    }
}

impl Follow {
    /// Whether what writes this log has ended, by the stored record (or the run is gone).
    async fn task_ended(&self) -> bool {
        match self.state.store.run(self.run_id).await {
            Ok(row) => resolve(&row, &self.task).map_or(true, |(_, status)| status.is_terminal()),
            Err(_) => true,
        }
    }

    /// Nothing new in the database: the log is complete when the stored record says
    /// its task ended (records are stored after the lines before them) and nothing was
    /// added since; else wait until a replica says the log grew, this process's writer
    /// closed it, or [`RECHECK`] passed (a lost notice costs at most that).
    async fn wait_in_database(&mut self) {
        let mut rx = self.watch.take().unwrap_or_else(|| self.state.runs.live().watch(self.run_id, self.key));
        let seen = *rx.borrow_and_update();
        if self.task_ended().await
            && self.state.logs.size(self.run_id, self.key).await.is_ok_and(|size| size <= self.offset)
        {
            self.ended = true;
            return;
        }
        // Closed here but not yet stored as ended: the record follows within a save
        // period.
        let wait = if seen.closed { Duration::from_millis(50) } else { RECHECK };
        if let Ok(Err(_)) = tokio::time::timeout(wait, rx.changed()).await {
            // The run's logs were forgotten here (it ended): watch afresh next time.
            tokio::time::sleep(wait).await;
            return;
        }
        self.watch = Some(rx);
    }
}

/// The longest a reader of a log in the database waits without a notice before it
/// looks again.
const RECHECK: Duration = Duration::from_secs(1);

/// `GET /runs/{id}/tasks/{task}/log/stream`: the log as Server-Sent Events, live.
pub async fn stream(
    State(state): AppStateRef,
    caller: Caller,
    Path((id, task)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    parse_run(&id)?;
    let row = run_for(&state, &caller, &id, Action::ViewPipeline).await?;
    let (key, _) = resolve(&row, &task)?;
    let resume =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or(query.get("offset").cloned());
    let offset = match resume {
        None => 0,
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            AppError::invalid("bad resume point", "Last-Event-ID", format!("`{text}` is not a byte offset"))
        })?,
    };
    let follow = Follow {
        state: state.clone(),
        run_id: row.summary.id,
        key,
        task,
        offset,
        lines: VecDeque::new(),
        ended: false,
        watch: None,
    };
    let events = futures_util::stream::unfold(follow, |mut follow| async move {
        follow.next().await.map(|event| (Ok::<_, Infallible>(event), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
