//! OpenAPI schemas (feature `openapi`): every type of this crate by name, and the few
//! `wharf-core` types the answers carry (statuses from [`Status::ALL`], so a new
//! status shows in the document by itself).

use crate::{Error, Listed, Paged};
use crate::{
    bindings, clusters, deliveries, gates, pipelines, registries, releases, runs, schedule, secrets, signals, tenancy,
};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use wharf_core::status::Status;

/// `Status`, by reference.
pub(crate) fn status() -> Ref {
    Ref::from_schema_name("Status")
}

/// `Cause`, by reference.
pub(crate) fn cause() -> Ref {
    Ref::from_schema_name("Cause")
}

/// A status history: `[Transition]`.
pub(crate) fn history() -> Schema {
    ArrayBuilder::new().items(Ref::from_schema_name("Transition")).into()
}

fn status_schema() -> Schema {
    let names = Status::ALL.iter().map(|s| s.as_str());
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some("A run's, stage's or task's state (wharf-core's status machine)."))
        .into()
}

fn transition_schema() -> Schema {
    ObjectBuilder::new()
        .property("status", status())
        .required("status")
        .property(
            "at",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .required("at")
        .into()
}

fn cause_schema() -> Schema {
    ObjectBuilder::new()
        .property(
            "kind",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["local", "manual", "timer", "event", "rerun", "retry", "channel"])),
        )
        .required("kind")
        .description(Some(
            "Why a run started: `manual` and `local` with `user`, `timer` with `due`, `event` with `provider`, \
             `delivery`, `sender`, `commit` and `fork`, `rerun` and `retry` with `of` (the run number), \
             `channel` with `channel`, `pipeline` and `number` (the run that sent the message).",
        ))
        .into()
}

/// Adds `T` under its own name, and the named types it refers to.
fn named<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
}

/// Adds a generic page or list of items under a name of its own, and its items' type.
fn generic<T: ToSchema>(name: &str, out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((name.to_owned(), T::schema()));
    T::schemas(out);
}

/// Every schema of the API: name and schema, sorted by name. Request bodies keep the
/// names the document has always given them (`Binding`, `Registry`, `Project`, `User`,
/// `Token`, `Scratch`, `Copy`, `Secret`…, which clients and tests name); the objects
/// answered under those words are `BindingInfo`, `RegistryInfo`, `ProjectInfo`,
/// `UserInfo` and `TokenInfo`.
pub fn schemas() -> Vec<(String, RefOr<Schema>)> {
    let mut out = vec![
        ("Status".to_owned(), status_schema().into()),
        ("Transition".to_owned(), transition_schema().into()),
        ("Cause".to_owned(), cause_schema().into()),
    ];
    named::<Error>(&mut out);
    named::<pipelines::Pipeline>(&mut out);
    named::<pipelines::PipelineListed>(&mut out);
    named::<pipelines::PipelineShown>(&mut out);
    named::<pipelines::Saved>(&mut out);
    named::<pipelines::ScratchPipeline>(&mut out);
    named::<pipelines::CopyPipeline>(&mut out);
    named::<pipelines::ValidateRequest>(&mut out);
    named::<pipelines::Validated>(&mut out);
    named::<pipelines::TaskTypes>(&mut out);
    named::<pipelines::TaskType>(&mut out);
    generic::<Paged<pipelines::PipelineListed>>("PipelinePage", &mut out);
    named::<runs::StartRun>(&mut out);
    named::<runs::Accepted>(&mut out);
    named::<runs::Stopping>(&mut out);
    named::<runs::RunSummary>(&mut out);
    named::<runs::RunListed>(&mut out);
    named::<runs::RunDetail>(&mut out);
    generic::<Paged<runs::RunListed>>("RunPage", &mut out);
    named::<gates::Decide>(&mut out);
    named::<gates::Decided>(&mut out);
    named::<gates::DecisionInfo>(&mut out);
    named::<gates::WaitingApproval>(&mut out);
    named::<gates::NotificationAttempt>(&mut out);
    named::<signals::StageHook>(&mut out);
    named::<signals::Signalled>(&mut out);
    named::<signals::SignalledRun>(&mut out);
    generic::<crate::Listed<gates::WaitingApproval>>("ApprovalList", &mut out);
    named::<schedule::Schedule>(&mut out);
    named::<secrets::SecretName>(&mut out);
    named::<secrets::SetSecret>(&mut out);
    named::<secrets::SecretCreated>(&mut out);
    generic::<Listed<secrets::SecretName>>("SecretList", &mut out);
    named::<deliveries::Delivery>(&mut out);
    named::<deliveries::DeliveryShown>(&mut out);
    named::<deliveries::Handled>(&mut out);
    generic::<Paged<deliveries::Delivery>>("DeliveryPage", &mut out);
    named::<bindings::Binding>(&mut out);
    named::<bindings::NewBinding>(&mut out);
    named::<bindings::SetToken>(&mut out);
    named::<bindings::Branches>(&mut out);
    named::<bindings::Authorization>(&mut out);
    generic::<Listed<bindings::Binding>>("BindingList", &mut out);
    generic::<Listed<bindings::Repository>>("RepositoryList", &mut out);
    named::<registries::Registry>(&mut out);
    named::<registries::Registries>(&mut out);
    named::<registries::NewRegistry>(&mut out);
    named::<registries::NewWorkspace>(&mut out);
    named::<registries::Tags>(&mut out);
    named::<registries::TagDeleted>(&mut out);
    named::<registries::ImageRepository>(&mut out);
    named::<registries::Artifact>(&mut out);
    named::<registries::Pushed>(&mut out);
    named::<bindings::Repository>(&mut out);
    generic::<Listed<registries::ImageRepository>>("ImageRepositoryList", &mut out);
    generic::<Listed<registries::Pushed>>("PushedList", &mut out);
    named::<clusters::Cluster>(&mut out);
    named::<clusters::Nodes>(&mut out);
    named::<clusters::Health>(&mut out);
    named::<clusters::Clusters>(&mut out);
    named::<clusters::NewCluster>(&mut out);
    named::<clusters::ClusterInUse>(&mut out);
    named::<clusters::ClusterSettings>(&mut out);
    named::<clusters::PodResources>(&mut out);
    named::<clusters::PodQuantities>(&mut out);
    named::<clusters::PodToleration>(&mut out);
    named::<clusters::ClusterWorkspace>(&mut out);
    named::<releases::Release>(&mut out);
    named::<releases::Releases>(&mut out);
    named::<releases::Revision>(&mut out);
    named::<releases::ReleaseDetail>(&mut out);
    named::<releases::Rollback>(&mut out);
    named::<releases::Upgrade>(&mut out);
    named::<releases::Operation>(&mut out);
    named::<tenancy::Department>(&mut out);
    // `Listed<String>` refers to its items by name.
    out.push(("String".to_owned(), String::schema()));
    generic::<Listed<String>>("DepartmentList", &mut out);
    named::<tenancy::Project>(&mut out);
    named::<tenancy::NewProject>(&mut out);
    named::<tenancy::ProjectUpdate>(&mut out);
    generic::<Listed<tenancy::Project>>("ProjectList", &mut out);
    named::<tenancy::User>(&mut out);
    named::<tenancy::NewUser>(&mut out);
    named::<tenancy::UserUpdate>(&mut out);
    generic::<Listed<tenancy::User>>("UserList", &mut out);
    named::<tenancy::Token>(&mut out);
    named::<tenancy::NewToken>(&mut out);
    named::<tenancy::TokenCreated>(&mut out);
    generic::<Listed<tenancy::Token>>("TokenList", &mut out);
    named::<tenancy::AuditEntry>(&mut out);
    generic::<Paged<tenancy::AuditEntry>>("AuditPage", &mut out);
    named::<tenancy::Me>(&mut out);
    named::<tenancy::Login>(&mut out);
    named::<tenancy::LoggedIn>(&mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}
