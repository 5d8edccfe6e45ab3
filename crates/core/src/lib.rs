//! Wharf's domain model, free of IO and of any async runtime.
//!
//! Start with [`model`] (what a pipeline is), then [`status`] (the one state machine
//! shared by runs, stages and tasks), [`vars`] (the `${NAME}` language) and [`run`]
//! (the record of one execution). Every other crate speaks these types.

pub mod approval;
pub mod duration;
pub mod git;
pub mod model;
pub mod names;
pub mod pod;
pub mod reference;
pub mod run;
pub mod settle;
pub mod status;
pub mod vars;

pub use duration::Duration;
pub use status::Status;
