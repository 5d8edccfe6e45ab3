//! Pipeline YAML → a validated [`Pipeline`], or every problem with its line, column
//! and field path.
//!
//! Reading order: [`yaml`] (text → positioned tree, with the limits that keep hostile
//! input cheap), [`decode`] (tree → model, field by field), [`check`] (names and
//! `${…}` references across the whole pipeline). [`parse`] runs all three.

pub mod check;
pub mod decode;
pub mod diag;
pub mod starter;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, Pos};
use wharf_core::model::Pipeline;
pub use yaml::Limits;

/// Parses and validates a pipeline file with the default [`Limits`].
pub fn parse(text: &str) -> Result<Pipeline, Diagnostics> {
    parse_with_limits(text, Limits::default())
}

pub fn parse_with_limits(text: &str, limits: Limits) -> Result<Pipeline, Diagnostics> {
    let root = yaml::parse(text, limits).map_err(|d| Diagnostics(vec![d]))?;
    let mut decoder = decode::Decoder::new(text);
    let pipeline = decoder.pipeline(&root);
    let mut diags = decoder.diags;
    if let Some(pipeline) = &pipeline {
        diags.extend(check::check(pipeline, &decoder.index));
    }
    match pipeline {
        Some(pipeline) if diags.is_empty() => Ok(pipeline),
        _ => {
            diags.sort_by_key(|d| d.pos);
            diags.dedup();
            if diags.is_empty() {
                diags.push(Diagnostic::new(Pos::START, "", "the pipeline is incomplete"));
            }
            Err(Diagnostics(diags))
        }
    }
}
