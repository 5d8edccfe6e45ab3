//! Source checkout for Wharf: the seed's `Scm_Clone_<branch>` step that runs before a
//! run's first stage. Start reading at [`checkout`] in `checkout.rs`, which clones one
//! branch at depth 1 (or one exact commit) by running the `git` binary; `validate.rs`
//! holds the checks every repository address and branch name passes before git ever
//! sees them, `git.rs` how one git process is run (environment, process group, stop),
//! and `error.rs` what each failure means. [`webhook`] verifies and parses GitHub,
//! GitLab and Gitee webhook deliveries; [`provider`] calls their REST APIs for a
//! repository binding (OAuth, repositories, branches, installing webhooks).
//!
//! Git runs as a separate program, never through a shell, and never with user data in
//! an option position, so a pipeline's source cannot make the server run commands.

mod checkout;
mod error;
mod git;
mod head;
/// The GitHub, GitLab and Gitee REST APIs a repository binding uses: OAuth, repositories, branches, webhooks.
pub mod provider;
mod validate;
pub mod webhook;

pub use checkout::checkout;
pub use error::CheckoutError;
pub use validate::{redact_url, validate_branch_name, validate_repo_url};

use std::path::PathBuf;

/// What to check out and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// `https://`, `http://`, `ssh://`, `git://` or `file:///` URL, scp-like
    /// `user@host:path`, or an absolute local path. See [`validate_repo_url`].
    pub repo: String,
    /// `None` checks out the remote's default branch. Like `git clone --branch`, a tag
    /// of this name is accepted too.
    pub branch: Option<String>,
    /// `Some` checks out exactly this commit (40 hex digits, or at least 7), e.g. the
    /// one named by a webhook event or the run being re-run.
    pub commit: Option<String>,
    /// Directory to clone into; it must not exist or be empty.
    pub dest: PathBuf,
}

/// What was checked out; the engine records it on the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedOut {
    /// Full 40-hex sha of HEAD after checkout.
    pub commit: String,
    /// The branch checked out: the requested one, or the remote's default branch when
    /// none was requested (`None` only if the remote's HEAD is detached).
    pub branch: Option<String>,
    /// First line of the commit message.
    pub subject: String,
    /// `Name <email>` of the commit's author.
    pub author: String,
}
