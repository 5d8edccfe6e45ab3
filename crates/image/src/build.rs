//! `image` tasks on the Docker Engine: tar the context (minus `.dockerignore`d
//! files), `POST /build` with the build args, stream the build log, then push with
//! the registry's credentials (`X-Registry-Auth`) and read the digest the registry
//! stored from the push's last status line.

use crate::reference::Reference;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, PushImageOptions};
use futures_util::StreamExt;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wharf_executor::build::{BuildError, BuildExit, BuildSpec, Built, ImageBuilder};
use wharf_executor::{BoxFuture, LogLine, LogSink, StopSignal, Stream};

/// Builds with a Docker Engine reached over its unix socket.
#[derive(Clone)]
pub struct DockerBuilder {
    docker: Docker,
    socket: String,
}

impl DockerBuilder {
    /// `socket`: `unix:///var/run/docker.sock` or a path. Connecting is lazy; call
    /// [`DockerBuilder::ping`] to know whether the daemon answers.
    pub fn connect(socket: &str) -> Result<DockerBuilder, String> {
        let path = socket.strip_prefix("unix://").unwrap_or(socket);
        // The timeout bounds waiting for an answer's headers; builds stream after that,
        // and the task's own timeout bounds them.
        let docker = Docker::connect_with_unix(path, 3600, bollard::API_DEFAULT_VERSION)
            .map_err(|e| format!("cannot use the Docker socket {socket}: {e}"))?;
        Ok(DockerBuilder { docker, socket: socket.to_owned() })
    }

    pub async fn ping(&self) -> Result<(), String> {
        self.docker
            .ping()
            .await
            .map(drop)
            .map_err(|e| format!("the Docker Engine at {} does not answer: {e}", self.socket))
    }

    async fn run(
        &self,
        spec: BuildSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> Result<BuildExit, BuildError> {
        let log = |text: &str| {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                logs.line(LogLine {
                    at: jiff::Timestamp::now(),
                    stream: Stream::Stdout,
                    text: line.to_owned(),
                    continued: false,
                });
            }
        };
        let system = |text: String| {
            logs.line(LogLine::system(text));
        };
        let reference = Reference::parse(&spec.image).map_err(|e| BuildError(e.to_string()))?;
        let tag = reference.tag.clone().ok_or_else(|| BuildError(format!("`{}` has no tag", spec.image)))?;
        let repository = format!("{}/{}", spec.registry.host, reference.repository);

        system(format!(
            "building {} from {} (context {})",
            spec.image,
            spec.dockerfile.display(),
            spec.context.display()
        ));
        let context = spec.context.clone();
        let dockerfile = spec.dockerfile.clone();
        let (archive, dockerfile_name) = tokio::task::spawn_blocking(move || context_tar(&context, &dockerfile))
            .await
            .map_err(|e| BuildError(format!("packing the build context: {e}")))?
            .map_err(|e| BuildError(format!("packing the build context {}: {e}", spec.context.display())))?;
        let file =
            tokio::fs::File::open(&archive).await.map_err(|e| BuildError(format!("reading the build context: {e}")))?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
        let options = BuildImageOptions {
            dockerfile: dockerfile_name,
            t: Some(spec.image.clone()),
            rm: true,
            forcerm: true,
            buildargs: Some(spec.build_args.iter().cloned().collect::<HashMap<_, _>>()),
            labels: Some(spec.labels.iter().cloned().collect::<HashMap<_, _>>()),
            ..Default::default()
        };
        // The registry's login pushes the image and also serves `FROM` images in it.
        let login = spec.registry.username.as_ref().map(|user| DockerCredentials {
            username: Some(user.clone()),
            password: spec.registry.password.clone(),
            serveraddress: Some(spec.registry.host.clone()),
            ..Default::default()
        });
        let credentials = login.clone().map(|login| HashMap::from([(spec.registry.host.clone(), login)]));
        let mut built = false;
        {
            let stream = self.docker.build_image(options, credentials, Some(body));
            tokio::pin!(stream);
            loop {
                let item = tokio::select! {
                    request = stopped(&mut stop) => {
                        system(format!("build stopped ({request})"));
                        return Ok(BuildExit::Stopped(request));
                    }
                    item = stream.next() => item,
                };
                let Some(item) = item else { break };
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                            return Err(BuildError(format!("the Docker build failed: {}", detail.trim())));
                        }
                        if let Some(text) = info.stream.as_deref() {
                            log(text);
                        }
                        if let Some(status) = info.status.as_deref().filter(|_| info.progress_detail.is_none()) {
                            log(status);
                        }
                        if info.aux.is_some() {
                            built = true;
                        }
                    }
                    Err(e) => return Err(BuildError(format!("the Docker build failed: {}", docker_message(e)))),
                }
            }
        }
        drop(archive);
        if !built && self.docker.inspect_image(&spec.image).await.is_err() {
            return Err(BuildError("the Docker build ended without producing an image".into()));
        }

        system(format!("pushing {} to registry `{}` ({})", spec.image, spec.registry.name, spec.registry.host));
        let options = PushImageOptions { tag: Some(tag.clone()), ..Default::default() };
        let stream = self.docker.push_image(&repository, Some(options), login);
        tokio::pin!(stream);
        let mut digest = None;
        let push_failed = |why: String| {
            BuildError(format!(
                "pushing {} to registry `{}` ({}) failed: {why}",
                spec.image, spec.registry.name, spec.registry.host
            ))
        };
        loop {
            let item = tokio::select! {
                request = stopped(&mut stop) => {
                    system(format!("push stopped ({request})"));
                    return Ok(BuildExit::Stopped(request));
                }
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(push_failed(detail));
                    }
                    if let Some(status) = info.status.as_deref() {
                        if let Some(d) = push_digest(status) {
                            digest = Some(d);
                        }
                        // Per-layer progress would flood the log; the outcome lines stay.
                        let progress = info.progress_detail.as_ref().is_some_and(|p| p.current.is_some());
                        if !progress && !matches!(status, "Preparing" | "Waiting" | "Pushing") {
                            log(status);
                        }
                    }
                }
                Err(e) => return Err(push_failed(docker_message(e))),
            }
        }
        let digest = digest.ok_or_else(|| push_failed("the Docker Engine did not report the pushed digest".into()))?;
        system(format!("pushed {} ({digest})", spec.image));
        Ok(BuildExit::Built(Built { image: spec.image, digest }))
    }
}

impl ImageBuilder for DockerBuilder {
    fn build<'a>(
        &'a self,
        spec: BuildSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<BuildExit, BuildError>> {
        Box::pin(self.run(spec, logs, stop))
    }
}

async fn stopped(stop: &mut StopSignal) -> wharf_executor::StopReason {
    loop {
        if let Some(request) = *stop.borrow_and_update() {
            return request.reason;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The daemon's own words from a bollard error.
fn docker_message(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerStreamError { error } => error,
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            format!("{message} ({status_code})")
        }
        other => other.to_string(),
    }
}

/// `alpha-1: digest: sha256:… size: 527` → the digest.
fn push_digest(status: &str) -> Option<String> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    crate::reference::check_digest(digest).ok()?;
    Some(digest.to_owned())
}

/// Writes the context as a tar into a temp file; returns it and the Dockerfile's
/// name inside it. Symlinks are stored as links (never followed), so nothing outside
/// the context goes in; a Dockerfile outside the context is added as `.wharf.Dockerfile`.
///
/// The checkout is a task's to write while this runs (a parallel container task, as
/// root), and the server reading it may be root: so the walk never resolves a path
/// again. Each directory is opened relative to its parent's descriptor with
/// `O_NOFOLLOW`, each file the same way, and the path to the context itself must hold
/// no link (it is canonical), so swapping a directory for a link mid-walk makes the
/// build fail instead of packing what the link points at.
fn context_tar(context: &Path, dockerfile: &Path) -> std::io::Result<(tempfile::TempPath, String)> {
    let root = open_dir_nofollow(context)?;
    let ignore = DockerIgnore::parse(&read_dockerignore(&root)?);
    let mut out = tempfile::NamedTempFile::new()?;
    let dockerfile_name = match dockerfile.strip_prefix(context) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => ".wharf.Dockerfile".to_owned(),
    };
    {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out.as_file_mut()));
        let mut stack: Vec<(PathBuf, OwnedFd)> = vec![(PathBuf::new(), root)];
        while let Some((rel, dir)) = stack.pop() {
            let mut names: Vec<std::ffi::OsString> = Vec::new();
            for entry in nix::dir::Dir::from_fd(dir.try_clone()?).map_err(std::io::Error::from)?.into_iter() {
                let entry = entry.map_err(std::io::Error::from)?;
                let name = std::ffi::OsStr::from_bytes(entry.file_name().to_bytes());
                if name != "." && name != ".." {
                    names.push(name.to_owned());
                }
            }
            names.sort();
            for name in names {
                let rel_path = rel.join(&name);
                let rel_text = rel_path.to_string_lossy().replace('\\', "/");
                let is_dockerfile = rel_text == dockerfile_name || rel_text == ".dockerignore";
                if ignore.excludes(&rel_text) && !is_dockerfile {
                    continue;
                }
                let stat = nix::sys::stat::fstatat(&dir, name.as_os_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
                let kind = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
                if kind == nix::sys::stat::SFlag::S_IFDIR {
                    let sub = openat(&dir, name.as_os_str(), DIR_FLAGS, Mode::empty())?;
                    let mut header = header_of(&std::fs::File::from(sub.try_clone()?).metadata()?);
                    tar.append_data(&mut header, &rel_path, std::io::empty())?;
                    stack.push((rel_path, sub));
                } else if kind == nix::sys::stat::SFlag::S_IFREG {
                    let file = std::fs::File::from(openat(&dir, name.as_os_str(), FILE_FLAGS, Mode::empty())?);
                    let meta = file.metadata()?;
                    if !meta.is_file() {
                        return Err(std::io::Error::other(format!("{rel_text} changed while the context was read")));
                    }
                    tar.append_data(&mut header_of(&meta), &rel_path, file)?;
                } else if kind == nix::sys::stat::SFlag::S_IFLNK {
                    let target = nix::fcntl::readlinkat(&dir, name.as_os_str())?;
                    let mut header = tar::Header::new_gnu();
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, &rel_path, &target)?;
                }
            }
        }
        if dockerfile.strip_prefix(context).is_err() {
            let (parent, file_name) = match (dockerfile.parent(), dockerfile.file_name()) {
                (Some(parent), Some(name)) => (parent, name),
                _ => return Err(std::io::Error::other("the Dockerfile's path names no file")),
            };
            let file = std::fs::File::from(openat(&open_dir_nofollow(parent)?, file_name, FILE_FLAGS, Mode::empty())?);
            tar.append_data(&mut header_of(&file.metadata()?), &dockerfile_name, file)?;
        } else if ignore.excludes(&dockerfile_name) && !context.join(&dockerfile_name).exists() {
            return Err(std::io::Error::other("the Dockerfile is missing"));
        }
        tar.into_inner()?.flush()?;
    }
    Ok((out.into_temp_path(), dockerfile_name))
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);
const FILE_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_NOFOLLOW).union(OFlag::O_NONBLOCK).union(OFlag::O_CLOEXEC);

/// Opens `path` one component at a time, none of them a link (`path` is canonical).
fn open_dir_nofollow(path: &Path) -> std::io::Result<OwnedFd> {
    let mut dir = nix::fcntl::open(if path.is_absolute() { "/" } else { "." }, DIR_FLAGS, Mode::empty())?;
    for part in path.components() {
        if let std::path::Component::Normal(name) = part {
            dir = openat(&dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| {
                std::io::Error::other(format!(
                    "{}: cannot open {name:?} without following a link ({e})",
                    path.display()
                ))
            })?;
        }
    }
    Ok(dir)
}

/// The context's `.dockerignore` (empty when there is none); a link there is refused.
fn read_dockerignore(context: &OwnedFd) -> std::io::Result<String> {
    match openat(context, ".dockerignore", FILE_FLAGS, Mode::empty()) {
        Ok(fd) => std::io::read_to_string(std::fs::File::from(fd)),
        Err(nix::errno::Errno::ENOENT) => Ok(String::new()),
        Err(nix::errno::Errno::ELOOP) => Err(std::io::Error::other(".dockerignore is a symbolic link")),
        Err(e) => Err(e.into()),
    }
}

/// A tar header with the mode, size, times and owner of what was opened.
fn header_of(meta: &std::fs::Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata(meta);
    header
}

/// The simple part of `.dockerignore`: one pattern a line, `#` comments, `*`, `?`
/// and `**` globs over `/`-separated paths, `!` to re-include; the last matching
/// line wins, and excluding a directory excludes what is inside it.
struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn parse(text: &str) -> DockerIgnore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (include, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let parts = pattern
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(str::to_owned)
                    .collect();
                (include, parts)
            })
            .collect();
        DockerIgnore { rules }
    }

    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (include, pattern) in &self.rules {
            // A pattern matches the path or one of its parent directories.
            let hit = (1..=parts.len()).any(|n| glob_parts(pattern, &parts[..n]));
            if hit {
                excluded = !include;
            }
        }
        excluded
    }
}

fn glob_parts(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => (0..=parts.len()).any(|skip| glob_parts(rest, &parts[skip..])),
        Some((first, rest)) => match parts.split_first() {
            Some((part, more)) => glob(first.as_bytes(), part.as_bytes()) && glob_parts(rest, more),
            None => false,
        },
    }
}

/// `*` and `?` within one path component.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        (Some((b'?', rest)), Some((_, more))) => glob(rest, more),
        (Some((p, rest)), Some((t, more))) if p == t => glob(rest, more),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns() {
        let ignore = DockerIgnore::parse("# comment\n*.log\nnode_modules\n**/tmp\nsecret/*\n!secret/keep.txt\n/.git\n");
        for excluded in ["a.log", "node_modules", "node_modules/x/y.js", "tmp", "a/b/tmp/c", "secret/k", ".git/HEAD"] {
            assert!(ignore.excludes(excluded), "{excluded}");
        }
        for kept in ["a.log.txt", "src/a.log", "secret/keep.txt", "src/main.rs", "Dockerfile"] {
            assert!(!ignore.excludes(kept), "{kept}");
        }
    }

    #[tokio::test]
    async fn a_bad_reference_fails_before_the_daemon_is_asked() {
        // No daemon listens there (a plain file): the reference is refused first.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        std::fs::write(&socket, "").unwrap();
        let builder = DockerBuilder::connect(&format!("unix://{}", socket.display())).unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let registry = wharf_executor::build::RegistryLogin {
            name: "local".into(),
            host: "127.0.0.1:5055".into(),
            username: None,
            password: None,
            insecure: true,
        };
        for (image, expected) in [
            ("127.0.0.1:5055/devops/Jack:1", "must be lowercase"),
            ("127.0.0.1:5055/devops/jack:alpha 1", "it contains ' '"),
            ("127.0.0.1:5055/dev..ops/jack:1", "`..` is not a separator"),
            ("127.0.0.1:5055/devops/jack:$(id)", "'$' is not allowed"),
        ] {
            let spec = BuildSpec {
                run: "p#1".into(),
                stage: "Build".into(),
                task: "t".into(),
                context: dir.path().to_path_buf(),
                dockerfile: dir.path().join("Dockerfile"),
                build_args: vec![],
                image: image.into(),
                registry: registry.clone(),
                labels: vec![],
                checkout: dir.path().to_path_buf(),
                owner_labels: vec![],
                cluster: None,
            };
            let (_tx, stop) = tokio::sync::watch::channel(None);
            let logs: Arc<dyn LogSink> = Arc::new(Discard);
            let err = builder.build(spec, logs, stop).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{image}: {err}");
        }
    }

    struct Discard;

    impl LogSink for Discard {
        fn line(&self, _: LogLine) {}
    }

    #[test]
    fn push_digests_are_read_from_the_status() {
        let d = format!("sha256:{}", "0f".repeat(32));
        assert_eq!(push_digest(&format!("alpha-1: digest: {d} size: 527")), Some(d));
        assert_eq!(push_digest("Pushed"), None);
        assert_eq!(push_digest("x: digest: sha256:zz size: 1"), None);
    }

    /// A task may swap a directory of the checkout for a link while the context is
    /// packed (issue 11 review): the walk neither follows a link inside the context nor
    /// passes through one on the way to it.
    #[test]
    fn the_context_walk_never_passes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("app")).unwrap();
        std::fs::write(root.join("app/Dockerfile"), "FROM scratch\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("app/etc")).unwrap();
        let (tar_path, _) = context_tar(&root.join("app"), &root.join("app/Dockerfile")).unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert!(names.contains(&"etc".to_owned()) && !names.iter().any(|n| n.starts_with("etc/")), "{names:?}");

        // The context reached through a link (as after a swap): refused, nothing packed.
        std::os::unix::fs::symlink(root.join("app"), root.join("swapped")).unwrap();
        let err = context_tar(&root.join("swapped"), &root.join("swapped/Dockerfile")).unwrap_err();
        assert!(err.to_string().contains("without following a link"), "{err}");
    }

    #[test]
    fn the_context_tar_leaves_out_ignored_files_and_keeps_symlinks_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join(".dockerignore"), "*.log\nDockerfile\n").unwrap();
        std::fs::write(root.join("app.log"), "x").unwrap();
        std::fs::create_dir(root.join("web")).unwrap();
        std::fs::write(root.join("web/index.html"), "<p>").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("web/passwd")).unwrap();
        let (tar_path, name) = context_tar(root, &root.join("Dockerfile")).unwrap();
        assert_eq!(name, "Dockerfile");
        let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let kind = e.header().entry_type();
            seen.push((e.path().unwrap().to_string_lossy().into_owned(), kind.is_symlink()));
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (".dockerignore".into(), false),
                ("Dockerfile".into(), false),
                ("web".into(), false),
                ("web/index.html".into(), false),
                ("web/passwd".into(), true),
            ]
        );
    }
}
