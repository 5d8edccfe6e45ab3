//! Pipeline YAML → a validated [`Pipeline`], or every problem with its line, column
//! and field path.
//!
//! Reading order: [`yaml`] (text → positioned tree, with the limits that keep hostile
//! input cheap), [`decode`] (tree → model, field by field), [`check`] (names and
//! `${…}` references across the whole pipeline). [`parse`] runs all three; [`limits`]
//! holds the size limits they enforce.

pub mod check;
pub mod decode;
pub mod diag;
pub mod emit;
pub mod limits;
pub mod starter;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, Pos};
pub use emit::to_yaml;
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

/// The same pipeline text under another name (for copying a pipeline): only the
/// top-level `name` value changes, comments and layout stay. The result is validated.
pub fn rename(text: &str, new_name: &str) -> Result<(String, Pipeline), Diagnostics> {
    let bad = |message: String| Diagnostics(vec![Diagnostic::new(Pos::START, "name", message)]);
    wharf_core::names::PipelineName::new(new_name).map_err(|e| bad(e.to_string()))?;
    let old = parse(text)?;
    let root = yaml::parse(text, Limits::default()).map_err(|d| Diagnostics(vec![d]))?;
    let yaml::Kind::Map(entries) = &root.kind else { return Err(bad("the pipeline is not a mapping".into())) };
    let value = entries
        .iter()
        .find(|(k, _)| matches!(&k.kind, yaml::Kind::Scalar(s) if s.text == "name"))
        .map(|(_, v)| v)
        .ok_or_else(|| bad("the pipeline has no `name`".into()))?;
    // The old name obeys the name grammar, so it is written plainly or in plain quotes.
    let line_start: usize = text.split_inclusive('\n').take(value.pos.line - 1).map(str::len).sum();
    let line = &text[line_start..];
    let at = line_start + line.char_indices().nth(value.pos.col - 1).map_or(line.len(), |(i, _)| i);
    let old_name = old.name.as_str();
    let written = [format!("\"{old_name}\""), format!("'{old_name}'"), old_name.to_owned()]
        .into_iter()
        .find(|token| text[at..].starts_with(token.as_str()))
        .ok_or_else(|| bad("cannot find the name's text to replace".into()))?;
    let quote = if written.starts_with(['"', '\'']) { &written[..1] } else { "" };
    let renamed = format!("{}{quote}{new_name}{quote}{}", &text[..at], &text[at + written.len()..]);
    let pipeline = parse(&renamed)?;
    Ok((renamed, pipeline))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rename_changes_only_the_top_level_name() {
        let yaml = "# my pipeline\nname: app   # the name\nstages:\n  - name: app\n    tasks: [{name: t, type: script, script: echo}]\n";
        let (text, p) = super::rename(yaml, "app-copy").unwrap();
        assert_eq!(text, yaml.replacen("name: app  ", "name: app-copy  ", 1));
        assert_eq!(p.name.as_str(), "app-copy");
        assert_eq!(p.stages[0].name.as_str(), "app");
        let json =
            r#"{"stages": [{"name": "S", "tasks": [{"name": "t", "type": "script", "script": "x"}]}], "name": "j"}"#;
        let (text, p) = super::rename(json, "k").unwrap();
        assert!(text.ends_with(r#""name": "k"}"#), "{text}");
        assert_eq!(p.name.as_str(), "k");
        assert!(super::rename(yaml, "../x").is_err());
    }
}
