//! Client commands for tenancy: `wharf users add|list|disable|enable|delete`, `wharf tokens
//! create|list|revoke`, `wharf secrets set|list|delete`, and `wharf login` (a
//! password in, an API token out, for `WHARF_TOKEN`).

use super::{ApiError, Client, Conn, with_query};
use anyhow::{Context, Result, bail};
use reqwest::Method;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use wharf_api::Listed;
use wharf_api::secrets::{SecretName, SetSecret};
use wharf_api::tenancy::{LoggedIn, Login, Me, NewToken, NewUser, Token, TokenCreated, User, UserUpdate};

#[derive(clap::Args, Debug)]
pub struct UsersArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user (admins): admin, manager or user, in the projects given.
    Add {
        name: String,
        /// admin (cloud administrator), manager (department admin / project manager) or user.
        #[arg(long, default_value = "user")]
        role: String,
        /// A project the user joins (repeatable).
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// Read the password from standard input (one line) for the UI login.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users with their roles, projects and whether they are disabled (admins).
    List,
    /// Disable a user (admins): no login; their tokens and sessions stop working at once.
    Disable { name: String },
    /// Enable a disabled user again (their tokens work again; sessions were ended).
    Enable { name: String },
    /// Delete a user with their tokens, sessions and memberships (admins). What they
    /// created (pipelines, bindings, secrets) stays, still naming them.
    Delete { name: String },
}

#[derive(clap::Args, Debug)]
pub struct TokensArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokensCommand {
    /// Create an API token; it is printed once.
    Create {
        /// The token's name (unique per user).
        name: String,
        /// Whose token [default: yourself].
        #[arg(long)]
        user: Option<String>,
        /// read (GET only) or write.
        #[arg(long, default_value = "write")]
        scope: String,
        /// Days until it stops working [default: never].
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
    /// List API tokens (never the tokens themselves).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an API token at once.
    Revoke {
        name: String,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct SecretsArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The project [default: admin].
    #[arg(long, global = true)]
    pub project: Option<String>,
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretsCommand {
    /// Set a secret; the value is read from standard input (never an argument, which
    /// would show in the shell history and the process list).
    Set { name: String },
    /// List the secrets' names (values are never readable back).
    List,
    /// Delete a secret.
    Delete { name: String },
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The user name.
    pub user: String,
    /// The new token's name.
    #[arg(long, default_value = "cli")]
    pub token_name: String,
    /// Days until the token stops working.
    #[arg(long, default_value_t = 30)]
    pub expires_in_days: u32,
}

fn read_line(what: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("{what}: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).with_context(|| format!("cannot read the {what}"))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        bail!("no {what} given on standard input");
    }
    Ok(line)
}

async fn whoami(client: &Client) -> Result<String> {
    Ok(client.get::<Me>(&["me"]).await?.name)
}

pub async fn users(args: UsersArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        UsersCommand::Add { name, role, projects, password_stdin } => {
            let password = if password_stdin { Some(read_line("password")?) } else { None };
            let body = NewUser { name, role, projects, password };
            let user: User = client.post(&["users"], &body).await?;
            println!("created user {} ({})", user.name, user.role);
        }
        UsersCommand::List => {
            let users: Listed<User> = client.get(&["users"]).await?;
            println!("{:<24} {:<8} {:<9} PROJECTS", "NAME", "ROLE", "STATE");
            for u in &users.items {
                let state = if u.disabled_at.is_some() { "disabled" } else { "enabled" };
                println!("{:<24} {:<8} {state:<9} {}", u.name, u.role, u.projects.join(", "));
            }
        }
        UsersCommand::Disable { ref name } | UsersCommand::Enable { ref name } => {
            let disabled = matches!(args.command, UsersCommand::Disable { .. });
            let change = UserUpdate { disabled: Some(disabled), ..UserUpdate::default() };
            client.perform(Method::PUT, client.url(&["users", name]), Some(&change)).await?;
            println!("{} user {name}", if disabled { "disabled" } else { "enabled" });
        }
        UsersCommand::Delete { name } => {
            client.perform(Method::DELETE, client.url(&["users", &name]), None).await?;
            println!("deleted user {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn tokens(args: TokensArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    let user = |given: &Option<String>| {
        let client = client.clone();
        let given = given.clone();
        async move {
            match given {
                Some(u) => Ok::<String, anyhow::Error>(u),
                None => whoami(&client).await,
            }
        }
    };
    match &args.command {
        TokensCommand::Create { name, user: who, scope, expires_in_days } => {
            let who = user(who).await?;
            let body = NewToken { name: name.clone(), scope: Some(scope.clone()), expires_in_days: *expires_in_days };
            let made: TokenCreated = client.post(&["users", &who, "tokens"], &body).await?;
            eprintln!("token {name} of {who} ({scope}); shown once, store it now:");
            println!("{}", made.token);
        }
        TokensCommand::List { user: who } => {
            let who = user(who).await?;
            let list: Listed<Token> = client.get(&["users", &who, "tokens"]).await?;
            println!("{:<20} {:<6} {:<10} STATE", "NAME", "SCOPE", "EXPIRES");
            for t in &list.items {
                let expires = t.expires_at.map_or("never".to_owned(), date);
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{:<20} {:<6} {:<10} {state}", t.name, t.scope, expires);
            }
        }
        TokensCommand::Revoke { name, user: who } => {
            let who = user(who).await?;
            client.perform(Method::DELETE, client.url(&["users", &who, "tokens", name]), None).await?;
            println!("revoked token {name} of {who}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or_default()
}

pub async fn secrets(args: SecretsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    let query: Vec<(&str, String)> = args.project.iter().map(|p| ("project", p.clone())).collect();
    match args.command {
        SecretsCommand::Set { name } => {
            let value = read_line("secret value")?;
            let url = with_query(client.url(&["secrets", &name]), &query);
            client.perform(Method::PUT, url, Some(&SetSecret { value: Some(value) })).await?;
            println!("secret {name} set in project {}", args.project.as_deref().unwrap_or("admin"));
        }
        SecretsCommand::List => {
            let list: Listed<SecretName> =
                client.fetch(Method::GET, with_query(client.url(&["secrets"]), &query)).await?;
            for s in &list.items {
                println!("{}/{}", s.project, s.name);
            }
        }
        SecretsCommand::Delete { name } => {
            let url = with_query(client.url(&["secrets", &name]), &query);
            client.perform(Method::DELETE, url, None).await?;
            println!("deleted secret {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs in with a password (read from standard input), creates an API token with the
/// session, ends the session, and prints the token.
pub async fn login(args: LoginArgs) -> Result<ExitCode> {
    let client = Client::new(&Conn { server: args.conn.server.clone(), token: None })?;
    let password = read_line("password")?;
    let url = client.url(&["login"]);
    let response = client
        .http
        .post(url)
        .json(&Login { name: args.user.clone(), password })
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {}", client.shown))?;
    let status = response.status();
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        return Err(refused(status, &body, "login refused").into());
    }
    let logged_in: Option<LoggedIn> = serde_json::from_slice(&body).ok();
    let (Some(cookie), Some(LoggedIn { csrf_token: csrf, .. })) = (cookie, logged_in) else {
        bail!("the server's login answer has no session");
    };
    let session = |method: Method, segments: &[&str]| {
        client.http.request(method, client.url(segments)).header("cookie", &cookie).header("x-csrf-token", &csrf)
    };
    let made = session(Method::POST, &["users", &args.user, "tokens"])
        .json(&NewToken { name: args.token_name.clone(), scope: None, expires_in_days: Some(args.expires_in_days) })
        .send()
        .await?;
    let made_status = made.status();
    let made = made.bytes().await.unwrap_or_default();
    let _ = session(Method::POST, &["logout"]).send().await;
    if !made_status.is_success() {
        return Err(refused(made_status, &made, "cannot create a token").into());
    }
    let made: TokenCreated = serde_json::from_slice(&made).context("the server's answer is not the JSON expected")?;
    eprintln!(
        "logged in as {}; token {} (expires in {} days), shown once — export it:",
        args.user, args.token_name, args.expires_in_days
    );
    println!("export WHARF_TOKEN={}", made.token);
    Ok(ExitCode::SUCCESS)
}

/// The server's refusal: its message, or `otherwise`.
fn refused(status: reqwest::StatusCode, body: &[u8], otherwise: &str) -> ApiError {
    let message = serde_json::from_slice::<wharf_api::Error>(body)
        .map(|e| e.error.message)
        .unwrap_or_else(|_| otherwise.to_owned());
    ApiError { status: status.as_u16(), message, details: vec![] }
}
