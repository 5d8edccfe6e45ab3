//! What `wharf run` shows and keeps while a run goes: a spinner per running task (or
//! one line per change when the output is not a terminal), log lines prefixed with
//! `[stage/task]`, log files per task and the run record on disk.
//!
//! The engine calls the [`ChannelObserver`] from its tasks; everything slow (terminal,
//! files) happens on one reporter thread fed by a channel.

use crate::local::write_atomically;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wharf_core::run::{CheckoutRecord, RunRecord, StageRecord, TaskRecord};
use wharf_core::status::Status;
use wharf_engine::{Observer, Part};
use wharf_executor::{LogLine, Stream};

enum Msg {
    Run(Box<RunRecord>),
    Checkout(Box<CheckoutRecord>),
    Stage(usize, Box<StageRecord>),
    Task(usize, usize, Box<TaskRecord>),
    Log(Part, LogLine),
    /// The run is over: write everything out and stop.
    Done,
}

/// The engine's side: copies the changed part into the channel.
pub struct ChannelObserver {
    tx: mpsc::Sender<Msg>,
}

impl Observer for ChannelObserver {
    fn changed(&self, record: &RunRecord, part: Part) {
        let msg = match part {
            Part::Run => Msg::Run(Box::new(record.clone())),
            Part::Checkout => match &record.checkout {
                Some(c) => Msg::Checkout(Box::new(c.clone())),
                None => return,
            },
            Part::Stage(s) => Msg::Stage(s, Box::new(record.stages[s].clone())),
            Part::Task(s, t) => Msg::Task(s, t, Box::new(record.stages[s].tasks[t].clone())),
        };
        let _ = self.tx.send(msg);
    }

    fn log(&self, part: Part, line: &LogLine) {
        let _ = self.tx.send(Msg::Log(part, line.clone()));
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Hide task log lines (statuses still show).
    pub quiet: bool,
}

/// The reporter thread; [`ReporterHandle::finish`] once the engine has returned.
pub struct ReporterHandle {
    tx: mpsc::Sender<Msg>,
    thread: std::thread::JoinHandle<()>,
}

impl ReporterHandle {
    /// Waits until every message sent so far is shown and written.
    pub fn finish(self) {
        let _ = self.tx.send(Msg::Done);
        let _ = self.thread.join();
    }
}

pub fn start(run_dir: PathBuf, options: Options) -> (ChannelObserver, ReporterHandle) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || Reporter::new(run_dir, options).serve(rx));
    (ChannelObserver { tx: tx.clone() }, ReporterHandle { tx, thread })
}

struct Reporter {
    run_dir: PathBuf,
    options: Options,
    record: Option<RunRecord>,
    logs: HashMap<PathBuf, BufWriter<File>>,
    bars: HashMap<(usize, usize), ProgressBar>,
    multi: Option<MultiProgress>,
    last_save: Instant,
    dirty: bool,
}

impl Reporter {
    fn new(run_dir: PathBuf, options: Options) -> Self {
        let multi =
            std::io::stdout().is_terminal().then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Reporter {
            run_dir,
            options,
            record: None,
            logs: HashMap::new(),
            bars: HashMap::new(),
            multi,
            last_save: Instant::now(),
            dirty: false,
        }
    }

    fn serve(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            if matches!(msg, Msg::Done) {
                break;
            }
            self.handle(msg);
        }
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        for file in self.logs.values_mut() {
            let _ = file.flush();
        }
        self.save();
    }

    /// A line for the person watching: above the spinners on a terminal, plain otherwise.
    fn say(&self, text: String) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => println!("{text}"),
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Run(record) => {
                let first = self.record.is_none();
                let status = record.progress.status;
                self.record = Some(*record);
                if first {
                    let r = self.record.as_ref().unwrap();
                    self.say(format!("Run #{} of {} ({})", r.number, r.pipeline, r.cause.describe()));
                }
                if status.is_terminal() {
                    self.save();
                } else {
                    self.dirty = true;
                }
            }
            Msg::Checkout(c) => {
                match c.progress.status {
                    Status::Running => self.say(format!(
                        "▶ checkout {} {}",
                        c.repo,
                        c.branch.as_deref().map(|b| format!("({b})")).unwrap_or_default()
                    )),
                    status if status.is_terminal() => {
                        let detail = c
                            .commit
                            .as_deref()
                            .map(|s| s.get(..12).unwrap_or(s).to_owned())
                            .or(c.reason.clone())
                            .unwrap_or_default();
                        self.say(format!("{} checkout {status} {detail}", mark(status)));
                        self.flush_log(&self.run_dir.join("logs").join("checkout.log"));
                    }
                    _ => {}
                }
                if let Some(record) = self.record.as_mut() {
                    record.checkout = Some(*c);
                }
                self.save();
            }
            Msg::Stage(s, stage) => {
                let status = stage.progress.status;
                if status == Status::Running {
                    let suffix = if stage.rollback { " (rollback)" } else { "" };
                    self.say(format!("▶ stage {}{suffix}", stage.name));
                } else if status.is_terminal() && status != Status::Skipped && status != Status::Succeeded {
                    let reason = stage.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                    self.say(format!("{} stage {} {status}{reason}", mark(status), stage.name));
                }
                if let Some(record) = self.record.as_mut() {
                    if s >= record.stages.len() {
                        record.stages.resize(s + 1, (*stage).clone());
                    }
                    record.stages[s] = *stage;
                }
                self.save();
            }
            Msg::Task(s, t, task) => {
                let label = self.label(s, t, &task.name);
                let status = task.progress.status;
                match status {
                    Status::Running => self.task_started(s, t, &label, task.attempts),
                    Status::Pending => {
                        if let Some(bar) = self.bars.get(&(s, t)) {
                            bar.set_message(format!("{label} pending (waiting for an executor slot)"));
                        }
                    }
                    _ if status.is_terminal() => {
                        if let Some(bar) = self.bars.remove(&(s, t)) {
                            bar.finish_and_clear();
                        }
                        if status != Status::Skipped {
                            let took = task.progress.wall_time(jiff::Timestamp::now()).map(human).unwrap_or_default();
                            let reason = task.reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default();
                            self.say(format!("{} {label} {status} {took}{reason}", mark(status)));
                        }
                        let path = self.task_log_path(s, &task.name);
                        self.flush_log(&path);
                    }
                    _ => {}
                }
                if let Some(record) = self.record.as_mut()
                    && let Some(slot) = record.stages.get_mut(s).and_then(|st| st.tasks.get_mut(t))
                {
                    *slot = *task;
                }
                self.dirty = true;
                if self.last_save.elapsed() > Duration::from_millis(250) {
                    self.save();
                }
            }
            Msg::Log(part, line) => self.log(part, line),
            Msg::Done => {}
        }
    }

    fn label(&self, s: usize, t: usize, task: &str) -> String {
        let stage = self.record.as_ref().and_then(|r| r.stages.get(s)).map(|st| st.name.as_str()).unwrap_or("?");
        let _ = t;
        format!("{stage}/{task}")
    }

    fn task_started(&mut self, s: usize, t: usize, label: &str, attempt: u32) {
        let retry = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
        match &self.multi {
            Some(multi) => {
                let bar = self.bars.entry((s, t)).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(format!("{label} running{retry}"));
            }
            None => println!("▶ {label} running{retry}"),
        }
    }

    fn task_log_path(&self, s: usize, task: &str) -> PathBuf {
        let stage = self
            .record
            .as_ref()
            .and_then(|r| r.stages.get(s))
            .map(|st| st.name.clone())
            .unwrap_or_else(|| s.to_string());
        // Stage and task names cannot contain path separators or start with a dot.
        self.run_dir.join("logs").join(stage).join(format!("{task}.log"))
    }

    fn log(&mut self, part: Part, line: LogLine) {
        let (path, prefix) = match part {
            Part::Checkout => (self.run_dir.join("logs").join("checkout.log"), "checkout".to_owned()),
            Part::Task(s, t) => {
                let task = self
                    .record
                    .as_ref()
                    .and_then(|r| r.stages.get(s)?.tasks.get(t))
                    .map(|task| task.name.clone())
                    .unwrap_or_default();
                (self.task_log_path(s, &task), self.label(s, t, &task))
            }
            Part::Run | Part::Stage(_) => (self.run_dir.join("logs").join("run.log"), "run".to_owned()),
        };
        if !self.options.quiet || line.stream == Stream::System && matches!(part, Part::Run) {
            let text = match line.stream {
                Stream::System => format!("[{prefix}] · {}", line.text),
                _ => format!("[{prefix}] {}", line.text),
            };
            self.say(text);
        }
        let writer = match self.logs.get_mut(&path) {
            Some(w) => w,
            None => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let Ok(file) = File::options().create(true).append(true).open(&path) else { return };
                self.logs.entry(path.clone()).or_insert_with(|| BufWriter::new(file))
            }
        };
        let _ = writeln!(writer, "{}", wharf_executor::stored::line(line.at, line.stream, &line.text));
    }

    fn flush_log(&mut self, path: &Path) {
        if let Some(w) = self.logs.get_mut(path) {
            let _ = w.flush();
        }
    }

    fn save(&mut self) {
        if let Some(record) = &self.record
            && let Ok(json) = serde_json::to_vec_pretty(record)
        {
            let _ = write_atomically(&self.run_dir.join("run.json"), &json);
        }
        self.dirty = false;
        self.last_save = Instant::now();
    }
}

pub fn mark(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "✔",
        Status::Failed => "✘",
        Status::TimedOut => "⏱",
        Status::Stopped => "■",
        Status::Skipped => "-",
        _ => "·",
    }
}

/// `850ms`, `3.2s`, `2m05s`, `1h02m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// The closing table: one row per task (and the checkout), with status and duration.
pub fn table(record: &RunRecord) -> String {
    let now = jiff::Timestamp::now();
    let mut rows: Vec<[String; 4]> = vec![["STAGE".into(), "TASK".into(), "STATUS".into(), "DURATION".into()]];
    if let Some(c) = &record.checkout {
        let branch = c.branch.clone().unwrap_or_else(|| "HEAD".into());
        rows.push([
            format!("Scm_Clone_{branch}"),
            "checkout".into(),
            c.progress.status.to_string(),
            c.progress.wall_time(now).map(human).unwrap_or_default(),
        ]);
    }
    for stage in &record.stages {
        let name = if stage.rollback { format!("{} (rollback)", stage.name) } else { stage.name.clone() };
        for task in &stage.tasks {
            let mut status = task.progress.status.to_string();
            if task.attempts > 1 {
                status.push_str(&format!(" ({} attempts)", task.attempts));
            }
            rows.push([
                name.clone(),
                task.name.clone(),
                status,
                task.progress.wall_time(now).map(human).unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    columns(&rows)
}

/// Rows as aligned columns, two spaces apart.
pub fn columns<R: AsRef<[String]>>(rows: &[R]) -> String {
    let n = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().filter_map(|r| r.as_ref().get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> =
            row.as_ref().iter().enumerate().map(|(i, cell)| format!("{cell:<width$}", width = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
