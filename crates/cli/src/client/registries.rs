//! `wharf registries …`: registries and their images on a server (DESIGN.md §9
//! Registries), with the same connection, errors and exit codes as the other client
//! commands ([`crate::client`]).

use super::{Client, Conn, when};
use anyhow::{Context, Result, bail};
use reqwest::Method;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wharf_api::Listed;
use wharf_api::registries::{
    ImageRepository, NewRegistry, NewWorkspace, Pushed, Registries, Registry, TagDeleted, Tags,
};

#[derive(clap::Args, Debug)]
pub struct RegistriesArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: RegistriesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RegistriesCommand {
    /// Register a registry; the server checks the credentials against it.
    Add {
        name: String,
        /// `host[:port]`, or `https://host` (`http://` needs --insecure).
        #[arg(long)]
        url: String,
        #[arg(long)]
        username: Option<String>,
        /// The password (prefer WHARF_REGISTRY_PASSWORD or --password-stdin: a flag shows
        /// in the process list).
        #[arg(long, env = "WHARF_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Read the password from standard input (one line).
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// Plain HTTP (a registry on this machine).
        #[arg(long)]
        insecure: bool,
        /// A workspace to register (repeatable).
        #[arg(long = "workspace", value_name = "WORKSPACE")]
        workspaces: Vec<String>,
        /// Register without asking the registry.
        #[arg(long)]
        no_verify: bool,
    },
    /// Registries with their workspaces.
    List,
    /// Register a workspace of a registry.
    AddWorkspace { registry: String, workspace: String },
    /// Forget a registry (refused while pipelines push to it; the images stay).
    Remove { name: String },
    /// The registry's repositories (`workspace/image`).
    Repos {
        registry: String,
        #[arg(long)]
        workspace: Option<String>,
    },
    /// An image's tags with size and creation time: `wharf registries tags local devops/jack-2048`.
    Tags { registry: String, repository: String },
    /// Delete a tag: `wharf registries delete-tag local devops/jack-2048:alpha-3`.
    DeleteTag { registry: String, reference: String },
    /// Push a `docker save` tarball (tar or tar.gz, up to 2 GB) to a workspace; an
    /// existing tag is overwritten.
    Upload {
        registry: String,
        file: PathBuf,
        #[arg(long)]
        workspace: String,
    },
}

pub async fn registries(args: RegistriesArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        RegistriesCommand::Add { name, url, username, password, password_stdin, insecure, workspaces, no_verify } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_to_string(&mut line).context("reading the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                password
            };
            let body = NewRegistry { name, url, username, password, insecure, workspaces };
            let mut target = client.url(&["registries"]);
            if no_verify {
                target.set_query(Some("verify=false"));
            }
            let saved: Registry = client.fetch_with(Method::POST, target, &body).await?;
            println!("registered registry {} at {}", saved.name, saved.url);
            Ok(ExitCode::SUCCESS)
        }
        RegistriesCommand::List => {
            let answer: Registries = client.get(&["registries"]).await?;
            let default = answer.default.unwrap_or_default();
            let items = answer.items;
            if items.is_empty() {
                println!("no registries (add one with `wharf registries add NAME --url HOST`)");
            }
            for r in items {
                let name = &r.name;
                let mark = if *name == default { " (default)" } else { "" };
                let user = r.username.as_deref().unwrap_or("anonymous");
                println!(
                    "{name}{mark}  {}  user {user}  workspaces: {}",
                    r.url,
                    if r.workspaces.is_empty() { "-".to_owned() } else { r.workspaces.join(", ") }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RegistriesCommand::AddWorkspace { registry, workspace } => {
            let body = NewWorkspace { name: workspace.clone() };
            client.perform(Method::POST, client.url(&["registries", &registry, "workspaces"]), Some(&body)).await?;
            println!("registered workspace {workspace} in registry {registry}");
            Ok(ExitCode::SUCCESS)
        }
        RegistriesCommand::Remove { name } => {
            client.perform(Method::DELETE, client.url(&["registries", &name]), None).await?;
            println!("removed registry {name} (its images stay in the registry)");
            Ok(ExitCode::SUCCESS)
        }
        RegistriesCommand::Repos { registry, workspace } => {
            let mut url = client.url(&["registries", &registry, "repositories"]);
            if let Some(w) = &workspace {
                url.query_pairs_mut().append_pair("workspace", w);
            }
            let answer: Listed<ImageRepository> = client.fetch(Method::GET, url).await?;
            // Charts are marked; an image is the plain name.
            for r in &answer.items {
                match r.artifact {
                    wharf_api::registries::Artifact::Chart => println!("{}  (Helm chart)", r.name),
                    _ => println!("{}", r.name),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RegistriesCommand::Tags { registry, repository } => {
            let (workspace, image) = split_repository(&repository)?;
            let answer: Tags = client.get(&["registries", &registry, "repositories", workspace, image, "tags"]).await?;
            println!("{:<30} {:>10}  {:<19}  IMAGE", "TAG", "SIZE", "CREATED");
            for t in &answer.items {
                let created = t
                    .created
                    .as_deref()
                    .and_then(|c| c.parse::<jiff::Timestamp>().ok())
                    .map(|c| when(Some(c.as_millisecond())))
                    .unwrap_or_else(|| "-".into());
                let size = human_size(t.size);
                println!("{:<30} {size:>10}  {created:<19}  {}", t.tag, t.image);
            }
            Ok(ExitCode::SUCCESS)
        }
        RegistriesCommand::DeleteTag { registry, reference } => {
            let Some((repository, tag)) = reference.rsplit_once(':') else {
                bail!("`{reference}`: expected WORKSPACE/IMAGE:TAG");
            };
            let (workspace, image) = split_repository(repository)?;
            let url = client.url(&["registries", &registry, "repositories", workspace, image, "tags", tag]);
            let answer: TagDeleted = client.fetch(Method::DELETE, url).await?;
            println!("deleted {} ({})", answer.deleted, answer.digest);
            if !answer.also_removed.is_empty() {
                println!("also removed, same image: {}", answer.also_removed.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        RegistriesCommand::Upload { registry, file, workspace } => {
            // Ask first, so a wrong registry or workspace is said before sending 2 GB.
            let shown: Registry = client.get(&["registries", &registry]).await?;
            let known = shown.workspaces;
            if !known.contains(&workspace) {
                bail!(
                    "`{workspace}` is not a workspace of registry {registry} (registered: {}); add it with \
                     `wharf registries add-workspace {registry} {workspace}`",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                );
            }
            let opened =
                tokio::fs::File::open(&file).await.with_context(|| format!("cannot open {}", file.display()))?;
            let size = opened.metadata().await.map(|m| m.len()).unwrap_or(0);
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(opened, 256 * 1024));
            let mut url = client.url(&["registries", &registry, "upload"]);
            url.query_pairs_mut().append_pair("workspace", &workspace);
            eprintln!(
                "uploading {} ({}) to registry {registry}, workspace {workspace}…",
                file.display(),
                human_size(size)
            );
            let request = client.request(Method::POST, url).timeout(Duration::from_secs(3600)).body(body);
            let answer: Listed<Pushed> = client.answer(request).await?;
            for pushed in &answer.items {
                println!("pushed {} ({})", pushed.image, pushed.digest);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn split_repository(repository: &str) -> Result<(&str, &str)> {
    match repository.split_once('/') {
        Some((workspace, image)) if !workspace.is_empty() && !image.is_empty() && !image.contains('/') => {
            Ok((workspace, image))
        }
        _ => bail!("`{repository}`: expected WORKSPACE/IMAGE, like devops/jack-2048"),
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.2} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_seed() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(5_861_540), "5.59 MiB");
        assert!(split_repository("devops/jack-2048").is_ok());
        assert!(split_repository("jack-2048").is_err());
        assert!(split_repository("a/b/c").is_err());
    }
}
