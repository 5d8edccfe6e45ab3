//! Starting a task's process: what glibc's `posix_spawn` does, plus the switch to the
//! task user, with no extra program and no `fork` of the server.
//!
//! Why not std's `Command`: a root server runs tasks as an unprivileged user, and std
//! can only do that by `fork`ing (its `posix_spawn` path has no id switch), which copies
//! the page tables of the whole multi-threaded server for every task. Starting util-linux
//! `setpriv` in between keeps `posix_spawn` but costs an exec, dynamic loading, NSS and
//! glibc's cpuid probing per task (30 % of the server's CPU in the 1,000-run burst).
//!
//! How: everything the child needs (paths, argv, envp as C strings, the descriptors) is
//! prepared in the parent. The child is created with `clone(CLONE_VM | CLONE_VFORK)` on
//! a stack of its own: it shares the server's memory and the calling thread sleeps until
//! the child has called `execve` or exited. In the child only raw system calls run: no
//! lock, no allocation, and no glibc id wrapper (glibc's `setresuid` and friends signal
//! every thread of the process to change its ids too; in a child sharing the server's
//! memory that could change the server's own credentials). The child reports a failed
//! step and its errno through memory shared with the parent, so the parent knows after
//! `clone` returns whether the exec succeeded, or which step failed and why.
//!
//! Non-root servers use the same spawn (without the id switch): one way to start a task
//! is simpler to reason about and test than two, and it costs the same as std's
//! `posix_spawn`, which is this same `clone` underneath.
//!
//! Waiting uses a pidfd (Linux 5.3 or later) registered with tokio: readable means the
//! child exited, then `waitpid` on its pid reaps it. tokio's own reaper waits only for
//! the pids of the children it started (`waitpid(pid)`, never `waitpid(-1)`), and std's
//! likewise, so no one else reaps ours. A [`Child`] dropped before it was reaped is
//! SIGKILLed and reaped in the background, as tokio's `kill_on_drop(true)` did.

// The only unsafe code in Wharf: calling `clone` and raw system calls in the child.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, c_char, c_int, c_long, c_void};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
compile_error!("the task spawn uses Linux system calls and the x86_64/aarch64 layout of `struct sigaction`");

/// The size of the child's stack. The child calls only raw system calls in one
/// function; a page below it is left unmapped, so an overflow faults instead of
/// writing into the server's memory.
const STACK_SIZE: usize = 64 * 1024;
const GUARD_SIZE: usize = 4096;

/// Who the child runs as (a root parent only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// One process to start: `program` (a path: no `PATH` search) with `args` after its
/// name, exactly the environment `env` (a later entry of the same name wins), in
/// `workdir`, in a process group of its own, stdin from /dev/null, stdout and stderr
/// to pipes. With `ids` it runs as that user, with no supplementary groups.
#[derive(Debug)]
pub struct Spawn<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub env: Vec<(&'a str, &'a str)>,
    pub workdir: &'a Path,
    pub ids: Option<Ids>,
}

/// A step the child takes between `clone` and `execve`, named in [`SpawnError::Child`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Resetting the signal handlers to their defaults.
    Signals,
    /// `setpgid(0, 0)`: a process group of its own.
    ProcessGroup,
    /// Putting /dev/null and the pipes on descriptors 0, 1, 2.
    Descriptors,
    /// `chdir` to the working directory.
    Chdir,
    /// Dropping the supplementary groups.
    SetGroups,
    SetGid,
    SetUid,
    /// Unblocking all signals.
    SignalMask,
    Exec,
}

impl Step {
    const ALL: [Step; 9] = [
        Step::Signals,
        Step::ProcessGroup,
        Step::Descriptors,
        Step::Chdir,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::SignalMask,
        Step::Exec,
    ];

    fn code(self) -> i32 {
        // 0 means "no step failed".
        Step::ALL.iter().position(|s| *s == self).map_or(0, |i| i as i32 + 1)
    }

    fn from_code(code: i32) -> Option<Step> {
        usize::try_from(code).ok().and_then(|c| c.checked_sub(1)).and_then(|i| Step::ALL.get(i).copied())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Signals => "resetting signal handlers",
            Step::ProcessGroup => "making a process group (setpgid)",
            Step::Descriptors => "setting up stdin, stdout and stderr (dup2)",
            Step::Chdir => "changing to the working directory (chdir)",
            Step::SetGroups => "dropping the supplementary groups (setgroups)",
            Step::SetGid => "switching the group id (setresgid)",
            Step::SetUid => "switching the user id (setresuid)",
            Step::SignalMask => "unblocking signals (sigprocmask)",
            Step::Exec => "executing the program (execve)",
        })
    }
}

/// Why a process did not start.
#[derive(Debug)]
pub enum SpawnError {
    /// The program path, an argument (its index in `args`), an environment entry
    /// (its name) or the working directory holds a NUL byte.
    Nul(Nul),
    /// Preparing in the parent failed (a pipe, /dev/null, `clone`, the pidfd).
    Setup { what: &'static str, source: io::Error },
    /// The child failed at `step`; `source` is the system call's error.
    Child { step: Step, source: io::Error },
}

/// Which value holds a NUL byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nul {
    Program,
    Arg(usize),
    Env(String),
    Workdir,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Nul(Nul::Program) => f.write_str("the program path contains a NUL byte"),
            SpawnError::Nul(Nul::Arg(i)) => write!(f, "argument {} contains a NUL byte", i + 1),
            SpawnError::Nul(Nul::Env(name)) => {
                write!(f, "the environment variable `{}` contains a NUL byte", name.replace('\0', "\\0"))
            }
            SpawnError::Nul(Nul::Workdir) => f.write_str("the working directory's path contains a NUL byte"),
            SpawnError::Setup { what, source } => write!(f, "{what} failed: {source}"),
            SpawnError::Child { step, source } => write!(f, "{step} failed: {source}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Nul(_) => None,
            SpawnError::Setup { source, .. } | SpawnError::Child { source, .. } => Some(source),
        }
    }
}

impl SpawnError {
    /// The system call's error, if there was one.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            SpawnError::Nul(_) => None,
            SpawnError::Setup { source, .. } | SpawnError::Child { source, .. } => Some(source),
        }
    }
}

/// A started process. Dropping it before [`Child::wait`] returned SIGKILLs it (only
/// the process itself; its group is the caller's business) and reaps it in the
/// background.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl Child {
    /// The process id, also the id of its process group.
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for the process to exit and reaps it. Cancel-safe; once it returned, it
    /// returns the same status again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            let Some(pidfd) = &self.pidfd else { return Err(io::Error::other("the process was already reaped")) };
            let mut ready = pidfd.readable().await?;
            match reap(self.pid, libc::WNOHANG)? {
                Some(status) => {
                    self.status = Some(status);
                    self.pidfd = None;
                }
                // Readable but not yet waitable cannot happen for an exited child; if it
                // did, wait for the next readiness instead of spinning.
                None => ready.clear_ready(),
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Not reaped yet, so the pid is still ours: no other process can have it.
        // SAFETY: kill has no memory effects; the pid names our unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let pid = self.pid;
        let pidfd = self.pidfd.take();
        match (tokio::runtime::Handle::try_current(), pidfd) {
            (Ok(runtime), Some(pidfd)) => {
                runtime.spawn(async move {
                    let _ = pidfd.readable().await;
                    let _ = reap(pid, 0);
                });
            }
            // Outside a runtime (never in Wharf): a thread waits, since a process in
            // uninterruptible sleep may take a while to die.
            _ => {
                let _ = std::thread::Builder::new().name("wharf-reap".into()).spawn(move || reap(pid, 0));
            }
        }
    }
}

/// `waitpid(pid, flags)`, retried on EINTR; `None` when WNOHANG found it running.
fn reap(pid: i32, flags: c_int) -> io::Result<Option<ExitStatus>> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid out pointer; waitpid touches nothing else.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `struct sigaction` as the kernel's `rt_sigaction` takes it (not glibc's layout).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Set by the child when a step fails; read by the parent after `clone` returned.
#[derive(Default)]
struct Report {
    step: AtomicI32,
    errno: AtomicI32,
}

/// Everything the child reads, prepared by the parent. All pointers stay valid until
/// `clone` returned in the parent (the child has exec'd or exited by then).
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    workdir: *const c_char,
    fds: [RawFd; 3],
    ids: Option<Ids>,
    report: *const Report,
}

impl Spawn<'_> {
    /// Starts the process. Must be called within a tokio runtime (the pipes and the
    /// pidfd are registered with it).
    pub fn spawn(&self) -> Result<Child, SpawnError> {
        let path = CString::new(self.program.as_os_str().as_bytes()).map_err(|_| SpawnError::Nul(Nul::Program))?;
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(path.clone());
        for (i, arg) in self.args.iter().enumerate() {
            argv.push(CString::new(*arg).map_err(|_| SpawnError::Nul(Nul::Arg(i)))?);
        }
        // As std's `Command` does: one entry per name, the last value given wins.
        let env: BTreeMap<&str, &str> = self.env.iter().copied().collect();
        let mut envp = Vec::with_capacity(env.len());
        for (name, value) in env {
            let entry =
                CString::new(format!("{name}={value}")).map_err(|_| SpawnError::Nul(Nul::Env(name.to_owned())))?;
            envp.push(entry);
        }
        let workdir = CString::new(self.workdir.as_os_str().as_bytes()).map_err(|_| SpawnError::Nul(Nul::Workdir))?;
        let argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).chain([ptr::null()]).collect();
        let envp_ptrs: Vec<*const c_char> = envp.iter().map(|e| e.as_ptr()).chain([ptr::null()]).collect();

        let setup = |what| move |source| SpawnError::Setup { what, source };
        let stdin = std::fs::File::open("/dev/null").map_err(setup("opening /dev/null"))?;
        let (out_read, out_write) = pipe_for_child().map_err(setup("creating the stdout pipe"))?;
        let (err_read, err_write) = pipe_for_child().map_err(setup("creating the stderr pipe"))?;

        let report = Report::default();
        let args = ChildArgs {
            path: path.as_ptr(),
            argv: argv_ptrs.as_ptr(),
            envp: envp_ptrs.as_ptr(),
            workdir: workdir.as_ptr(),
            fds: [stdin.as_raw_fd(), out_write.as_raw_fd(), err_write.as_raw_fd()],
            ids: self.ids,
            report: &report,
        };
        let pid = clone_child(&args).map_err(setup("starting the process (clone)"))?;
        // The child has exec'd or exited: its copies of these are its own now.
        drop((stdin, out_write, err_write));

        if let Some(step) = Step::from_code(report.step.load(Ordering::Relaxed)) {
            let errno = report.errno.load(Ordering::Relaxed);
            // It exited with 127 right after reporting; reap it now.
            let _ = reap(pid, 0);
            return Err(SpawnError::Child { step, source: io::Error::from_raw_os_error(errno) });
        }

        let mut child = Child { pid, pidfd: None, status: None, stdout: None, stderr: None };
        // From here on, a failure drops `child`, which kills and reaps the process.
        child.pidfd = Some(pidfd_open(pid).map_err(setup("watching the process (pidfd_open)"))?);
        child.stdout = Some(receiver(out_read).map_err(setup("reading the stdout pipe"))?);
        child.stderr = Some(receiver(err_read).map_err(setup("reading the stderr pipe"))?);
        Ok(child)
    }
}

/// A pipe whose ends are closed on exec; the read end (the parent's) non-blocking.
fn pipe_for_child() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [c_int; 2] = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors owned by no one else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETFL on a descriptor we own; no pointers involved.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

fn receiver(read: OwnedFd) -> io::Result<pipe::Receiver> {
    // `pipe_for_child` made it a non-blocking read end of a pipe.
    pipe::Receiver::from_owned_fd_unchecked(read)
}

fn pidfd_open(pid: i32) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it. pidfds are
    // opened close-on-exec.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an `OwnedFd` stays open and returns the same descriptor until dropped,
    // which is only after the `AsyncFd` is. A pidfd polls readable once the process
    // exited and never writable.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Creates the child with all signals blocked (so no handler of the server runs in it
/// before it reset them) and returns its pid once it exec'd or exited.
fn clone_child(args: &ChildArgs) -> io::Result<i32> {
    let mut stack = Stack::new()?;
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask reads `all` and writes `old`, both 8-byte sets as the
    // kernel expects. The raw call blocks glibc's internal signals too, as glibc's
    // posix_spawn does; the mask is restored below on every path.
    if unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &all, &mut old, 8) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `child_main` follows the rules of a CLONE_VM child (raw system calls
    // only, no allocation or locks, never returns into the parent's frames); it runs
    // on `stack`, which nothing else uses and which outlives the child's use of it
    // because CLONE_VFORK suspends this thread until the child exec'd or exited. `args`
    // and everything it points to live until this function returns.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            args as *const ChildArgs as *mut c_void,
        )
    };
    let cloned = if pid < 0 { Err(io::Error::last_os_error()) } else { Ok(pid) };
    // SAFETY: as above; `old` is the mask this thread had.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &old, ptr::null_mut::<u64>(), 8) };
    drop(stack);
    cloned
}

/// The child's stack: an anonymous mapping with an inaccessible page at its bottom.
struct Stack {
    base: *mut c_void,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = STACK_SIZE + GUARD_SIZE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base };
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, GUARD_SIZE, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The highest address: the stack grows down from it (16-byte aligned).
    fn top(&mut self) -> *mut c_void {
        self.base.wrapping_byte_add(STACK_SIZE + GUARD_SIZE)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used (see `clone_child`).
        unsafe { libc::munmap(self.base, STACK_SIZE + GUARD_SIZE) };
    }
}

/// A raw system call; `Err(())` when it failed (errno is set).
fn sys(r: c_long) -> Result<c_long, ()> {
    if r < 0 { Err(()) } else { Ok(r) }
}

/// The child, between `clone` and `execve`. It shares the server's memory and runs
/// with all signals blocked: only raw system calls, on data the parent prepared.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` that `clone_child`'s caller keeps alive while
    // this runs.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let step = match child_steps(args) {
        Ok(()) => Step::Exec,
        Err(step) => step,
    };
    // SAFETY: errno is the calling thread's (this child runs on the parent thread's
    // TLS, which sleeps until we exit); reading it has no other effect.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: `report` lives in the parent's frame, alive until we exit.
    let report = unsafe { &*args.report };
    report.errno.store(errno, Ordering::Relaxed);
    report.step.store(step.code(), Ordering::Relaxed);
    // SAFETY: ends this process only (it is not a thread of the server's group).
    unsafe { libc::syscall(libc::SYS_exit, 127) };
    127
}

/// The steps up to `execve`; returns only on failure (`Ok` means execve returned,
/// which is also a failure).
fn child_steps(args: &ChildArgs) -> Result<(), Step> {
    // SAFETY (for every call below): raw system calls with integer arguments or
    // pointers into `args`' data, which the parent keeps alive and unchanged.
    unsafe {
        // The server's handlers must not run here: reset every one it installed.
        // Ignored signals stay ignored (as exec keeps them), except SIGPIPE, which
        // Rust ignores in the server and std's `Command` resets for children.
        let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
            let null = ptr::null::<KernelSigaction>();
            if libc::syscall(libc::SYS_rt_sigaction, sig, null, &mut old, 8) != 0 {
                continue;
            }
            let reset = sig == libc::SIGPIPE || (old.handler != libc::SIG_IGN && old.handler != libc::SIG_DFL);
            if reset {
                sys(libc::syscall(libc::SYS_rt_sigaction, sig, &default, ptr::null_mut::<KernelSigaction>(), 8))
                    .map_err(|()| Step::Signals)?;
            }
        }
        sys(libc::syscall(libc::SYS_setpgid, 0, 0)).map_err(|()| Step::ProcessGroup)?;
        for (target, fd) in (0..).zip(args.fds) {
            // Rust keeps descriptors 0-2 open at start, so the prepared ones are above
            // them; if one were not, it only needs to survive the exec.
            let r = if fd == target {
                libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, 0)
            } else {
                libc::syscall(libc::SYS_dup3, fd, target, 0)
            };
            sys(r).map_err(|()| Step::Descriptors)?;
        }
        sys(libc::syscall(libc::SYS_chdir, args.workdir)).map_err(|()| Step::Chdir)?;
        if let Some(ids) = args.ids {
            sys(libc::syscall(libc::SYS_setgroups, 0, ptr::null::<libc::gid_t>())).map_err(|()| Step::SetGroups)?;
            sys(libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid)).map_err(|()| Step::SetGid)?;
            sys(libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid)).map_err(|()| Step::SetUid)?;
        }
        let empty: u64 = 0;
        sys(libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty, ptr::null_mut::<u64>(), 8))
            .map_err(|()| Step::SignalMask)?;
        libc::syscall(libc::SYS_execve, args.path, args.argv, args.envp);
    }
    Ok(())
}
