//! The checkout itself: validate, clone one branch at depth 1, move to the requested
//! commit if there is one, and read what HEAD is.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::Path;

use tokio::sync::watch;

use crate::git::{Git, Output, arg};
use crate::validate::{git_url, normalize_commit, redact_url};
use crate::{CheckedOut, CheckoutError, CheckoutRequest, validate_branch_name, validate_repo_url};

/// How many commits of the branch to fetch when the requested commit is not the tip
/// and cannot be fetched by its sha, before giving up and fetching the whole history.
const DEEPEN_COMMITS: &str = "200";

/// Stderr fragments (with `LC_ALL=C`) by which git says it could not reach or read the
/// repository at all, as opposed to failing later.
const UNREACHABLE: [&str; 13] = [
    "does not appear to be a git repository",
    "Could not read from remote repository",
    "fatal: repository '",
    "unable to access",
    "Authentication failed",
    "could not read Username",
    "could not read Password",
    "Permission denied",
    "Could not resolve host",
    "Connection refused",
    "Connection timed out",
    "Host key verification failed",
    "unable to connect to",
];

/// Clones `req.repo` into `req.dest` and checks out the requested branch (or the
/// remote's default branch) at depth 1, or exactly `req.commit`.
///
/// Every git command line and git's progress go to `log`. When `stop` turns `true`,
/// git's whole process group is killed and `Stopped` returned; a half-made `dest` may
/// remain and is the caller's to remove.
///
/// The commit, when given, is first looked for at the branch tip (the usual case for a
/// push event), then fetched by itself when it is a full sha, then by fetching more of
/// the branch's history. A commit fetched by its sha is not checked to be on the branch.
pub async fn checkout(
    req: &CheckoutRequest,
    log: &(dyn Fn(String) + Send + Sync),
    stop: watch::Receiver<bool>,
) -> Result<CheckedOut, CheckoutError> {
    let repo = redact_url(&req.repo);
    validate_repo_url(&req.repo).map_err(|reason| CheckoutError::InvalidRepo { repo: repo.clone(), reason })?;
    if let Some(branch) = &req.branch {
        validate_branch_name(branch)
            .map_err(|reason| CheckoutError::InvalidBranch { branch: branch.clone(), reason })?;
    }
    let commit = req
        .commit
        .as_deref()
        .map(|commit| {
            normalize_commit(commit)
                .map_err(|reason| CheckoutError::InvalidCommit { commit: commit.to_string(), reason })
        })
        .transpose()?;
    ensure_empty(&req.dest).await?;

    let mut git = Git::new(log, stop);
    let dest = req.dest.as_path();
    clone(&mut git, req, &repo).await?;
    // The commit, its author and subject, or that there is none, read from the clone's
    // files (every process counts: a checkout is most of the time from an event to a
    // task), or from one `git log` where that read cannot tell.
    let mut head = head_of(&mut git, dest).await?.ok_or_else(|| CheckoutError::EmptyRepo { repo: repo.clone() })?;
    if let Some(commit) = commit
        && !head.0.starts_with(&commit)
    {
        move_to_commit(&mut git, dest, &repo, &commit).await?;
        head = head_of(&mut git, dest).await?.ok_or_else(|| CheckoutError::EmptyRepo { repo: repo.clone() })?;
    }

    let branch = match &req.branch {
        Some(branch) => Some(branch.clone()),
        None => current_branch(&mut git, dest).await?,
    };
    let (commit, author, subject) = head;
    let checked_out = CheckedOut { commit, branch, subject, author };
    git.log(format!(
        "checked out {} at {}: {}",
        checked_out.branch.as_deref().unwrap_or("detached HEAD"),
        checked_out.commit,
        checked_out.subject
    ));
    Ok(checked_out)
}

/// Git refuses to clone into a non-empty directory with a message that does not say
/// which run's workspace it is; say it ourselves, before any network traffic.
async fn ensure_empty(dest: &Path) -> Result<(), CheckoutError> {
    let io_error =
        |source| CheckoutError::Io { context: format!("cannot read checkout directory `{}`", dest.display()), source };
    match tokio::fs::read_dir(dest).await {
        Ok(mut entries) => match entries.next_entry().await.map_err(io_error)? {
            Some(_) => Err(CheckoutError::DestNotEmpty { dest: dest.to_path_buf() }),
            None => Ok(()),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(e)),
    }
}

/// One round trip: the clone itself tells a missing branch ("Remote branch X not found
/// in upstream origin") from an unreachable repository.
async fn clone(git: &mut Git<'_>, req: &CheckoutRequest, repo: &str) -> Result<(), CheckoutError> {
    // `--template=`: no template directory, so nothing of the server's git set-up (the
    // sample hooks, or hooks an administrator put there) is copied into a workspace.
    let mut args: Vec<OsString> =
        ["-c", "advice.detachedHead=false", "clone", "--template=", "--progress", "--depth", "1", "--single-branch"]
            .map(arg)
            .into();
    if let Some(branch) = &req.branch {
        args.extend([arg("--branch"), arg(branch)]);
    }
    args.extend([arg("--"), arg(git_url(&req.repo)), arg(&req.dest)]);

    let output = git.run(&args, true).await?;
    if output.status.success() {
        return Ok(());
    }
    if let Some(branch) = &req.branch
        && output.stderr.contains("Remote branch ")
        && output.stderr.contains(" not found in upstream ")
    {
        return Err(CheckoutError::BranchNotFound { repo: repo.to_string(), branch: branch.clone() });
    }
    if UNREACHABLE.iter().any(|text| output.stderr.contains(text)) {
        return Err(CheckoutError::RepoNotFound { repo: repo.to_string(), detail: fatal_lines(&output) });
    }
    Err(output.into_error("clone"))
}

/// Git's `fatal:` lines, which say why; the rest of stderr is progress and advice.
fn fatal_lines(output: &Output) -> String {
    let fatal: Vec<&str> = output.stderr.lines().filter_map(|line| line.strip_prefix("fatal: ")).collect();
    if fatal.is_empty() { output.stderr.clone() } else { fatal.join("; ") }
}

async fn move_to_commit(git: &mut Git<'_>, dest: &Path, repo: &str, commit: &str) -> Result<(), CheckoutError> {
    // Only a full sha can be fetched by name, and only from servers that allow it
    // (protocol v2 servers do by default).
    if commit.len() == 40 {
        let fetch = ["fetch", "--progress", "--no-tags", "--depth", "1", "origin", commit];
        if git.run_in(dest, &fetch, true).await?.status.success() {
            return reset_to(git, dest, commit).await;
        }
        git.log(format!("could not fetch {commit} by itself; fetching more history"));
    }
    let deepen = format!("--deepen={DEEPEN_COMMITS}");
    for how in [deepen.as_str(), "--unshallow"] {
        let shallow = ["rev-parse", "--is-shallow-repository"];
        if stdout_of(git, dest, &shallow, "rev-parse").await? != "true" {
            break;
        }
        let fetched = git.run_in(dest, &["fetch", "--progress", "--no-tags", how, "origin"], true).await?;
        if !fetched.status.success() {
            return Err(fetched.into_error("fetch"));
        }
        if let Some(full) = resolve_commit(git, dest, commit).await? {
            return reset_to(git, dest, &full).await;
        }
    }
    Err(CheckoutError::CommitNotFound { repo: repo.to_string(), commit: commit.to_string() })
}

/// The full sha `commit` abbreviates, if the clone has it. A ref that happens to be
/// named like a sha would win in `rev-parse`, hence the prefix check.
async fn resolve_commit(git: &mut Git<'_>, dest: &Path, commit: &str) -> Result<Option<String>, CheckoutError> {
    let spec = format!("{commit}^{{commit}}");
    let output = git.run_in(dest, &["rev-parse", "--verify", "--quiet", &spec], false).await?;
    let full = output.stdout.trim();
    Ok((output.status.success() && full.starts_with(commit)).then(|| full.to_string()))
}

/// Moves the checked-out branch itself to the commit, so that tools in the workspace
/// still see the branch name rather than a detached HEAD.
async fn reset_to(git: &mut Git<'_>, dest: &Path, commit: &str) -> Result<(), CheckoutError> {
    let output = git.run_in(dest, &["reset", "--hard", "--quiet", commit, "--"], true).await?;
    if output.status.success() { Ok(()) } else { Err(output.into_error("reset")) }
}

/// The branch the clone checked out, i.e. the remote's default branch; `None` if the
/// remote's HEAD is detached.
async fn current_branch(git: &mut Git<'_>, dest: &Path) -> Result<Option<String>, CheckoutError> {
    let output = git.run_in(dest, &["symbolic-ref", "--quiet", "--short", "HEAD"], false).await?;
    let branch = output.stdout.trim();
    Ok((output.status.success() && !branch.is_empty()).then(|| branch.to_string()))
}

/// `(commit, "author <email>", subject)` of HEAD; `None` when HEAD names no commit
/// (an empty repository). Read from the clone's files where that is plain
/// ([`crate::head`]), else from `git log`.
async fn head_of(git: &mut Git<'_>, dest: &Path) -> Result<Option<(String, String, String)>, CheckoutError> {
    let work_tree = dest.to_path_buf();
    if let Ok(Some(head)) = tokio::task::spawn_blocking(move || crate::head::read(&work_tree)).await {
        return Ok(Some(head));
    }
    let output = git.run_in(dest, &["log", "-1", "--format=%H%n%an <%ae>%n%s", "HEAD", "--"], false).await?;
    if !output.status.success() {
        return Ok(None);
    }
    let mut lines = output.stdout.lines();
    let commit = lines.next().unwrap_or("").trim().to_string();
    if commit.len() < 40 {
        return Ok(None);
    }
    let author = lines.next().unwrap_or("").to_string();
    let subject = lines.next().unwrap_or("").to_string();
    Ok(Some((commit, author, subject)))
}

/// The trimmed stdout of a git command that must succeed.
async fn stdout_of(git: &mut Git<'_>, dest: &Path, args: &[&str], action: &str) -> Result<String, CheckoutError> {
    let output = git.run_in(dest, args, false).await?;
    if output.status.success() { Ok(output.stdout.trim().to_string()) } else { Err(output.into_error(action)) }
}
