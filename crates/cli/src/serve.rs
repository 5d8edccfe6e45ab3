//! `wharf serve`: configuration layered as built-in defaults, then the config file
//! (TOML), then `WHARF_*` environment variables, then flags; unknown config keys are
//! warned about, not ignored silently.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wharf_core::model::ExecutorKind;
use wharf_server::{Server, ServerConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A TOML config file (keys: listen, data_dir, database_url, executor, docker_socket,
    /// docker_network, docker_default_image, allow_host, host_forks, host_user, max_parallel_tasks, stop_grace,
    /// log_cap_mb, admin_token, admin_password, secret_key, old_secret_keys, licence_file,
    /// licence_public_key, session_hours, cookie_secure, timer_grace, timezone, public_url,
    /// ca_file, outbound_allow, default_registry, default_cluster, kube_builder_image, max_connections, header_timeout,
    /// notify_secret, [retention] runs, days, workspaces, deliveries, [smtp] host, port,
    /// security, username, password, from).
    #[arg(long, env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "WHARF_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where the database, logs and workspaces live [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB` [default: sqlite://<data-dir>/wharf.db].
    #[arg(long, env = "WHARF_DATABASE_URL")]
    database_url: Option<String>,
    /// host | docker | kubernetes [default: docker when a Docker socket answers, else host].
    #[arg(long, env = "WHARF_EXECUTOR")]
    executor: Option<String>,
    /// The Docker Engine's socket [default: unix:///var/run/docker.sock].
    #[arg(long, env = "WHARF_DOCKER_SOCKET")]
    docker_socket: Option<String>,
    /// Network mode of task containers (bridge, host, none, a network name)
    /// [default: the daemon's].
    #[arg(long, env = "WHARF_DOCKER_NETWORK")]
    docker_network: Option<String>,
    /// Tasks running at once across all runs [default: 8].
    #[arg(long, env = "WHARF_MAX_PARALLEL_TASKS")]
    max_parallel_tasks: Option<usize>,
    /// Grace between SIGTERM and SIGKILL when stopping, e.g. `10s` [default: 10s].
    #[arg(long, env = "WHARF_STOP_GRACE")]
    stop_grace: Option<String>,
    /// On PostgreSQL (replicas): how long a claim on a run holds without renewal, so how
    /// soon another replica takes over the runs of one that died, e.g. `30s` (at least
    /// 1s) [default: 30s].
    #[arg(long, env = "WHARF_REPLICA_LEASE")]
    replica_lease: Option<String>,
    /// On PostgreSQL: how long SIGTERM waits for this server's runs to end before
    /// handing the rest over to another replica, e.g. `60s` [default: 60s].
    #[arg(long, env = "WHARF_DRAIN_GRACE")]
    drain_grace: Option<String>,
    /// How old a due time missed while the server was down may be and still get its one
    /// catch-up run (timers with `missed: once`), e.g. `30m`, `2h` [default: 1h].
    #[arg(long, env = "WHARF_TIMER_GRACE")]
    timer_grace: Option<String>,
    /// The default time zone of timer triggers, an IANA name like `Europe/Berlin` or
    /// `UTC` [default: the system's].
    #[arg(long, env = "WHARF_TIMEZONE")]
    timezone: Option<String>,
    /// Where code hosts reach this server, e.g. `https://ci.example.com`: the base of
    /// the webhook addresses Wharf installs [default: none; webhooks are installed by hand].
    #[arg(long, env = "WHARF_PUBLIC_URL")]
    public_url: Option<String>,
    /// A PEM file of extra CA certificates to trust for HTTPS to code hosts (private
    /// GitLab, Gitee or GitHub Enterprise instances with their own CA).
    #[arg(long, env = "WHARF_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Internal hosts and networks the server may call for code hosts and OAuth
    /// (host names, IP addresses, CIDRs; comma-separated), e.g. `git.internal,10.0.0.0/8`.
    /// Loopback, link-local and private addresses not named are refused [default: none].
    #[arg(long, env = "WHARF_OUTBOUND_ALLOW", value_delimiter = ',')]
    outbound_allow: Option<Vec<String>>,
    /// Per-task log cap in MB [default: 100].
    #[arg(long, env = "WHARF_LOG_CAP_MB")]
    log_cap_mb: Option<u64>,
    /// The registry (by registered name) of `image` tasks that name none.
    #[arg(long, env = "WHARF_DEFAULT_REGISTRY")]
    default_registry: Option<String>,
    /// The cluster (by registered name) of pipelines on the kubernetes executor that name
    /// no `cluster:`.
    #[arg(long, env = "WHARF_DEFAULT_CLUSTER")]
    default_cluster: Option<String>,
    /// The image of builder pods, where pipelines on the kubernetes executor build `image`
    /// tasks when the server has no Docker Engine [default: moby/buildkit:rootless].
    #[arg(long, env = "WHARF_KUBE_BUILDER_IMAGE")]
    kube_builder_image: Option<String>,
    /// text | json.
    #[arg(long, env = "WHARF_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// A signed licence file that raises the pipeline limit (trial: 10).
    #[arg(long, env = "WHARF_LICENCE_FILE")]
    licence_file: Option<PathBuf>,
    /// The SMTP server of `email` notifications (its password: `WHARF_SMTP_PASSWORD` or
    /// `[smtp] password` in the config file, never a flag).
    #[arg(long, env = "WHARF_SMTP_HOST")]
    smtp_host: Option<String>,
    /// The SMTP port [default: 587 with starttls, 465 with tls, 25 with none].
    #[arg(long, env = "WHARF_SMTP_PORT")]
    smtp_port: Option<u16>,
    /// starttls | tls | none [default: starttls].
    #[arg(long, env = "WHARF_SMTP_SECURITY")]
    smtp_security: Option<String>,
    /// The SMTP login's user name (no login when unset).
    #[arg(long, env = "WHARF_SMTP_USERNAME")]
    smtp_username: Option<String>,
    /// The sender of notification e-mails, `ci@example.com` or `Wharf <ci@example.com>`.
    #[arg(long, env = "WHARF_SMTP_FROM")]
    smtp_from: Option<String>,
    /// Make a new key for secrets at rest (key file only), re-seal every stored secret
    /// with it at start, and drop the old key.
    #[arg(long)]
    rotate_secret_key: bool,
}

const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "executor",
    "docker_socket",
    "docker_network",
    "docker_default_image",
    "allow_host",
    "host_forks",
    "host_user",
    "max_parallel_tasks",
    "stop_grace",
    "replica_lease",
    "drain_grace",
    "log_cap_mb",
    "admin_token",
    "admin_password",
    "secret_key",
    "old_secret_keys",
    "licence_file",
    "licence_public_key",
    "session_hours",
    "cookie_secure",
    "timer_grace",
    "timezone",
    "public_url",
    "ca_file",
    "outbound_allow",
    "retention",
    "default_registry",
    "default_cluster",
    "kube_builder_image",
    "max_connections",
    "header_timeout",
    "notify_secret",
    "smtp",
];

fn file_config(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            eprintln!("warning: {}: unknown key `{key}` ignored (known: {})", path.display(), KEYS.join(", "));
        }
    }
    Ok(table)
}

/// The SMTP settings: flags (and their `WHARF_SMTP_*` variables) over the file's
/// `[smtp]` table; `None` without a host.
fn smtp(args: &ServeArgs, table: Option<&toml::Value>) -> Result<Option<wharf_notify::email::SmtpSettings>> {
    use wharf_notify::email::{Security, SmtpSettings};
    let table = match table {
        None => None,
        Some(value) => {
            Some(value.as_table().context("[smtp] must be a table: host, port, security, username, password, from")?)
        }
    };
    let get = |key: &str| table.and_then(|t| t.get(key)).and_then(|v| v.as_str()).map(str::to_owned);
    let Some(host) = args.smtp_host.clone().or(get("host")).filter(|h| !h.trim().is_empty()) else {
        return Ok(None);
    };
    let security = match args.smtp_security.clone().or(get("security")) {
        None => Security::StartTls,
        Some(text) => {
            Security::parse(&text).with_context(|| format!("smtp security `{text}`: expected starttls, tls or none"))?
        }
    };
    let port = match args.smtp_port.or(table.and_then(|t| t.get("port")).and_then(|v| v.as_integer()).map(|p| p as u16))
    {
        Some(port) => port,
        None => match security {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        },
    };
    let from = args
        .smtp_from
        .clone()
        .or(get("from"))
        .context("smtp: `from` (the sender address, --smtp-from or [smtp] from) is required with a host")?;
    let password = std::env::var("WHARF_SMTP_PASSWORD").ok().filter(|p| !p.is_empty()).or(get("password"));
    Ok(Some(SmtpSettings {
        host: host.trim().to_owned(),
        port,
        security,
        username: args.smtp_username.clone().or(get("username")).filter(|u| !u.is_empty()),
        password,
        from,
    }))
}

/// An IANA time zone name, checked against the time zone database now rather than
/// when the first timer fires.
fn time_zone(name: &str) -> Result<jiff::tz::TimeZone> {
    let name = name.trim();
    jiff::tz::TimeZone::get(name).map_err(|e| {
        anyhow::anyhow!(
            "timezone `{name}` is not a time zone this system knows ({e}); use an IANA name like Europe/Berlin, \
             Asia/Shanghai or UTC"
        )
    })
}

fn duration(text: &str, what: &str) -> Result<Duration> {
    // Durations here are seconds when bare (unlike pipeline timeouts, which are minutes).
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    Ok(wharf_core::Duration::parse(text).with_context(|| format!("{what}: `{text}`"))?.as_std())
}

/// The configuration, with the executor still to be decided when none was given
/// (`None`: docker when a Docker socket answers, else host; see [`serve`]).
pub fn config(args: &ServeArgs) -> Result<(ServerConfig, Option<ExecutorKind>)> {
    let file = match &args.config {
        Some(path) => file_config(path)?,
        None => toml::Table::new(),
    };
    let s = |key: &str| file.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let n = |key: &str| file.get(key).and_then(|v| v.as_integer());
    let data_dir =
        args.data_dir.clone().or(s("data_dir").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("wharf-data"));
    let mut config = ServerConfig::new(data_dir);
    if let Some(listen) = args.listen.or(s("listen").map(|l| l.parse()).transpose().context("listen")?) {
        config.listen = listen;
    }
    config.database_url = args.database_url.clone().or(s("database_url"));
    if let Some(url) = &config.database_url
        && !url.starts_with("sqlite:")
        && !wharf_store::is_postgres_url(url)
    {
        // Only the scheme is repeated: the rest may hold a password.
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        bail!(
            "database_url with the scheme `{scheme}`: expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
        );
    }
    let executor = match args.executor.clone().or(s("executor")).as_deref() {
        None => None,
        Some("host") => Some(ExecutorKind::Host),
        Some("docker") => Some(ExecutorKind::Docker),
        Some("kubernetes") => Some(ExecutorKind::Kubernetes),
        Some(other) => bail!("unknown executor `{other}`: expected host, docker or kubernetes"),
    };
    config.docker.socket = args.docker_socket.clone().or(s("docker_socket"));
    config.docker.network = args.docker_network.clone().or(s("docker_network"));
    config.docker.default_image = std::env::var("WHARF_DOCKER_DEFAULT_IMAGE").ok().or(s("docker_default_image"));
    if let Some(allow) = file.get("allow_host") {
        config.allow_host = allow.as_bool().context("allow_host: expected true or false")?;
    }
    if let Ok(allow) = std::env::var("WHARF_ALLOW_HOST") {
        config.allow_host = matches!(allow.as_str(), "1" | "true" | "yes");
    }
    if let Some(allow) = file.get("host_forks") {
        config.host_forks = allow.as_bool().context("host_forks: expected true or false")?;
    }
    if let Ok(allow) = std::env::var("WHARF_HOST_FORKS") {
        config.host_forks = matches!(allow.as_str(), "1" | "true" | "yes");
    }
    if let Some(user) = std::env::var("WHARF_HOST_USER").ok().or(s("host_user")).filter(|u| !u.trim().is_empty()) {
        config.host_user = user.trim().to_owned();
    }
    if let Some(n) = args.max_parallel_tasks.or(n("max_parallel_tasks").map(|v| v as usize)) {
        config.max_parallel_tasks = n.max(1);
    }
    if let Some(grace) = args.stop_grace.clone().or(s("stop_grace")).or(n("stop_grace").map(|v| v.to_string())) {
        config.stop_grace = duration(&grace, "stop_grace")?;
    }
    if let Some(lease) = args.replica_lease.clone().or(s("replica_lease")).or(n("replica_lease").map(|v| v.to_string()))
    {
        config.replica_lease = duration(&lease, "replica_lease")?;
        if config.replica_lease < Duration::from_secs(1) {
            bail!("replica_lease: `{lease}` is shorter than 1s (renewals come every third of it)");
        }
    }
    if let Some(grace) = args.drain_grace.clone().or(s("drain_grace")).or(n("drain_grace").map(|v| v.to_string())) {
        config.drain_grace = duration(&grace, "drain_grace")?;
    }
    if let Some(grace) = args.timer_grace.clone().or(s("timer_grace")).or(n("timer_grace").map(|v| v.to_string())) {
        config.timer_grace = duration(&grace, "timer_grace")?;
    }
    if let Some(zone) = args.timezone.clone().or(s("timezone")) {
        config.timezone = time_zone(&zone)?;
    }
    if let Some(url) = args.public_url.clone().or(s("public_url")).filter(|u| !u.trim().is_empty()) {
        config.public_url = Some(wharf_server::forges::check_public_url(url.trim()).map_err(anyhow::Error::msg)?);
    }
    config.ca_file = args.ca_file.clone().or(s("ca_file").map(PathBuf::from));
    if let Some(path) = &config.ca_file
        && !path.is_file()
    {
        bail!("ca_file {}: no such file (a PEM bundle of CA certificates)", path.display());
    }
    config.outbound_allow = match (&args.outbound_allow, file.get("outbound_allow")) {
        (Some(list), _) => list.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect(),
        (None, None) => Vec::new(),
        (None, Some(value)) => value
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
            .context(
                "outbound_allow must be a list of strings: host names, IP addresses or CIDRs, like \
                 outbound_allow = [\"git.internal\", \"10.0.0.0/8\"]",
            )?,
    };
    if let Some(mb) = args.log_cap_mb.or(n("log_cap_mb").map(|v| v as u64)) {
        config.log_cap_bytes = mb.max(1) * 1_000_000;
    }
    let env = |var: &str| std::env::var(var).ok().filter(|t| !t.is_empty());
    config.admin_token = env("WHARF_ADMIN_TOKEN").or(s("admin_token"));
    config.admin_password = env("WHARF_ADMIN_PASSWORD").or(s("admin_password"));
    config.secret_key = env("WHARF_SECRET_KEY").or(s("secret_key"));
    config.old_secret_keys = match env("WHARF_OLD_SECRET_KEYS") {
        Some(list) => list.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect(),
        None => file
            .get("old_secret_keys")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
    };
    config.rotate_secret_key = args.rotate_secret_key;
    config.licence_file = args.licence_file.clone().or(s("licence_file").map(PathBuf::from));
    config.licence_public_key = env("WHARF_LICENCE_PUBLIC_KEY").or(s("licence_public_key"));
    if let Some(hours) = n("session_hours") {
        config.session_ttl = Duration::from_secs(hours.clamp(1, 24 * 30) as u64 * 3600);
    }
    if let Some(secure) = file.get("cookie_secure").and_then(|v| v.as_bool()) {
        config.cookie_secure = secure;
    }
    if let Some(retention) = file.get("retention").and_then(|v| v.as_table()) {
        let get = |k: &str| retention.get(k).and_then(|v| v.as_integer()).map(|v| v as u32);
        config.keep_runs = get("runs");
        config.keep_days = get("days");
        if let Some(w) = get("workspaces") {
            config.keep_workspaces = w;
        }
        if let Some(d) = get("deliveries") {
            config.keep_deliveries = d.max(1);
        }
    }
    if let Some(d) = env("WHARF_KEEP_DELIVERIES") {
        config.keep_deliveries =
            d.parse::<u32>().with_context(|| format!("WHARF_KEEP_DELIVERIES=`{d}` is not a number"))?.max(1);
    }
    if let Some(n) = env("WHARF_MAX_CONNECTIONS")
        .map(|v| v.parse::<usize>().with_context(|| format!("WHARF_MAX_CONNECTIONS=`{v}` is not a number")))
        .transpose()?
        .or(n("max_connections").map(|v| v as usize))
    {
        config.max_connections = n.max(1);
    }
    if let Some(t) = env("WHARF_HEADER_TIMEOUT").or(s("header_timeout")).or(n("header_timeout").map(|v| v.to_string()))
    {
        config.header_timeout = duration(&t, "header_timeout")?;
        if config.header_timeout.is_zero() {
            bail!("header_timeout must be more than 0 s");
        }
    }
    for (var, slot) in [("WHARF_KEEP_RUNS", &mut config.keep_runs), ("WHARF_KEEP_DAYS", &mut config.keep_days)] {
        if let Ok(v) = std::env::var(var) {
            *slot = Some(v.parse().with_context(|| format!("{var}=`{v}` is not a number"))?);
        }
    }
    config.default_registry = args.default_registry.clone().or(s("default_registry")).filter(|r| !r.is_empty());
    config.default_cluster = args.default_cluster.clone().or(s("default_cluster")).filter(|c| !c.is_empty());
    config.kube_builder_image =
        args.kube_builder_image.clone().or(s("kube_builder_image")).filter(|i| !i.trim().is_empty());
    if let Some(image) = &config.kube_builder_image {
        wharf_core::reference::Reference::parse(image)
            .with_context(|| format!("kube_builder_image `{image}` is not an image reference"))?;
    }
    config.notify_secret = env("WHARF_NOTIFY_SECRET").or(s("notify_secret"));
    config.smtp = smtp(args, file.get("smtp"))?;
    // `image` tasks build on the Docker Engine of DOCKER_HOST (a unix socket), else
    // of /var/run/docker.sock, when it answers at start.
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && host.starts_with("unix://")
    {
        config.docker_host = Some(host);
    }
    // Tasks get an allow-list of what the server inherited (PATH, HOME, locale, TZ),
    // so its own secrets, and whatever else its environment holds, never reach them.
    config.host_env = wharf_server::hostexec::task_env(std::env::vars());
    Ok((config, executor))
}

fn init_logging(format: &str) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("--log-format `{other}`: expected text or json"),
    }
    Ok(())
}

/// Called before any thread exists: "no new privileges" is a thread's attribute, which
/// the threads and processes created afterwards inherit. A root server sets it, so no
/// process it starts (a host task as the task user, git) gains privileges by executing
/// a setuid-root or file-capability program — a container may have left one in a
/// workspace, since container root is host root. Dropping privileges to the task user
/// still works; `sudo` and `ping` in host tasks of a root server do not.
pub fn forbid_new_privileges() -> Result<()> {
    if nix::unistd::Uid::effective().is_root() {
        nix::sys::prctl::set_no_new_privs().context("cannot set no_new_privs on the server process")?;
    }
    Ok(())
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    init_logging(&args.log_format)?;
    // Not dumpable: no process of the same user (a host task on a single-user server)
    // can read this one's /proc/<pid>/environ or memory (the admin token, the secret
    // key) or attach a debugger. It also means no core dumps. Children get their own
    // setting back when they exec.
    nix::sys::prctl::set_dumpable(false).context("cannot make the server process non-dumpable")?;
    let (mut config, executor) = config(&args)?;
    config.executor = match executor {
        Some(kind) => kind,
        None if wharf_docker::docker_available(config.docker.socket.as_deref()).await => ExecutorKind::Docker,
        None => ExecutorKind::Host,
    };
    if config.executor == ExecutorKind::Docker && !wharf_docker::docker_available(config.docker.socket.as_deref()).await
    {
        bail!(
            "--executor docker: no Docker Engine answers at {}",
            config.docker.socket.as_deref().unwrap_or(wharf_docker::DEFAULT_SOCKET)
        );
    }
    tracing::info!(executor = config.executor.as_str(), "executor");
    let server = Server::start(config).await?;
    if let Some(token) = &server.generated_token {
        eprintln!(
            "\nwharf: first start — the admin API token is shown once, store it now:\n\n    {token}\n\n\
             (set WHARF_ADMIN_TOKEN to choose your own)\n"
        );
    }
    if let Some(password) = &server.generated_password {
        eprintln!(
            "\nwharf: first start — the password of user `admin` (UI login at /login) is shown once:\n\n    \
             {password}\n\n(set WHARF_ADMIN_PASSWORD to choose your own)\n"
        );
    }
    println!("wharf listening on http://{}", server.addr);
    if !server.is_replica() {
        // SQLite: SIGTERM ends the process as it always did; a restart recovers.
        server.wait().await?;
        return Ok(());
    }
    // PostgreSQL: SIGTERM drains (see `Server::drain`), so another replica takes over.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let drainer = server.drainer();
    tokio::select! {
        served = server.wait() => served?,
        _ = term.recv() => {
            tracing::info!("SIGTERM: claiming no more runs, draining");
            let handed = drainer.drain().await;
            tracing::info!(handed_over = handed, "drained; stopping");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_checked_at_start() {
        assert_eq!(time_zone("Asia/Shanghai").unwrap().iana_name(), Some("Asia/Shanghai"));
        assert_eq!(time_zone(" UTC ").unwrap().iana_name(), Some("UTC"));
        let err = time_zone("Mars/Olympus_Mons").unwrap_err().to_string();
        assert!(err.contains("timezone `Mars/Olympus_Mons` is not a time zone") && err.contains("IANA"), "{err}");
    }

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn outbound_allow_comes_from_the_file_or_the_flag() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.toml");
        std::fs::write(&file, "outbound_allow = [\"git.internal\", \"10.0.0.0/8\"]\n").unwrap();
        let path = file.to_str().unwrap();
        let parsed = Serve::parse_from(["serve", "--config", path]);
        assert_eq!(config(&parsed.args).unwrap().0.outbound_allow, ["git.internal", "10.0.0.0/8"]);
        let parsed = Serve::parse_from(["serve", "--config", path, "--outbound-allow", "a.example, 192.168.0.0/16"]);
        assert_eq!(config(&parsed.args).unwrap().0.outbound_allow, ["a.example", "192.168.0.0/16"]);
        std::fs::write(&file, "outbound_allow = \"10.0.0.0/8\"\n").unwrap();
        let err = config(&Serve::parse_from(["serve", "--config", path]).args).unwrap_err().to_string();
        assert!(err.contains("outbound_allow must be a list of strings"), "{err}");
    }

    #[test]
    fn database_urls_are_sqlite_or_postgres_and_a_refusal_shows_no_password() {
        use clap::Parser;
        let pg = "postgres://wharf:db-pass@127.0.0.1:5432/wharf";
        let parsed = Serve::parse_from(["serve", "--database-url", pg]);
        assert_eq!(config(&parsed.args).unwrap().0.database_url.as_deref(), Some(pg));
        let parsed = Serve::parse_from(["serve", "--database-url", "sqlite:///var/lib/wharf/wharf.db"]);
        assert!(config(&parsed.args).is_ok());
        let parsed = Serve::parse_from(["serve", "--database-url", "mysql://wharf:db-pass@db/wharf"]);
        let err = config(&parsed.args).unwrap_err().to_string();
        assert!(err.contains("the scheme `mysql`: expected sqlite://PATH or postgres://"), "{err}");
        assert!(!err.contains("db-pass"), "{err}");
    }

    use wharf_notify::email::Security;

    #[test]
    fn smtp_settings_come_from_the_file_and_flags_and_the_password_never_shows() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.toml");
        std::fs::write(
            &file,
            "[smtp]\nhost = \"mail.example.com\"\nusername = \"ci\"\npassword = \"smtp-file-password\"\nfrom = \"Wharf <ci@example.com>\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let (config_read, _) = config(&Serve::parse_from(["serve", "--config", path]).args).unwrap();
        let smtp = config_read.smtp.clone().unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port, smtp.security), ("mail.example.com", 587, Security::StartTls));
        assert_eq!(smtp.password.as_deref(), Some("smtp-file-password"));
        assert!(!format!("{config_read:?}").contains("smtp-file-password"));
        let parsed = Serve::parse_from(["serve", "--config", path, "--smtp-security", "tls", "--smtp-port", "2465"]);
        let smtp = config(&parsed.args).unwrap().0.smtp.unwrap();
        assert_eq!((smtp.port, smtp.security), (2465, Security::Tls));
        let parsed = Serve::parse_from(["serve", "--config", path, "--smtp-security", "ssl3"]);
        let err = config(&parsed.args).unwrap_err().to_string();
        assert!(err.contains("expected starttls, tls or none"), "{err}");
        std::fs::write(&file, "[smtp]\nhost = \"mail.example.com\"\n").unwrap();
        let err = config(&Serve::parse_from(["serve", "--config", path]).args).unwrap_err().to_string();
        assert!(err.contains("`from`"), "{err}");
    }
}
