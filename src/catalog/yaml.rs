//! A YAML document as a tree of nodes that remember where they were written.
//!
//! Built from saphyr's event parser so that every node carries its line and
//! column, duplicate keys are caught, and the typed decoding that follows can
//! report every problem of a file in one run.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use super::diag::{Diagnostics, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A scalar as written; `quoted` scalars are always strings.
    Scalar {
        value: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in the order written (keys are nodes, for their locations).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A plain scalar that YAML reads as null (`~`, `null`, or nothing).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, quoted: false }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What kind of value this is, for messages ("a mapping", "a list", ...).
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Map(_) => "a mapping",
            NodeKind::Seq(_) => "a list",
            NodeKind::Scalar { .. } if self.is_null() => "nothing (null)",
            NodeKind::Scalar { .. } => "a scalar",
        }
    }

    /// The YAML 1.2 core-schema reading of this node as JSON, used to check a
    /// catalog against the JSON Schema that `imagepipe schema` prints.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar().unwrap_or_default().to_owned(), v.to_json()))
                    .collect(),
            ),
            NodeKind::Scalar {
                value,
                quoted: true,
            } => Value::String(value.clone()),
            NodeKind::Scalar {
                value,
                quoted: false,
            } => {
                if self.is_null() {
                    Value::Null
                } else if let Some(b) = plain_bool(value) {
                    Value::Bool(b)
                } else if let Ok(i) = value.parse::<i64>() {
                    Value::from(i)
                } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
                    Value::from(f)
                } else {
                    Value::String(value.clone())
                }
            }
        }
    }

    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
}

pub fn plain_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Parses one YAML document. A syntax error ends parsing (nothing after it can
/// be trusted) and is reported with its location; duplicate keys and other
/// structural problems are reported and parsing goes on.
pub fn parse(source: &str, diags: &mut Diagnostics) -> Option<Node> {
    let mut builder = Builder {
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        docs: 0,
        expanded: 0,
    };
    let mut parser = Parser::new_from_str(source);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => {
                let at = Span::new(span.start.line(), span.start.col() + 1);
                if !builder.push(event, at, diags) {
                    return None;
                }
            }
            Err(e) => {
                report_scan_error(&e, source, diags);
                return None;
            }
        }
    }
    builder.root
}

fn report_scan_error(e: &ScanError, source: &str, diags: &mut Diagnostics) {
    let m = e.marker();
    let info = e.info();
    let mut at = Span::new(m.line(), m.col() + 1);
    let is_word = |w: &str| info.split(|c: char| !c.is_alphanumeric()).any(|x| x == w);
    let unprintable = is_word("unprintable").then(|| {
        source
            .chars()
            .skip(m.index())
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    });
    let help = if let Some(c) = unprintable {
        let what = c.map_or_else(
            || "a control character".to_owned(),
            |c| format!("the control character U+{:04X}", u32::from(c)),
        );
        diags.error(
            at,
            format!("invalid YAML: {info}"),
            format!("the file holds {what} here, which YAML does not allow: remove it (is this a binary file, or text pasted from a terminal?)"),
        );
        return;
    } else if is_word("tab") || is_word("tabs") {
        // The scanner stops where the token before the tab ended, often the
        // end of the previous line: point at the tab itself.
        if let Some(tab) = source
            .char_indices()
            .skip(m.index())
            .find(|(_, c)| *c == '\t')
            .map(|(i, _)| i)
        {
            let before = &source[..tab];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
            at = Span::new(line, col);
        }
        "YAML indentation must use spaces, not tabs"
    } else {
        "fix the YAML syntax at this point (quote values that contain `: ` or start with special characters)"
    };
    diags.error(at, format!("invalid YAML: {info}"), help);
}

enum Frame {
    Seq {
        span: Span,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        span: Span,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// The most nodes aliases may copy into one catalog: far beyond any real
/// catalog, far below what exhausts memory (a "billion laughs" alias bomb
/// of a kilobyte would otherwise expand to gigabytes).
pub const MAX_ALIAS_NODES: usize = 100_000;
/// Sequences and mappings nested deeper than this are refused, block or
/// flow alike (the YAML scanner stops flow nesting at the same depth).
pub const MAX_DEPTH: usize = 256;

struct Builder {
    /// Anchored nodes with their size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    stack: Vec<Frame>,
    root: Option<Node>,
    docs: usize,
    /// Nodes copied by aliases so far.
    expanded: usize,
}

/// The number of nodes in a tree.
fn size(node: &Node) -> usize {
    1 + match &node.kind {
        NodeKind::Seq(items) => items.iter().map(size).sum(),
        NodeKind::Map(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

impl Builder {
    /// Takes one event; returns false when parsing must stop.
    fn push(&mut self, event: Event<'_>, at: Span, diags: &mut Diagnostics) -> bool {
        match event {
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    diags.error(
                        at,
                        "a catalog is a single YAML document",
                        "remove the second document (after `---`) or move it to its own file",
                    );
                    return false;
                }
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        quoted,
                    },
                    span: at,
                };
                self.complete(node, anchor, diags);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((_, n)) if self.expanded + n > MAX_ALIAS_NODES => {
                    diags.error(
                        at,
                        format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                        "a catalog that large is an alias bomb, not a catalog: write the values out or use fewer nested aliases",
                    );
                    return false;
                }
                Some((node, n)) => {
                    self.expanded += n;
                    let mut node = node.clone();
                    node.span = at;
                    self.complete(node, 0, diags);
                }
                None => {
                    diags.error(
                        at,
                        "alias refers to an unknown anchor",
                        "define the anchor (`&name`) before using it",
                    );
                    return false;
                }
            },
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                diags.error(
                    at,
                    format!("sequences and mappings nested more than {MAX_DEPTH} levels deep"),
                    "a catalog is a few levels deep: check the indentation and the `- ` at this point",
                );
                return false;
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq {
                    span: at,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map {
                    span: at,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        span,
                        anchor,
                        items,
                    }) => (
                        Node {
                            kind: NodeKind::Seq(items),
                            span,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        span,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            kind: NodeKind::Map(entries),
                            span,
                        },
                        anchor,
                    ),
                    None => return true,
                };
                self.complete(node, anchor, diags);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        true
    }

    fn complete(&mut self, node: Node, anchor: usize, diags: &mut Diagnostics) {
        if anchor != 0 {
            let n = size(&node);
            self.anchors.insert(anchor, (node.clone(), n));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let first = entries.iter().find(|(existing, _)| existing.kind == k.kind);
                    if let Some((first, _)) = first {
                        diags.error(
                            k.span,
                            format!("duplicate key `{}`", k.scalar().unwrap_or("?")),
                            format!(
                                "it is already set at line {}; keep only one",
                                first.span.line
                            ),
                        );
                    } else {
                        entries.push((k, node));
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse_ok(src: &str) -> Node {
        let mut d = Diagnostics::new(Path::new("t.yml"));
        let node = parse(src, &mut d).expect("parses");
        assert!(d.is_empty(), "{:?}", d.into_sorted());
        node
    }

    #[test]
    fn keeps_locations() {
        let node = parse_ok("a: 1\nb:\n  - x\n  - y\n");
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        assert_eq!(entries[1].0.span, Span::new(2, 1));
        let NodeKind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(items[1].span, Span::new(4, 5));
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let mut d = Diagnostics::new(Path::new("t.yml"));
        parse("a: 1\nb: 2\na: 3\n", &mut d);
        let all = d.into_sorted();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].line, all[0].column), (3, 1));
        assert!(all[0].message.contains("duplicate key `a`"));
    }

    #[test]
    fn plain_and_quoted_scalars_read_as_json() {
        let node = parse_ok("a: 22.04\nb: \"1\"\nc: true\nd: ~\n");
        assert_eq!(
            node.to_json(),
            serde_json::json!({"a": 22.04, "b": "1", "c": true, "d": null})
        );
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let node = parse_ok("a: &x [1, 2]\nb: *x\n");
        assert_eq!(
            node.to_json(),
            serde_json::json!({"a": [1, 2], "b": [1, 2]})
        );
    }
}
