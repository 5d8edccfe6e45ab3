//! `Debug` of [`ServerConfig`] without its secrets: whoever logs the configuration or
//! puts it in a panic message must not leak the admin's token and password, the keys
//! sealing secrets at rest or the host tasks' environment. Secret values print as
//! [`HIDDEN`] (whether one is set stays visible), the environment by name only, and a
//! password in a URL (`database_url`, …) as git's command lines hide it ([`redact_url`]).
//!
//! The impl destructures the whole struct, so a new field does not compile until it
//! is decided here whether it is secret.

use crate::ServerConfig;
use std::fmt;
use wharf_scm::redact_url;

/// What a secret value prints as.
const HIDDEN: &str = "***";

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ServerConfig {
            listen,
            data_dir,
            database_url,
            max_parallel_tasks,
            stop_grace,
            replica_lease,
            drain_grace,
            log_cap_bytes,
            keep_runs,
            keep_days,
            keep_workspaces,
            admin_token,
            admin_password,
            secret_key,
            old_secret_keys,
            rotate_secret_key,
            licence_file,
            licence_public_key,
            session_ttl,
            cookie_secure,
            host_env,
            host_user,
            executor,
            docker,
            allow_host,
            host_forks,
            timer_grace,
            timezone,
            public_url,
            ca_file,
            outbound_allow,
            default_registry,
            default_cluster,
            docker_host,
            kube_builder_image,
            max_connections,
            header_timeout,
            keep_deliveries,
            smtp,
            notify_secret,
            notify_retry,
        } = self;
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| HIDDEN);
        let env_names: Vec<&str> = host_env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ServerConfig")
            .field("listen", listen)
            .field("data_dir", data_dir)
            .field("database_url", &database_url.as_deref().map(redact_url))
            .field("max_parallel_tasks", max_parallel_tasks)
            .field("stop_grace", stop_grace)
            .field("replica_lease", replica_lease)
            .field("drain_grace", drain_grace)
            .field("log_cap_bytes", log_cap_bytes)
            .field("keep_runs", keep_runs)
            .field("keep_days", keep_days)
            .field("keep_workspaces", keep_workspaces)
            .field("admin_token", &hidden(admin_token))
            .field("admin_password", &hidden(admin_password))
            .field("secret_key", &hidden(secret_key))
            .field("old_secret_keys", &format_args!("[{} key(s)]", old_secret_keys.len()))
            .field("rotate_secret_key", rotate_secret_key)
            .field("licence_file", licence_file)
            // A public key: nothing to hide.
            .field("licence_public_key", licence_public_key)
            .field("session_ttl", session_ttl)
            .field("cookie_secure", cookie_secure)
            .field("host_env", &format_args!("{env_names:?} (values hidden)"))
            .field("host_user", host_user)
            .field("executor", executor)
            // DockerConfig's own Debug hides its pull credentials.
            .field("docker", docker)
            .field("allow_host", allow_host)
            .field("host_forks", host_forks)
            .field("timer_grace", timer_grace)
            .field("timezone", timezone)
            .field("public_url", &public_url.as_deref().map(redact_url))
            .field("ca_file", ca_file)
            .field("outbound_allow", outbound_allow)
            .field("default_registry", default_registry)
            .field("default_cluster", default_cluster)
            .field("docker_host", &docker_host.as_deref().map(redact_url))
            .field("kube_builder_image", kube_builder_image)
            .field("max_connections", max_connections)
            .field("header_timeout", header_timeout)
            .field("keep_deliveries", keep_deliveries)
            // SmtpSettings' own Debug hides its password.
            .field("smtp", smtp)
            .field("notify_secret", &hidden(notify_secret))
            .field("notify_retry", notify_retry)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn debug_shows_the_settings_but_no_secret_value() {
        let mut config = ServerConfig::new("/var/lib/wharf".into());
        config.admin_token = Some("tok-SECRET-1".into());
        config.admin_password = Some("pw-SECRET-2".into());
        config.secret_key = Some("key-SECRET-3".into());
        config.old_secret_keys = vec!["old-SECRET-4".into(), "old-SECRET-5".into()];
        config.host_env = vec![("PATH".into(), "/usr/bin".into()), ("GITHUB_TOKEN".into(), "env-SECRET-6".into())];
        config.database_url = Some("postgres://wharf:db-SECRET-7@db.internal:5432/wharf".into());
        config.public_url = Some("https://ci.example.com".into());
        let pull = [("registry.example.com".to_owned(), ("robot".to_owned(), "pull-SECRET-8".to_owned()))];
        config.docker.credentials = Some(Arc::new(wharf_docker::StaticCredentials(pull.into_iter().collect())));
        let text = format!("{config:?}");
        for n in 1..=8 {
            assert!(!text.contains(&format!("SECRET-{n}")), "secret {n} printed: {text}");
        }
        // What is set and everything that is not secret still shows.
        assert!(text.contains(r#"admin_token: Some("***")"#), "{text}");
        assert!(text.contains("[2 key(s)]"), "{text}");
        assert!(text.contains(r#"["PATH", "GITHUB_TOKEN"] (values hidden)"#), "{text}");
        assert!(text.contains("postgres://wharf:***@db.internal:5432/wharf"), "{text}");
        assert!(text.contains("/var/lib/wharf") && text.contains("https://ci.example.com"), "{text}");
        assert!(text.contains("keep_deliveries: 10000"), "{text}");
        // The pretty form hides them too.
        assert!(!format!("{config:#?}").contains("SECRET"));
    }
}
