//! Who may decide an `approval` task and when it is decided: the rules, pure.
//!
//! - **Who**: a user named in `approvers`, a user whose role is named as
//!   `role:<name>`, and administrators, always.
//! - **The starter rule**: when `required` is more than 1, the person who started the
//!   run may not approve it (they may still reject). With `required: 1` they may: a
//!   one-person approval is a confirmation, not a second pair of eyes.
//! - **When**: the first rejection decides (`rejected`, with the rejecter's comment);
//!   otherwise `required` distinct users' approvals do. A user decides once.

use crate::model::ApprovalTask;
use serde::{Deserialize, Serialize};

/// A person asking to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decider<'a> {
    pub user: &'a str,
    /// The user's role name (`admin`, `manager`, `user`).
    pub role: &'a str,
    pub admin: bool,
}

/// Approve or reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

/// One stored decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub user: String,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    pub at: jiff::Timestamp,
}

/// How an approval ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// By these users, in the order they approved.
    Approved(Vec<String>),
    Rejected {
        by: String,
        comment: String,
    },
}

/// Why a person may not decide.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("`{user}` is not an approver of this task (approvers: {approvers}; administrators may always decide)")]
    NotAnApprover { user: String, approvers: String },
    #[error(
        "`{user}` started this run and may not approve it: it needs {required} approvals from other people \
         (the starter may reject)"
    )]
    Starter { user: String, required: u32 },
    #[error("`{user}` already decided on this task")]
    AlreadyDecided { user: String },
}

/// Whether `who` may give `verdict` on `task`, in a run started by `starter` (a person,
/// when one did), given the decisions so far.
pub fn may_decide(
    task: &ApprovalTask,
    who: &Decider<'_>,
    starter: Option<&str>,
    verdict: Verdict,
    so_far: &[Decision],
) -> Result<(), Refused> {
    let listed = task.approvers.iter().any(|a| match a.strip_prefix("role:") {
        Some(role) => role == who.role,
        None => a == who.user,
    });
    if !(listed || who.admin) {
        return Err(Refused::NotAnApprover { user: who.user.to_owned(), approvers: task.approvers.join(", ") });
    }
    if so_far.iter().any(|d| d.user == who.user) {
        return Err(Refused::AlreadyDecided { user: who.user.to_owned() });
    }
    if verdict == Verdict::Approve && task.required > 1 && starter == Some(who.user) {
        return Err(Refused::Starter { user: who.user.to_owned(), required: task.required });
    }
    Ok(())
}

/// The outcome of `decisions` (in the order made), or `None` while it waits.
pub fn outcome(task: &ApprovalTask, decisions: &[Decision]) -> Option<Outcome> {
    if let Some(no) = decisions.iter().find(|d| d.verdict == Verdict::Reject) {
        return Some(Outcome::Rejected { by: no.user.clone(), comment: no.comment.clone() });
    }
    let mut yes: Vec<String> = Vec::new();
    for d in decisions {
        if !yes.contains(&d.user) {
            yes.push(d.user.clone());
        }
    }
    (yes.len() as u32 >= task.required.max(1)).then_some(Outcome::Approved(yes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(approvers: &[&str], required: u32) -> ApprovalTask {
        ApprovalTask { approvers: approvers.iter().map(|s| s.to_string()).collect(), message: None, required }
    }

    fn d(user: &str, verdict: Verdict) -> Decision {
        Decision { user: user.into(), verdict, comment: format!("{user} says"), at: jiff::Timestamp::UNIX_EPOCH }
    }

    fn who<'a>(user: &'a str, role: &'a str) -> Decider<'a> {
        Decider { user, role, admin: role == "admin" }
    }

    #[test]
    fn approvers_roles_and_admins_may_decide_others_not() {
        let t = task(&["ann", "role:manager"], 1);
        assert_eq!(may_decide(&t, &who("ann", "user"), None, Verdict::Approve, &[]), Ok(()));
        assert_eq!(may_decide(&t, &who("bob", "manager"), None, Verdict::Reject, &[]), Ok(()));
        assert_eq!(may_decide(&t, &who("root", "admin"), None, Verdict::Approve, &[]), Ok(()));
        let err = may_decide(&t, &who("eve", "user"), None, Verdict::Approve, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`eve` is not an approver of this task (approvers: ann, role:manager; administrators may always decide)"
        );
        let err = may_decide(&t, &who("ann", "user"), None, Verdict::Reject, &[d("ann", Verdict::Approve)]);
        assert_eq!(err, Err(Refused::AlreadyDecided { user: "ann".into() }));
    }

    #[test]
    fn the_starter_may_not_approve_when_more_than_one_is_needed_but_may_reject() {
        let two = task(&["ann", "bob"], 2);
        assert_eq!(
            may_decide(&two, &who("ann", "user"), Some("ann"), Verdict::Approve, &[]),
            Err(Refused::Starter { user: "ann".into(), required: 2 })
        );
        // Administrators too: the rule is about eyes, not rights.
        let admin = who("root", "admin");
        assert!(may_decide(&two, &admin, Some("root"), Verdict::Approve, &[]).is_err());
        assert_eq!(may_decide(&two, &who("ann", "user"), Some("ann"), Verdict::Reject, &[]), Ok(()));
        let one = task(&["ann"], 1);
        assert_eq!(may_decide(&one, &who("ann", "user"), Some("ann"), Verdict::Approve, &[]), Ok(()));
    }

    #[test]
    fn outcome_waits_for_the_count_and_any_rejection_decides() {
        let two = task(&["ann", "bob", "cid"], 2);
        assert_eq!(outcome(&two, &[]), None);
        assert_eq!(outcome(&two, &[d("ann", Verdict::Approve)]), None);
        assert_eq!(
            outcome(&two, &[d("ann", Verdict::Approve), d("bob", Verdict::Approve)]),
            Some(Outcome::Approved(vec!["ann".into(), "bob".into()]))
        );
        assert_eq!(
            outcome(&two, &[d("ann", Verdict::Approve), d("cid", Verdict::Reject)]),
            Some(Outcome::Rejected { by: "cid".into(), comment: "cid says".into() })
        );
        // The same user twice counts once.
        assert_eq!(outcome(&two, &[d("ann", Verdict::Approve), d("ann", Verdict::Approve)]), None);
    }
}
