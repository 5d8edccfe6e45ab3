//! Log lines, always masked: the engine's own system lines, and the sink that takes
//! a task's output from the executor.

use super::RunState;
use crate::Part;
use crate::clock::AttemptClocks;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};
use wharf_core::status::Status;
use wharf_executor::{LogLine, LogSink, Phase, Stream};

impl RunState {
    pub(super) fn system(&self, part: Part, text: impl Into<String>) {
        let line = LogLine {
            continued: false,
            at: Timestamp::now(),
            stream: Stream::System,
            text: self.masker.mask(&text.into()),
        };
        self.observer.log(part, &line);
    }

    /// Log lines about the run itself go to the first task's log of no one; the
    /// observer gets them as run-level system lines.
    pub(super) fn system_run(&self, text: String) {
        let line =
            LogLine { continued: false, at: Timestamp::now(), stream: Stream::System, text: self.masker.mask(&text) };
        self.observer.log(Part::Run, &line);
    }
}

pub(super) struct TaskSink {
    state: Arc<RunState>,
    part: Part,
    /// Per stream (stdout, stderr): the end of a cut line, held back until the rest
    /// arrives, so that a secret cut in two is still masked whole.
    carry: Mutex<[String; 2]>,
    /// The attempt's clocks, which stand still while its executor reports it pending.
    clocks: Arc<AttemptClocks>,
}

impl TaskSink {
    pub(super) fn new(state: Arc<RunState>, part: Part, clocks: Arc<AttemptClocks>) -> Self {
        TaskSink { state, part, carry: Mutex::default(), clocks }
    }
}

impl LogSink for TaskSink {
    fn line(&self, mut line: LogLine) {
        let masker = &self.state.masker;
        let slot = match line.stream {
            wharf_executor::Stream::Stdout => Some(0),
            wharf_executor::Stream::Stderr => Some(1),
            wharf_executor::Stream::System => None,
        };
        if let Some(slot) = slot
            && !masker.is_empty()
        {
            let mut carry = self.carry.lock().unwrap();
            let mut text = std::mem::take(&mut carry[slot]);
            text.push_str(&line.text);
            if line.continued {
                // A secret that crosses the cut starts within its length - 1 bytes of it.
                let keep = masker.longest().saturating_sub(1);
                let at = text.floor_char_boundary(text.len().saturating_sub(keep));
                // Nor may the line end inside a secret that lies just before that.
                let at = masker.cut_outside(&text, at);
                carry[slot] = text.split_off(at);
            }
            line.text = text;
        }
        line.text = masker.mask(&line.text);
        self.state.observer.log(self.part, &line);
    }

    fn phase(&self, phase: Phase) {
        match phase {
            Phase::Pending { reason } => {
                self.clocks.pause();
                self.state.set_phase(self.part, Status::Pending, Some(reason));
            }
            Phase::Running => {
                self.state.set_phase(self.part, Status::Running, None);
                self.clocks.resume();
            }
        }
    }
}
