//! `wharf logs RUN [TASK] [-f]`: a run's logs, whole or one task's, and live over
//! Server-Sent Events (resumed from the last event's id after a dropped connection).

use super::http::Unreachable;
use super::runs::{follow_run, outcome_line};
use super::{Client, Conn, with_query, write_out};
use anyhow::{Result, bail};
use reqwest::Method;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use wharf_api::runs::{LOG_SIZE_HEADER, NEXT_OFFSET_HEADER};

/// How long a follower keeps trying to get back to a server that went away.
pub(super) const PATIENCE: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The run: `PIPELINE#N` (`hello#3`) or its id.
    pub run: String,
    /// One task's log (or `@checkout`, `@run`) instead of the whole run's.
    pub task: Option<String>,
    /// Follow the log live until the task (or the run) ends.
    #[arg(short, long)]
    pub follow: bool,
}

pub async fn logs(args: LogsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    let id = client.run(&args.run).await?.id as u64;
    let run = id.to_string();
    match (args.task, args.follow) {
        (None, false) => {
            let (_, body) = client.bytes(client.url(&["runs", &run, "log"])).await?;
            write_out(&body)?;
        }
        (Some(task), false) => {
            let mut offset = 0u64;
            loop {
                let url =
                    with_query(client.url(&["runs", &run, "tasks", &task, "log"]), &[("offset", offset.to_string())]);
                let (headers, body) = client.bytes(url).await?;
                write_out(&body)?;
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let size = header(LOG_SIZE_HEADER).unwrap_or(0);
                let next = header(NEXT_OFFSET_HEADER).unwrap_or(offset + body.len() as u64);
                if body.is_empty() || next >= size {
                    break;
                }
                offset = next;
            }
        }
        (Some(task), true) => {
            let mut out = std::io::stdout();
            stream_log(&client, id, &task, |line| {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            })
            .await?;
        }
        (None, true) => {
            let record = follow_run(&client, id).await?;
            println!("{}", outcome_line(&record));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A stored log line (`<time> <out|err|sys> <text>`) as `wharf run` shows it.
pub(super) fn shown_line(line: &str) -> String {
    match wharf_executor::stored::parse(line.as_bytes()) {
        Some(stored) if stored.stream == wharf_executor::Stream::System => {
            format!("· {}", String::from_utf8_lossy(stored.text))
        }
        Some(stored) => String::from_utf8_lossy(stored.text).into_owned(),
        None => line.to_owned(),
    }
}

/// One event of a Server-Sent Events stream.
#[derive(Debug, PartialEq)]
struct SseEvent {
    event: String,
    data: String,
    id: Option<String>,
}

/// Turns the bytes of a Server-Sent Events stream into events, whatever the chunking.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
    event: Option<String>,
    id: Option<String>,
    pending: bool,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let mut raw: Vec<u8> = self.buf.drain(..=end).collect();
            raw.pop();
            if raw.last() == Some(&b'\r') {
                raw.pop();
            }
            let line = String::from_utf8_lossy(&raw);
            if line.is_empty() {
                if self.pending {
                    out.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data: std::mem::take(&mut self.data).join("\n"),
                        id: self.id.clone(),
                    });
                    self.pending = false;
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => self.data.push(value.to_owned()),
                "event" => self.event = Some(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                _ => continue,
            }
            self.pending = true;
        }
        out
    }
}

/// Follows a task's log through the SSE endpoint until its `end` event, handing each
/// line to `sink`. A dropped connection is taken up again from the last event's id
/// (`Last-Event-ID`), so no line is lost or repeated.
pub(super) async fn stream_log(client: &Client, run: u64, task: &str, mut sink: impl FnMut(String)) -> Result<()> {
    let url = client.url(&["runs", &run.to_string(), "tasks", task, "log", "stream"]);
    let mut last_id: Option<String> = None;
    let mut since_progress = tokio::time::Instant::now();
    let mut warned = false;
    let mut connected = false;
    let mut empty_answers = 0;
    loop {
        let mut request = client.request(Method::GET, url.clone()).header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id.as_str());
        }
        match client.send(request).await {
            Ok(mut response) => {
                connected = true;
                let mut parser = SseParser::default();
                let mut got_any = false;
                while let Ok(Some(bytes)) = response.chunk().await {
                    got_any = true;
                    empty_answers = 0;
                    since_progress = tokio::time::Instant::now();
                    for event in parser.feed(&bytes) {
                        if event.event == "end" {
                            return Ok(());
                        }
                        if event.event == "message" {
                            sink(event.data);
                        }
                        if event.id.is_some() {
                            last_id = event.id;
                        }
                    }
                }
                // The connection ended before the log did: take it up again, unless the
                // server keeps answering with nothing at all.
                if !got_any {
                    empty_answers += 1;
                    if empty_answers >= 20 {
                        bail!("the server keeps ending the log stream of `{task}` without sending anything");
                    }
                }
            }
            // Patience only for a server that was there a moment ago.
            Err(e) if e.downcast_ref::<Unreachable>().is_some() && connected => {
                if since_progress.elapsed() > PATIENCE {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        if !warned && since_progress.elapsed() > Duration::from_secs(2) {
            eprintln!("lost the log stream of `{task}`; reconnecting…");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A finished log, whole, through the plain tail endpoint.
pub(super) async fn whole_log(client: &Client, run: u64, task: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let url = with_query(
            client.url(&["runs", &run.to_string(), "tasks", task, "log"]),
            &[("offset", out.len().to_string())],
        );
        let (headers, body) = client.bytes(url).await?;
        let size = headers.get(LOG_SIZE_HEADER).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()).unwrap_or(0);
        out.extend_from_slice(&body);
        if body.is_empty() || out.len() >= size {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_survive_any_chunking() {
        let stream = b"id: 10\ndata: first line\n\n: keep-alive\n\nid: 25\ndata: second\r\n\r\nevent: end\ndata: \n\n";
        let whole = SseParser::default().feed(stream);
        for size in 1..stream.len() {
            let mut parser = SseParser::default();
            let events: Vec<SseEvent> = stream.chunks(size).flat_map(|c| parser.feed(c)).collect();
            assert_eq!(events, whole, "chunks of {size}");
        }
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], SseEvent { event: "message".into(), data: "first line".into(), id: Some("10".into()) });
        assert_eq!(whole[1].data, "second");
        assert_eq!(whole[1].id.as_deref(), Some("25"));
        assert_eq!(whole[2].event, "end");
    }

    #[test]
    fn a_half_received_event_is_not_delivered() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"id: 5\ndata: par").is_empty());
    }

    #[test]
    fn stored_lines_show_as_wharf_run_shows_them() {
        assert_eq!(shown_line("2025-01-02T03:04:05.678Z out hello world"), "hello world");
        assert_eq!(shown_line("2025-01-02T03:04:05.678Z sys exit code 0"), "· exit code 0");
        assert_eq!(shown_line("2025-01-02T03:04:05.678Z out "), "");
        assert_eq!(shown_line("[wharf] log truncated"), "[wharf] log truncated");
    }
}
