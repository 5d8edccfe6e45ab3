//! YAML text → a tree of [`Node`]s that remember where they were written.
//!
//! Built on granit-parser's event stream so that every value keeps its line and
//! column, and so that hostile input is bounded here, before anything else looks at
//! it: the text size, the nesting depth, and the number of nodes after aliases are
//! expanded ("billion laughs" stops at [`Limits::max_nodes`]). Merge keys (`<<: *base`)
//! are applied as YAML 1.1 tools do, since CI files use them a lot.

use crate::diag::{Diagnostic, Pos};
use granit_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;
use std::rc::Rc;

/// Bounds on what a pipeline file may cost to read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    /// Nodes after alias expansion.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 2 * 1024 * 1024, max_depth: 64, max_nodes: 200_000 }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys in written order; duplicate keys are refused while building.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub style: Style,
}

/// How a scalar was written; decides whether `true`, `12` or `~` mean a bool, a
/// number and null (plain) or text (quoted, block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    /// `|` — content lines map one to one onto source lines after the indicator.
    Literal,
    /// `>`
    Folded,
}

impl Node {
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar(s) if s.style == Style::Plain && is_null(&s.text) => "null",
            Kind::Scalar(s) if s.style == Style::Plain && (s.text == "true" || s.text == "false") => "a boolean",
            Kind::Scalar(s) if s.style == Style::Plain && s.text.parse::<f64>().is_ok() => "a number",
            Kind::Scalar(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s) if s.style == Style::Plain && is_null(&s.text))
    }
}

pub fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Parses one YAML document. An empty document is an error: a pipeline needs fields.
pub fn parse(text: &str, limits: Limits) -> Result<Node, Diagnostic> {
    if text.len() > limits.max_bytes {
        return Err(Diagnostic::new(
            Pos::START,
            "",
            format!("the file is {} bytes; a pipeline file may be at most {} bytes", text.len(), limits.max_bytes),
        ));
    }
    let mut builder =
        Builder { limits, nodes: 0, anchors: HashMap::new(), stack: Vec::new(), root: None, documents: 0 };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| {
            let m = err.marker();
            let pos = Pos { line: m.line(), col: m.col() + 1 };
            let info = err.info();
            if info.contains("recursion limit") {
                return Diagnostic::new(
                    pos,
                    "",
                    format!("values are nested more than {} levels deep", limits.max_depth.min(64)),
                );
            }
            Diagnostic::new(pos, "", format!("invalid YAML: {info}"))
        })?;
        builder.event(event, span)?;
    }
    builder.root.ok_or_else(|| {
        Diagnostic::new(Pos::START, "", "the file is empty: expected a pipeline mapping with `name` and `stages`")
    })
}

enum Open {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Node, Node)>, key: Option<Node>, merged: Vec<bool> },
}

struct Builder {
    limits: Limits,
    nodes: usize,
    /// Anchored nodes with their expanded sizes, shared so an alias costs no copy
    /// until it is placed.
    anchors: HashMap<usize, (Rc<Node>, usize)>,
    stack: Vec<Open>,
    root: Option<Node>,
    documents: usize,
}

fn pos_of(span: &Span) -> Pos {
    Pos { line: span.start.line(), col: span.start.col() + 1 }
}

fn size_of(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar(_) => 1,
        Kind::Seq(items) => 1 + items.iter().map(size_of).sum::<usize>(),
        Kind::Map(entries) => 1 + entries.iter().map(|(k, v)| size_of(k) + size_of(v)).sum::<usize>(),
    }
}

impl Builder {
    fn count(&mut self, n: usize, pos: Pos) -> Result<(), Diagnostic> {
        self.nodes += n;
        if self.nodes > self.limits.max_nodes {
            return Err(Diagnostic::new(
                pos,
                "",
                format!(
                    "the document expands to more than {} values (aliases of aliases?); refusing to read it",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Diagnostic> {
        let pos = pos_of(&span);
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::new(
                        pos,
                        "",
                        "a pipeline file holds one YAML document; found a second `---`",
                    ));
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                let style = match tag.as_deref() {
                    None => style,
                    Some(tag) if tag.is_yaml_core_schema_tag("str") => Style::Quoted,
                    Some(tag) if tag.is_yaml_core_schema() => style,
                    Some(tag) => {
                        return Err(Diagnostic::new(
                            pos,
                            "",
                            format!("the YAML tag `{}` is not supported", tag.original()),
                        ));
                    }
                };
                self.count(1, pos)?;
                self.place(Node { pos, kind: Kind::Scalar(Scalar { text: text.into_owned(), style }) }, anchor)
            }
            Event::SequenceStart(_, anchor, _) => self.open(Open::Seq { pos, anchor, items: Vec::new() }, pos),
            Event::MappingStart(_, anchor, _) => {
                self.open(Open::Map { pos, anchor, entries: Vec::new(), key: None, merged: Vec::new() }, pos)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq { pos, anchor, items }) => (Node { pos, kind: Kind::Seq(items) }, anchor),
                    Some(Open::Map { pos, anchor, entries, .. }) => (Node { pos, kind: Kind::Map(entries) }, anchor),
                    None => return Ok(()),
                };
                self.place(node, anchor)
            }
            Event::Alias(id) => {
                let (node, size) = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Diagnostic::new(pos, "", "alias to an unknown anchor"))?;
                self.count(size, pos)?;
                let mut node = (*node).clone();
                // Errors about the alias's value should point at the alias.
                node.pos = pos;
                self.place(node, 0)
            }
            _ => Ok(()),
        }
    }

    fn open(&mut self, open: Open, pos: Pos) -> Result<(), Diagnostic> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(Diagnostic::new(
                pos,
                "",
                format!("values are nested more than {} levels deep", self.limits.max_depth),
            ));
        }
        self.count(1, pos)?;
        self.stack.push(open);
        Ok(())
    }

    fn place(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            let size = size_of(&node);
            self.anchors.insert(anchor, (Rc::new(node.clone()), size));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Open::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Open::Map { entries, key, merged, .. }) => match key.take() {
                None => {
                    if !matches!(node.kind, Kind::Scalar(_)) {
                        return Err(Diagnostic::new(node.pos, "", "mapping keys must be plain strings"));
                    }
                    *key = Some(node);
                    Ok(())
                }
                Some(k) => {
                    let name = scalar_text(&k);
                    if name == "<<" && matches!(k.kind, Kind::Scalar(Scalar { style: Style::Plain, .. })) {
                        return merge(entries, merged, node);
                    }
                    if let Some(i) = entries.iter().position(|(e, _)| scalar_text(e) == name) {
                        if merged[i] {
                            // The mapping's own key wins over a merged one.
                            entries[i] = (k, node);
                            merged[i] = false;
                            return Ok(());
                        }
                        let first = &entries[i].0;
                        return Err(Diagnostic::new(
                            k.pos,
                            "",
                            format!("duplicate key `{name}` (first written at line {})", first.pos.line),
                        ));
                    }
                    entries.push((k, node));
                    merged.push(false);
                    Ok(())
                }
            },
        }
    }
}

fn scalar_text(node: &Node) -> &str {
    match &node.kind {
        Kind::Scalar(s) => &s.text,
        _ => "",
    }
}

/// `<<: *base` or `<<: [*a, *b]`: copy keys the mapping does not set itself (the
/// mapping's own keys win even when written after the merge, as in YAML 1.1).
fn merge(entries: &mut Vec<(Node, Node)>, merged: &mut Vec<bool>, value: Node) -> Result<(), Diagnostic> {
    let sources = match value.kind {
        Kind::Map(_) => vec![value],
        Kind::Seq(items) => items,
        Kind::Scalar(_) => {
            return Err(Diagnostic::new(value.pos, "", "`<<` merges a mapping or a list of mappings"));
        }
    };
    for source in sources {
        let Kind::Map(source_entries) = source.kind else {
            return Err(Diagnostic::new(source.pos, "", "`<<` merges a mapping or a list of mappings"));
        };
        for (k, v) in source_entries {
            if !entries.iter().any(|(e, _)| scalar_text(e) == scalar_text(&k)) {
                entries.push((k, v));
                merged.push(true);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(node: &Node) -> Vec<String> {
        match &node.kind {
            Kind::Map(entries) => entries.iter().map(|(k, _)| scalar_text(k).to_owned()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse("name: x\nstages:\n  - name: b\n", Limits::default()).unwrap();
        let Kind::Map(entries) = &root.kind else { panic!() };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 7 });
        let Kind::Seq(items) = &entries[1].1.kind else { panic!() };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
    }

    #[test]
    fn merge_keys_fill_in_what_is_missing() {
        let root = parse("base: &b {a: 1, b: 2}\nx:\n  b: 3\n  <<: *b\n", Limits::default()).unwrap();
        let Kind::Map(entries) = &root.kind else { panic!() };
        assert_eq!(keys(&entries[1].1), ["b", "a"]);
        let Kind::Map(x) = &entries[1].1.kind else { panic!() };
        assert_eq!(scalar_text(&x[0].1), "3");
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let err = parse("name: a\nname: b\n", Limits::default()).unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, col: 1 });
        assert_eq!(err.message, "duplicate key `name` (first written at line 1)");
    }

    #[test]
    fn billion_laughs_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let started = std::time::Instant::now();
        let err = parse(&text, Limits::default()).unwrap_err();
        assert!(err.message.contains("expands to more than 200000 values"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse(&text, Limits::default()).unwrap_err();
        assert_eq!(err.message, "values are nested more than 64 levels deep");
        let text = "a:\n".to_owned() + &(1..200).map(|i| format!("{}b:\n", "  ".repeat(i))).collect::<String>();
        assert!(parse(&text, Limits::default()).unwrap_err().message.contains("nested more than 64"));
    }

    #[test]
    fn size_is_bounded_before_parsing() {
        let text = "x".repeat(10 * 1024 * 1024);
        let err = parse(&text, Limits::default()).unwrap_err();
        assert!(err.message.starts_with("the file is 10485760 bytes"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("name: x\nstages: [a, b\n", Limits::default()).unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.pos.line >= 2, "{:?}", err.pos);
    }

    #[test]
    fn custom_tags_and_second_documents_are_refused() {
        assert!(parse("a: !custom x\n", Limits::default()).unwrap_err().message.contains("tag"));
        assert!(parse("a: 1\n---\nb: 2\n", Limits::default()).unwrap_err().message.contains("one YAML document"));
        let ok = parse("a: !!str 12\n", Limits::default()).unwrap();
        let Kind::Map(e) = ok.kind else { panic!() };
        assert_eq!(e[0].1.describe(), "a string");
    }
}
