//! Kubeconfig text → a checked connection. kube-rs parses the YAML; everything after that
//! (which context, cluster and user, which credential forms are allowed, decoding and
//! checking every base64 and PEM field) is decided here, so each refusal can say where.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, Kubeconfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use wharf_outbound::Policy;

/// Whether the kubeconfig may name files (`certificate-authority`, `client-certificate`,
/// `client-key`, `tokenFile`). A server must refuse them: a user's kubeconfig naming the
/// server's own files would send them to the user's cluster. The CLI may allow them and
/// inline the files before it uploads the kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAccess {
    Refuse,
    /// Relative paths are resolved against this directory (the kubeconfig's own, as kubectl does).
    Allow {
        base: PathBuf,
    },
}

/// How the connection proves who it is. Holds no credential, only its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Token,
    ClientCertificate,
    /// The user entry has no credential; the API server treats requests as anonymous.
    Anonymous,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KubeconfigError {
    #[error("the kubeconfig is not valid YAML for a kubeconfig: {0}")]
    Yaml(String),
    #[error("the kubeconfig has no current-context and no context was chosen")]
    NoContext,
    #[error("the kubeconfig has no context {context:?} (it has: {known})")]
    UnknownContext { context: String, known: String },
    #[error("context {context:?} names no {field}")]
    ContextField { context: String, field: &'static str },
    #[error("context {context:?} names cluster {cluster:?}, which the kubeconfig does not have")]
    MissingCluster { context: String, cluster: String },
    #[error("context {context:?} names user {user:?}, which the kubeconfig does not have")]
    MissingUser { context: String, user: String },
    #[error(
        "cluster {cluster:?} sets both insecure-skip-tls-verify and a certificate-authority; kubectl refuses \
         this too: keep one"
    )]
    InsecureWithCa { cluster: String },
    #[error("cluster {cluster:?} has no server")]
    NoServer { cluster: String },
    #[error("cluster {cluster:?}: server {server:?} is not an https:// or http:// URL: {reason}")]
    BadServer { cluster: String, server: String, reason: String },
    #[error(
        "user {user:?} uses an exec credential plugin ({command:?}); Wharf does not run programs named by a \
         kubeconfig: use a service account token or a client certificate instead"
    )]
    ExecPlugin { user: String, command: String },
    #[error(
        "user {user:?} uses the auth-provider plugin {provider:?}; Wharf does not run credential plugins: \
         use a service account token or a client certificate instead"
    )]
    AuthProvider { user: String, provider: String },
    #[error("user {user:?} uses basic auth (username/password), which Kubernetes removed in 1.19")]
    BasicAuth { user: String },
    #[error("user {user:?} impersonates ({field}); Wharf does not support impersonation")]
    Impersonation { user: String, field: &'static str },
    #[error("user {user:?}: {field} without {missing}")]
    HalfClientCertificate { user: String, field: &'static str, missing: &'static str },
    #[error("{owner} {name:?}: {field} is not valid base64: {reason}")]
    BadBase64 { owner: &'static str, name: String, field: &'static str, reason: String },
    #[error("{owner} {name:?}: {field} is not {expected}")]
    BadPem { owner: &'static str, name: String, field: &'static str, expected: &'static str },
    #[error(
        "{owner} {name:?}: {field} names the file {path:?}, but files are not allowed here (inline it as {field}-data)"
    )]
    FileRefused { owner: &'static str, name: String, field: &'static str, path: String },
    #[error("{owner} {name:?}: {field}: reading {path:?}: {reason}")]
    FileRead { owner: &'static str, name: String, field: &'static str, path: String, reason: String },
    #[error("user {user:?}: {field} is empty")]
    EmptyToken { user: String, field: &'static str },
    #[error("the connection to cluster {cluster:?} could not be set up: {reason}")]
    Client { cluster: String, reason: String },
    /// The server is an internal IP address the server's outbound policy does not allow
    /// (a name is checked when connecting: [`crate::ClusterError::Refused`]).
    #[error("cluster {cluster:?}: {refused}")]
    Refused { cluster: String, refused: wharf_outbound::Refused },
}

/// A checked connection to one cluster: which context, cluster and user it came from, the
/// server URL, and a kube-rs client. `Debug` shows no credential.
#[derive(Clone)]
pub struct Connection {
    pub(crate) client: kube::Client,
    context: String,
    cluster: String,
    user: String,
    server: String,
    auth: Auth,
    insecure: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("context", &self.context)
            .field("cluster", &self.cluster)
            .field("user", &self.user)
            .field("server", &self.server)
            .field("auth", &self.auth)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Reads the kubeconfig text, picks `context` (else its `current-context`) and checks
    /// every field the connection uses. Builds the client but does not contact the server
    /// (see [`crate::check`]). Every connection it makes goes through `policy` (an internal
    /// IP-literal server is refused here, a name when it is resolved: `crate::outbound`).
    /// Must be called inside a Tokio runtime.
    pub fn from_kubeconfig(
        text: &str,
        context: Option<&str>,
        files: &FileAccess,
        policy: &Policy,
    ) -> Result<Self, KubeconfigError> {
        let kubeconfig = parse(text)?;
        let context_name = match context {
            Some(c) => c.to_owned(),
            None => kubeconfig.current_context.clone().filter(|c| !c.is_empty()).ok_or(KubeconfigError::NoContext)?,
        };
        let named = kubeconfig.contexts.iter().find(|c| c.name == context_name).ok_or_else(|| {
            KubeconfigError::UnknownContext {
                context: context_name.clone(),
                known: names(kubeconfig.contexts.iter().map(|c| c.name.as_str())),
            }
        })?;
        let ctx = named
            .context
            .as_ref()
            .ok_or(KubeconfigError::ContextField { context: context_name.clone(), field: "cluster" })?;
        if ctx.cluster.is_empty() {
            return Err(KubeconfigError::ContextField { context: context_name, field: "cluster" });
        }
        let user_name = ctx
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or(KubeconfigError::ContextField { context: context_name.clone(), field: "user" })?;
        let cluster =
            kubeconfig.clusters.iter().find(|c| c.name == ctx.cluster).and_then(|c| c.cluster.clone()).ok_or_else(
                || KubeconfigError::MissingCluster { context: context_name.clone(), cluster: ctx.cluster.clone() },
            )?;
        let user = kubeconfig
            .auth_infos
            .iter()
            .find(|u| u.name == user_name)
            .map(|u| u.auth_info.clone().unwrap_or_default())
            .ok_or_else(|| KubeconfigError::MissingUser { context: context_name.clone(), user: user_name.clone() })?;

        let server = server_url(&ctx.cluster, &cluster)?;
        crate::outbound::check_literal(policy, server.host().unwrap_or(""))
            .map_err(|refused| KubeconfigError::Refused { cluster: ctx.cluster.clone(), refused })?;
        let roots = ca(&ctx.cluster, &cluster, files)?;
        let (auth, auth_info) = credentials(&user_name, &user, files)?;
        let insecure = cluster.insecure_skip_tls_verify.unwrap_or(false);
        if insecure && roots.is_some() {
            return Err(KubeconfigError::InsecureWithCa { cluster: ctx.cluster.clone() });
        }

        let mut config = kube::Config::new(server.clone());
        config.default_namespace = ctx.namespace.clone().unwrap_or_else(|| "default".to_owned());
        config.root_cert = roots;
        config.accept_invalid_certs = insecure;
        config.tls_server_name = cluster.tls_server_name.clone();
        config.auth_info = auth_info;
        let client = crate::outbound::client(config, policy)
            .map_err(|e| KubeconfigError::Client { cluster: ctx.cluster.clone(), reason: e.to_string() })?;
        Ok(Connection {
            client,
            context: context_name,
            cluster: ctx.cluster.clone(),
            user: user_name,
            server: server.to_string().trim_end_matches('/').to_owned(),
            auth,
            insecure,
        })
    }

    /// The API server's URL, e.g. `https://10.0.0.1:6443`.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn auth(&self) -> Auth {
        self.auth
    }

    /// `insecure-skip-tls-verify: true`: the server's certificate is not checked.
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The kube-rs client, for the crates that build on this one.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

fn parse(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    Kubeconfig::from_yaml(text).map_err(|e| KubeconfigError::Yaml(yaml_reason(&e.to_string())))
}

/// The parser's first line (`line 5 column 4: while parsing …`) without the snippet of the
/// document it appends, and cut before any quoted value: either may be a credential.
fn yaml_reason(full: &str) -> String {
    let first = full.lines().next().unwrap_or("");
    let first = first.strip_prefix("failed to parse kubeconfig YAML: ").unwrap_or(first);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let reason = match first.find(['"', '\'', '`']) {
        Some(i) => format!("{}…", &first[..i]),
        None => first.to_owned(),
    };
    if reason.trim().is_empty() { "it does not parse".to_owned() } else { reason }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = it.map(|n| format!("{n:?}")).collect();
    if v.is_empty() { "none".to_owned() } else { v.join(", ") }
}

fn server_url(name: &str, cluster: &Cluster) -> Result<http::Uri, KubeconfigError> {
    let server = cluster
        .server
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| KubeconfigError::NoServer { cluster: name.to_owned() })?;
    let bad = |reason: &str| KubeconfigError::BadServer {
        cluster: name.to_owned(),
        server: server.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = server.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => return Err(bad("the scheme must be https or http")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(uri)
}

/// Data fields are base64 of PEM; file fields name a PEM file. `-data` wins, as in kubectl.
fn pem_field(
    owner: &'static str,
    name: &str,
    field: &'static str,
    data: Option<&str>,
    file: Option<&str>,
    files: &FileAccess,
) -> Result<Option<Vec<u8>>, KubeconfigError> {
    if let Some(data) = data.filter(|d| !d.trim().is_empty()) {
        let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD.decode(clean).map_err(|e| {
            KubeconfigError::BadBase64 { owner, name: name.to_owned(), field: data_field(field), reason: e.to_string() }
        })?;
        return Ok(Some(bytes));
    }
    let Some(path) = file.filter(|f| !f.is_empty()) else { return Ok(None) };
    let base = match files {
        FileAccess::Refuse => {
            return Err(KubeconfigError::FileRefused { owner, name: name.to_owned(), field, path: path.to_owned() });
        }
        FileAccess::Allow { base } => base,
    };
    let full = base.join(Path::new(path));
    std::fs::read(&full).map(Some).map_err(|e| KubeconfigError::FileRead {
        owner,
        name: name.to_owned(),
        field,
        path: full.display().to_string(),
        reason: e.to_string(),
    })
}

fn data_field(field: &'static str) -> &'static str {
    match field {
        "certificate-authority" => "certificate-authority-data",
        "client-certificate" => "client-certificate-data",
        "client-key" => "client-key-data",
        other => other,
    }
}

fn certificates(
    owner: &'static str,
    name: &str,
    field: &'static str,
    pem: &[u8],
) -> Result<Vec<Vec<u8>>, KubeconfigError> {
    let bad = || KubeconfigError::BadPem { owner, name: name.to_owned(), field, expected: "PEM certificates" };
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() { Err(bad()) } else { Ok(certs) }
}

fn ca(name: &str, cluster: &Cluster, files: &FileAccess) -> Result<Option<Vec<Vec<u8>>>, KubeconfigError> {
    let field = "certificate-authority";
    let pem = pem_field(
        "cluster",
        name,
        field,
        cluster.certificate_authority_data.as_deref(),
        cluster.certificate_authority.as_deref(),
        files,
    )?;
    pem.map(|pem| certificates("cluster", name, field, &pem)).transpose()
}

fn credentials(user: &str, info: &AuthInfo, files: &FileAccess) -> Result<(Auth, AuthInfo), KubeconfigError> {
    use kube::config::AuthInfo as A;
    if let Some(exec) = &info.exec {
        return Err(KubeconfigError::ExecPlugin {
            user: user.to_owned(),
            command: exec.command.clone().unwrap_or_default(),
        });
    }
    if let Some(provider) = &info.auth_provider {
        return Err(KubeconfigError::AuthProvider { user: user.to_owned(), provider: provider.name.clone() });
    }
    if info.username.is_some() || info.password.is_some() {
        return Err(KubeconfigError::BasicAuth { user: user.to_owned() });
    }
    for (set, field) in [
        (info.impersonate.is_some(), "as"),
        (info.impersonate_uid.is_some(), "as-uid"),
        (info.impersonate_groups.is_some(), "as-groups"),
        (info.impersonate_user_extra.is_some(), "as-user-extra"),
    ] {
        if set {
            return Err(KubeconfigError::Impersonation { user: user.to_owned(), field });
        }
    }
    use secrecy::ExposeSecret as _;
    let cert = pem_field(
        "user",
        user,
        "client-certificate",
        info.client_certificate_data.as_deref(),
        info.client_certificate.as_deref(),
        files,
    )?;
    let key = pem_field(
        "user",
        user,
        "client-key",
        info.client_key_data.as_ref().map(|k| k.expose_secret()),
        info.client_key.as_deref(),
        files,
    )?;
    let token = match (&info.token, &info.token_file) {
        (Some(t), _) => {
            let t = t.expose_secret().trim().to_owned();
            if t.is_empty() {
                return Err(KubeconfigError::EmptyToken { user: user.to_owned(), field: "token" });
            }
            Some(t)
        }
        (None, Some(path)) if !path.is_empty() => {
            let bytes = pem_field("user", user, "tokenFile", None, Some(path), files)?.unwrap_or_default();
            let t = String::from_utf8_lossy(&bytes).trim().to_owned();
            if t.is_empty() {
                return Err(KubeconfigError::EmptyToken { user: user.to_owned(), field: "tokenFile" });
            }
            Some(t)
        }
        _ => None,
    };
    let mut out = A::default();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let auth = match (cert, key) {
        (Some(cert), Some(key)) => {
            certificates("user", user, "client-certificate", &cert)?;
            PrivateKeyDer::from_pem_slice(&key).map_err(|_| KubeconfigError::BadPem {
                owner: "user",
                name: user.to_owned(),
                field: "client-key",
                expected: "a PEM private key",
            })?;
            out.client_certificate_data = Some(b64(&cert));
            out.client_key_data = Some(b64(&key).into());
            Auth::ClientCertificate
        }
        (Some(_), None) => {
            return Err(KubeconfigError::HalfClientCertificate {
                user: user.to_owned(),
                field: "client-certificate",
                missing: "client-key",
            });
        }
        (None, Some(_)) => {
            return Err(KubeconfigError::HalfClientCertificate {
                user: user.to_owned(),
                field: "client-key",
                missing: "client-certificate",
            });
        }
        (None, None) => Auth::Anonymous,
    };
    // A token and a client certificate together: kubectl sends both; so does kube-rs.
    if let Some(t) = token {
        out.token = Some(t.into());
        if auth == Auth::Anonymous {
            return Ok((Auth::Token, out));
        }
    }
    Ok((auth, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cr3t-t0ken";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// A self-signed certificate and its key, PEM.
    fn cert_and_key() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn config(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: one\nclusters:\n- name: c1\n  cluster:\n{cluster}\
             users:\n- name: u1\n  user:\n{user}contexts:\n- name: one\n  context:\n    cluster: c1\n    user: u1\n\
             - name: ghost-cluster\n  context:\n    cluster: nope\n    user: u1\n\
             - name: ghost-user\n  context:\n    cluster: c1\n    user: nobody\n"
        )
    }

    fn ca_cluster() -> String {
        let (ca, _) = cert_and_key();
        format!("    server: https://127.0.0.1:6443\n    certificate-authority-data: {}\n", b64(&ca))
    }

    fn token_user() -> String {
        format!("    token: {TOKEN}\n")
    }

    fn connect(text: &str, context: Option<&str>) -> Result<Connection, KubeconfigError> {
        Connection::from_kubeconfig(text, context, &FileAccess::Refuse, &open())
    }

    /// A policy allowing every internal address the tests name.
    fn open() -> Policy {
        Policy::new(&["127.0.0.0/8", "10.0.0.0/8"]).unwrap()
    }

    #[tokio::test]
    async fn token_and_ca_data() {
        let conn = connect(&config(&ca_cluster(), &token_user()), None).unwrap();
        assert_eq!(conn.server(), "https://127.0.0.1:6443");
        assert_eq!((conn.context(), conn.cluster(), conn.user()), ("one", "c1", "u1"));
        assert_eq!(conn.auth(), Auth::Token);
        assert!(!conn.insecure());
        let debug = format!("{conn:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
    }

    #[tokio::test]
    async fn client_certificate_data_and_files() {
        let (cert, key) = cert_and_key();
        let user = format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64(&cert), b64(&key));
        let conn = connect(&config(&ca_cluster(), &user), None).unwrap();
        assert_eq!(conn.auth(), Auth::ClientCertificate);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert_and_key().0).unwrap();
        std::fs::write(dir.path().join("client.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("client.key"), &key).unwrap();
        let text = config(
            "    server: https://k8s.example:6443\n    certificate-authority: ca.pem\n",
            "    client-certificate: client.pem\n    client-key: client.key\n",
        );
        let allow = FileAccess::Allow { base: dir.path().to_owned() };
        let conn = Connection::from_kubeconfig(&text, None, &allow, &open()).unwrap();
        assert_eq!(conn.auth(), Auth::ClientCertificate);
        // A server refuses files: they would be the server's own.
        let err = connect(&text, None).unwrap_err();
        assert!(
            matches!(&err, KubeconfigError::FileRefused { owner: "cluster", field: "certificate-authority", .. }),
            "{err}"
        );
        let missing =
            Connection::from_kubeconfig(&text, None, &FileAccess::Allow { base: "/nonexistent".into() }, &open())
                .unwrap_err();
        assert!(matches!(missing, KubeconfigError::FileRead { .. }), "{missing}");
    }

    #[tokio::test]
    async fn token_file_and_insecure() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let text =
            config("    server: https://10.0.0.1\n    insecure-skip-tls-verify: true\n", "    tokenFile: token\n");
        let conn =
            Connection::from_kubeconfig(&text, None, &FileAccess::Allow { base: dir.path().to_owned() }, &open())
                .unwrap();
        assert_eq!(conn.auth(), Auth::Token);
        assert!(conn.insecure());
        assert!(matches!(connect(&text, None).unwrap_err(), KubeconfigError::FileRefused { field: "tokenFile", .. }));
    }

    #[test]
    fn plugins_refused() {
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n      args: [eks, get-token]\n";
        let err =
            Connection::from_kubeconfig(&config(&ca_cluster(), exec), None, &FileAccess::Refuse, &open()).unwrap_err();
        assert_eq!(err, KubeconfigError::ExecPlugin { user: "u1".into(), command: "aws".into() });
        assert!(err.to_string().contains("does not run programs"), "{err}");
        let provider = "    auth-provider:\n      name: gcp\n      config: {}\n";
        let err = Connection::from_kubeconfig(&config(&ca_cluster(), provider), None, &FileAccess::Refuse, &open())
            .unwrap_err();
        assert_eq!(err, KubeconfigError::AuthProvider { user: "u1".into(), provider: "gcp".into() });
        let basic = "    username: admin\n    password: hunter2\n";
        let err =
            Connection::from_kubeconfig(&config(&ca_cluster(), basic), None, &FileAccess::Refuse, &open()).unwrap_err();
        assert!(matches!(err, KubeconfigError::BasicAuth { .. }));
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn contexts_clusters_users() {
        let text = config(&ca_cluster(), &token_user());
        let refuse = |ctx| Connection::from_kubeconfig(&text, ctx, &FileAccess::Refuse, &open()).unwrap_err();
        let err = refuse(Some("prod"));
        assert!(matches!(&err, KubeconfigError::UnknownContext { context, .. } if context == "prod"));
        assert!(err.to_string().contains("\"one\", \"ghost-cluster\", \"ghost-user\""), "{err}");
        assert_eq!(
            refuse(Some("ghost-cluster")),
            KubeconfigError::MissingCluster { context: "ghost-cluster".into(), cluster: "nope".into() }
        );
        assert_eq!(
            refuse(Some("ghost-user")),
            KubeconfigError::MissingUser { context: "ghost-user".into(), user: "nobody".into() }
        );
        let no_current = text.replace("current-context: one\n", "");
        let err = Connection::from_kubeconfig(&no_current, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert_eq!(err, KubeconfigError::NoContext);
        let no_server = config("    insecure-skip-tls-verify: true\n", &token_user());
        let err = Connection::from_kubeconfig(&no_server, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert_eq!(err, KubeconfigError::NoServer { cluster: "c1".into() });
        let both = ca_cluster() + "    insecure-skip-tls-verify: true\n";
        let err =
            Connection::from_kubeconfig(&config(&both, &token_user()), None, &FileAccess::Refuse, &open()).unwrap_err();
        assert_eq!(err, KubeconfigError::InsecureWithCa { cluster: "c1".into() });
        let ftp = config("    server: ftp://x\n", &token_user());
        let err = Connection::from_kubeconfig(&ftp, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert!(matches!(err, KubeconfigError::BadServer { .. }), "{err}");
    }

    #[test]
    fn bad_base64_and_pem() {
        let bad_ca = config("    server: https://x\n    certificate-authority-data: '%%%not base64'\n", &token_user());
        let err = Connection::from_kubeconfig(&bad_ca, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert!(
            matches!(&err, KubeconfigError::BadBase64 { owner: "cluster", field: "certificate-authority-data", .. }),
            "{err}"
        );
        let not_pem = config(
            &format!("    server: https://x\n    certificate-authority-data: {}\n", b64("hello")),
            &token_user(),
        );
        let err = Connection::from_kubeconfig(&not_pem, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert_eq!(err.to_string(), "cluster \"c1\": certificate-authority is not PEM certificates");
        let (cert, _) = cert_and_key();
        let bad_key = format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64(&cert), b64(TOKEN));
        let err = Connection::from_kubeconfig(&config(&ca_cluster(), &bad_key), None, &FileAccess::Refuse, &open())
            .unwrap_err();
        assert!(matches!(&err, KubeconfigError::BadPem { field: "client-key", .. }), "{err}");
        assert!(!err.to_string().contains(TOKEN));
        let half = format!("    client-certificate-data: {}\n", b64(&cert));
        let err =
            Connection::from_kubeconfig(&config(&ca_cluster(), &half), None, &FileAccess::Refuse, &open()).unwrap_err();
        assert!(matches!(err, KubeconfigError::HalfClientCertificate { missing: "client-key", .. }));
    }

    #[test]
    fn yaml_errors_do_not_quote_the_text() {
        let text = format!("users:\n- name: u\n  user:\n    token: {TOKEN}\n   bad: [\n");
        let err = Connection::from_kubeconfig(&text, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert!(matches!(err, KubeconfigError::Yaml(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "the kubeconfig is not valid YAML for a kubeconfig: line 5 column 4: while parsing a block mapping, \
             did not find expected key"
        );
        let typed = format!("current-context: [{TOKEN}]\n");
        let err2 = Connection::from_kubeconfig(&typed, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert!(!err2.to_string().contains(TOKEN), "{err2}");
        let typed = format!("users: \"{TOKEN}\"\n");
        let err3 = Connection::from_kubeconfig(&typed, None, &FileAccess::Refuse, &open()).unwrap_err();
        assert!(!err3.to_string().contains(TOKEN), "{err3}");
        assert!(!err.to_string().contains(TOKEN), "{err}");
    }
}
