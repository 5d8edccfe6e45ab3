//! Taking over from an earlier run: the stages a retry reuses, and what a re-attached
//! run finds of its stages and tasks after a restart.

use super::RunState;
use crate::Part;
use wharf_core::model::{Stage, Task};
use wharf_core::run::{RunRecord, reused_reason};
use wharf_core::status::Status;
use wharf_executor::LogResume;

/// Where a task of a resumed run starts.
pub(super) enum TaskResume {
    /// A re-attached run's task that ended before the restart, with this status.
    Ended(Status),
    /// Attempts start after `attempts`; `adopt`: the attempt that was running is taken
    /// over from the executor first, its log resumed there.
    From { attempts: u32, adopt: Option<LogResume> },
}

impl RunState {
    /// What a stage before the stage a resumed run starts from comes to: a retry takes
    /// it over from the earlier run, where it succeeded; a re-attached run keeps how it
    /// ended before the restart and puts its outputs back. `None`: the stage runs.
    pub(super) fn resumed_stage(&self, s: usize, stage: &Stage) -> Option<Status> {
        let resume = self.request.resume.as_ref().filter(|resume| s < resume.from_stage)?;
        if resume.reattach.is_none() {
            self.reuse_stage(s, &resume.previous);
            return Some(Status::Succeeded);
        }
        // A re-attached run: this stage ended before the restart.
        for t in 0..stage.tasks.len() {
            self.restore_outputs(s, t, &stage.tasks[t]);
        }
        Some(match self.status_of(Part::Stage(s)) {
            Status::Skipped => Status::Succeeded,
            status => status,
        })
    }

    /// Where task `t` of stage `s` starts: from its first attempt, or in a re-attached
    /// run from what it was doing when the server stopped.
    pub(super) fn resumed_task(&self, s: usize, t: usize, task: &Task) -> TaskResume {
        let Some(reattach) = self.request.resume.as_ref().and_then(|r| r.reattach.as_ref()) else {
            return TaskResume::From { attempts: 0, adopt: None };
        };
        let (status, attempts) = {
            let record = self.record.lock().unwrap();
            let task = &record.stages[s].tasks[t];
            (task.progress.status, task.attempts)
        };
        if status.is_terminal() {
            self.restore_outputs(s, t, task);
            return TaskResume::Ended(status);
        }
        // A pending attempt (its pod not yet placed) is taken over too, when recovery
        // found what it started.
        let started = status == Status::Running || (status == Status::Pending && reattach.logs.contains_key(&(s, t)));
        if started && attempts > 0 {
            let adopt = reattach.logs.get(&(s, t)).copied().unwrap_or_default();
            return TaskResume::From { attempts: attempts - 1, adopt: Some(adopt) };
        }
        TaskResume::From { attempts, adopt: None }
    }

    /// Takes over a stage that succeeded in the run being retried: recorded as skipped,
    /// its outputs restored into the record and the scope.
    fn reuse_stage(&self, s: usize, previous: &RunRecord) {
        // A stage the earlier run itself took over names the run where it ran.
        let from = previous.stages.get(s).and_then(|st| st.reused_from).unwrap_or(previous.number);
        let why = reused_reason(from);
        let tasks = self.request.pipeline.stages[s].tasks.clone();
        for (t, task) in tasks.iter().enumerate() {
            let outputs = previous
                .stages
                .get(s)
                .and_then(|st| st.tasks.iter().find(|pt| pt.name == task.name.as_str()))
                .map(|pt| pt.outputs.clone())
                .unwrap_or_default();
            {
                let mut scope = self.scope.lock().unwrap();
                for declared in &task.outputs {
                    if let Some(value) = outputs.get(declared.as_str()) {
                        scope.names.insert(declared.to_string(), value.clone());
                    }
                }
                scope.outputs.insert(task.name.to_string(), outputs.clone());
            }
            self.record.lock().unwrap().stages[s].tasks[t].outputs = outputs;
            self.set(Part::Task(s, t), Status::Skipped, Some(why.clone()));
        }
        self.record.lock().unwrap().stages[s].reused_from = Some(from);
        self.set(Part::Stage(s), Status::Skipped, Some(why));
    }

    /// Puts the outputs a task recorded before a restart back into the scope.
    fn restore_outputs(&self, s: usize, t: usize, task: &Task) {
        let outputs = self.record.lock().unwrap().stages[s].tasks[t].outputs.clone();
        let mut scope = self.scope.lock().unwrap();
        for declared in &task.outputs {
            if let Some(value) = outputs.get(declared.as_str()) {
                scope.names.insert(declared.to_string(), value.clone());
            }
        }
        scope.outputs.insert(task.name.to_string(), outputs);
    }
}
