//! Keeps `docs/pipeline-yaml.md` true: every complete pipeline in a ```yaml block must
//! validate, and every block marked `# invalid` on its first line must not. When an
//! invalid block is followed by a ```text block of diagnostics, that block must be
//! exactly what `wharf validate pipeline.yaml` prints for it.

use std::path::Path;

/// One fenced block: its info string (`yaml`, `text`, …), its first line number in the
/// document, and its text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some(Block { info: info.trim().to_owned(), line: i + 2, text: String::new() }),
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "docs/pipeline-yaml.md: a fenced block is not closed");
    blocks
}

fn is_invalid(block: &Block) -> bool {
    block.text.lines().next().is_some_and(|l| l.trim() == "# invalid")
}

/// A whole pipeline, not a fragment: `name:` and `stages:` at the top level.
fn is_complete_pipeline(text: &str) -> bool {
    let top = |key: &str| text.lines().any(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')));
    top("name") && top("stages")
}

#[test]
fn yaml_examples_in_the_reference_are_true() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipeline-yaml.md");
    let markdown = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let blocks = fenced_blocks(&markdown);

    let mut checked = 0;
    let mut failures = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if !block.info.starts_with("yaml") || !is_complete_pipeline(&block.text) {
            continue;
        }
        checked += 1;
        let label = format!("docs/pipeline-yaml.md, the yaml block at line {}", block.line);
        let result = wharf_pipeline::parse(&block.text);
        match (is_invalid(block), result) {
            (false, Ok(pipeline)) => {
                // What the card editor shows and saves reads back as the same pipeline.
                let emitted = wharf_pipeline::to_yaml(&pipeline);
                match wharf_pipeline::parse(&emitted) {
                    Ok(back) if back == pipeline => {}
                    Ok(_) => failures.push(format!("{label}: to_yaml reads back differently:\n{emitted}")),
                    Err(d) => failures
                        .push(format!("{label}: to_yaml does not validate:\n{}", d.render("emitted.yaml", &emitted))),
                }
            }
            (false, Err(diags)) => {
                failures.push(format!("{label} does not validate:\n{}", diags.render("pipeline.yaml", &block.text)))
            }
            (true, Ok(_)) => failures.push(format!("{label} is marked `# invalid` but validates")),
            (true, Err(diags)) => {
                // The diagnostics shown right after the block must be the real ones.
                if let Some(shown) = blocks.get(i + 1).filter(|b| b.info == "text" && b.text.starts_with("error: ")) {
                    let actual = diags.render("pipeline.yaml", &block.text);
                    if actual != shown.text {
                        failures.push(format!(
                            "{label}: the diagnostics shown at line {} are not what validation prints; it prints:\n{actual}",
                            shown.line
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 3, "expected the reference's complete pipelines to be checked; found only {checked}");
}
