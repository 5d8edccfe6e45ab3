//! Store rows (and the few other internal types the API shows) as the API's types:
//! the one place where `wharf_store`'s shapes become the wire contract of
//! [`wharf_api`]. A column added to a row shows nowhere until it is added here.

use wharf_api::{bindings, deliveries, pipelines, registries, runs, secrets, tenancy};
use wharf_store::bindings::Binding;
use wharf_store::deliveries::{DeliverySummary, Verdict};
use wharf_store::registries::Registry;
use wharf_store::tenancy::{AuditEntry, ProjectRow, SecretName, TokenRow, UserRow};
use wharf_store::{PipelineRow, RunRow, RunSummary};

pub fn pipeline(row: PipelineRow) -> pipelines::Pipeline {
    let PipelineRow { id, project, name, active, version, created_at, updated_at, created_by } = row;
    pipelines::Pipeline { id, project, name, active, version, created_at, updated_at, created_by }
}

pub fn run_summary(row: RunSummary) -> runs::RunSummary {
    let RunSummary { id, pipeline_id, number, version, status, retry_of, commit, created_at, updated_at, increment } =
        row;
    runs::RunSummary { id, pipeline_id, number, version, status, retry_of, commit, created_at, updated_at, increment }
}

/// The ids the store keeps beside a run's record.
pub fn run_ids(row: &RunRow) -> runs::RunIds {
    let s = &row.summary;
    runs::RunIds {
        id: s.id,
        pipeline_id: s.pipeline_id,
        version: s.version,
        retry_of: s.retry_of,
        commit: s.commit.clone(),
        increment: s.increment,
    }
}

pub fn accepted(accepted: wharf_lifecycle::Accepted) -> runs::Accepted {
    runs::Accepted { id: accepted.id, number: accepted.number }
}

pub fn webhook(install: crate::forges::HookInstall) -> pipelines::WebhookInstall {
    use crate::forges::HookStatus;
    let status = match install.status {
        HookStatus::Installed => pipelines::WebhookStatus::Installed,
        HookStatus::Present => pipelines::WebhookStatus::Present,
        HookStatus::Manual => pipelines::WebhookStatus::Manual,
        HookStatus::Failed => pipelines::WebhookStatus::Failed,
    };
    pipelines::WebhookInstall {
        binding: install.binding,
        repository: install.repository,
        status,
        url: install.url,
        hook_id: install.hook_id,
        message: install.message,
    }
}

/// A binding without its secrets; `webhook_path` as [`bindings::WebhookPath`] says.
pub fn binding(b: Binding, webhook_path: bindings::WebhookPath) -> bindings::Binding {
    bindings::Binding {
        id: b.id,
        name: b.name,
        provider: b.provider,
        url: b.url,
        client_id: b.client_id,
        token_expires_at: b.token_expires_at,
        has_token: b.has_token,
        has_webhook_secret: b.has_webhook_secret,
        has_client_secret: b.has_client_secret,
        created_by: b.created_by,
        created_at: b.created_at,
        updated_at: b.updated_at,
        webhook_path,
    }
}

pub fn repository(r: wharf_scm::provider::Repo) -> bindings::Repository {
    bindings::Repository {
        full_name: r.full_name,
        clone_url: r.clone_url,
        ssh_url: r.ssh_url,
        default_branch: r.default_branch,
        private: r.private,
    }
}

/// A registry without its password, with its base URL.
pub fn registry(r: Registry, url: String) -> registries::Registry {
    registries::Registry {
        id: r.id,
        name: r.name,
        host: r.host,
        username: r.username,
        has_password: r.has_password,
        insecure: r.insecure,
        workspaces: r.workspaces,
        created_at: r.created_at,
        updated_at: r.updated_at,
        url,
    }
}

pub fn pushed(p: wharf_image::Pushed) -> registries::Pushed {
    registries::Pushed { image: p.image, digest: p.digest, size: p.size }
}

pub fn delivery(d: DeliverySummary) -> deliveries::Delivery {
    deliveries::Delivery {
        id: d.id,
        binding: d.binding,
        provider: d.provider,
        delivery_id: d.delivery_id,
        event: d.event,
        verdict: verdict(d.verdict),
        reason: d.reason,
        runs: d.runs,
        body_sha256: d.body_sha256,
        received_at: d.received_at,
    }
}

pub fn verdict(v: Verdict) -> deliveries::Verdict {
    match v {
        Verdict::Received => deliveries::Verdict::Received,
        Verdict::Started => deliveries::Verdict::Started,
        Verdict::Ignored => deliveries::Verdict::Ignored,
        Verdict::Duplicate => deliveries::Verdict::Duplicate,
        Verdict::Rejected => deliveries::Verdict::Rejected,
    }
}

pub fn secret(s: SecretName) -> secrets::SecretName {
    secrets::SecretName {
        project: s.project,
        name: s.name,
        created_by: s.created_by,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

pub fn project(p: ProjectRow) -> tenancy::Project {
    tenancy::Project { name: p.name, department: p.department, created_at: p.created_at, trusted: p.trusted }
}

pub fn user(u: UserRow) -> tenancy::User {
    tenancy::User {
        name: u.name,
        role: u.role,
        projects: u.projects,
        created_at: u.created_at,
        updated_at: u.updated_at,
        disabled_at: u.disabled_at,
    }
}

pub fn token(t: TokenRow) -> tenancy::Token {
    tenancy::Token {
        id: t.id,
        user: t.user,
        name: t.name,
        scope: t.scope,
        expires_at: t.expires_at,
        revoked_at: t.revoked_at,
        last_used_at: t.last_used_at,
        created_at: t.created_at,
    }
}

pub fn audit(e: AuditEntry) -> tenancy::AuditEntry {
    tenancy::AuditEntry {
        id: e.id,
        at: e.at,
        actor: e.actor,
        action: e.action,
        object: e.object,
        outcome: e.outcome,
        client_ip: e.client_ip,
    }
}
