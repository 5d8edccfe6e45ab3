use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a checkout failed. Every message names what the user has to fix; repository
/// addresses in messages have any password replaced by `***`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckoutError {
    /// The repository address was refused before git ran: it could make git run a
    /// command, read an option, or it is not a form Wharf accepts.
    #[error("repository `{repo}` is not accepted: {reason}")]
    InvalidRepo { repo: String, reason: String },

    /// The branch name is not a valid git branch name (or contains characters Wharf
    /// refuses for defence in depth); git was not run.
    #[error("branch name `{branch}` is not valid: {reason}")]
    InvalidBranch { branch: String, reason: String },

    /// The requested commit is not 7 to 40 hexadecimal digits; git was not run.
    #[error("commit `{commit}` is not valid: {reason}")]
    InvalidCommit { commit: String, reason: String },

    /// The destination exists and is not an empty directory.
    #[error("checkout directory `{}` already exists and is not empty", dest.display())]
    DestNotEmpty { dest: PathBuf },

    /// Git could not reach or read the repository: wrong URL or path, not a git
    /// repository, host unreachable, or authentication refused.
    #[error("cannot read repository `{repo}`: {detail}")]
    RepoNotFound { repo: String, detail: String },

    /// The repository exists but has no commit yet.
    #[error("repository `{repo}` is empty (it has no commits yet; push a first commit)")]
    EmptyRepo { repo: String },

    /// The repository exists but has no such branch.
    #[error(
        "branch `{branch}` does not exist in repository `{repo}` (it may have been deleted \
         or renamed; edit the pipeline's source branch)"
    )]
    BranchNotFound { repo: String, branch: String },

    /// The branch was found but the requested commit could not be fetched from it.
    #[error(
        "commit `{commit}` was not found in repository `{repo}` (it may have been removed \
         by a force push)"
    )]
    CommitNotFound { repo: String, commit: String },

    /// The `git` program is not installed on the server (or not on its `PATH`).
    #[error(
        "the `git` program was not found; install it on the Wharf server \
         (Debian/Ubuntu: `apt-get install git`, Alpine: `apk add git`, \
         Fedora/RHEL: `dnf install git`)"
    )]
    GitMissing,

    /// The stop signal fired while git ran; git and its children were killed.
    #[error("checkout stopped")]
    Stopped,

    /// Any other git failure; `stderr` holds its last lines.
    #[error("git {action} failed ({status}): {stderr}")]
    Git { action: String, status: ExitStatus, stderr: String },

    /// An I/O error outside git, e.g. while inspecting the destination.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
