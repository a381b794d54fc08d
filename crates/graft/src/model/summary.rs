//! `summary()`: every node's output shape, trainable and frozen parameter counts, and the receptive field of
//! convolution/pooling outputs with respect to the input.

use std::collections::BTreeMap;

use super::graph::{Graph, Source};

/// One row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub name: String,
    pub kind: String,
    pub inputs: Vec<String>,
    pub output_shapes: Vec<Vec<usize>>,
    pub trainable: usize,
    pub frozen: usize,
    /// Receptive field per spatial axis, for nodes whose outputs keep the input's spatial layout.
    pub receptive_field: Option<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rows: Vec<SummaryRow>,
    pub trainable: usize,
    pub frozen: usize,
}

/// Parameter counts per node name: (trainable, frozen).
pub(crate) fn parameter_counts(graph: &Graph) -> BTreeMap<String, (usize, usize)> {
    let nodes: std::collections::HashSet<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in super::params::parameters(graph) {
        let node = owner(&p.name, &nodes).to_string();
        let entry = counts.entry(node).or_default();
        if p.trainable {
            entry.0 += p.numel;
        } else {
            entry.1 += p.numel;
        }
    }
    counts
}

/// The node a parameter belongs to: the longest node name that is a dotted prefix of it (node names may hold dots,
/// as a backbone's `backbone._blocks.3._bn1` does; a parameter path inside a node, as a BERT's, may too).
fn owner<'a>(param: &'a str, nodes: &std::collections::HashSet<&str>) -> &'a str {
    let mut end = param.len();
    while let Some(dot) = param[..end].rfind('.') {
        if nodes.contains(&param[..dot]) {
            return &param[..dot];
        }
        end = dot;
    }
    param.split('.').next().unwrap_or_default()
}

impl Graph {
    pub fn summary(&self) -> Summary {
        let counts = parameter_counts(self);
        // (receptive field, jump) per spatial axis for each node output 0.
        let mut fields: Vec<Option<Vec<(usize, usize)>>> = Vec::with_capacity(self.nodes.len());
        let mut rows = vec![];
        for node in &self.nodes {
            let incoming: Vec<Option<Vec<(usize, usize)>>> = node
                .sources
                .iter()
                .map(|s| match s {
                    Source::Input(i) => {
                        let shape = &self.spec.inputs[*i].shape;
                        let spatial = match shape.len() {
                            2 => 1,
                            3 => 2,
                            _ => 0,
                        };
                        (spatial > 0).then(|| vec![(1, 1); spatial])
                    }
                    Source::Node(n, 0) => fields[*n].clone(),
                    Source::Node(..) => None,
                })
                .collect();
            let field = match (node.spec.window(), incoming.first().cloned().flatten()) {
                (Some(window), Some(mut rf)) if window.len() == rf.len() => {
                    for (axis, (span, stride)) in window.iter().enumerate() {
                        let (r, j) = rf[axis];
                        rf[axis] = (r + (span - 1) * j, j * stride);
                    }
                    Some(rf)
                }
                (Some(window), Some(_)) if window.is_empty() => {
                    // Element-wise layers and merges keep the largest field among their inputs.
                    let all: Vec<Vec<(usize, usize)>> = incoming.iter().flatten().cloned().collect();
                    all.into_iter()
                        .max_by_key(|rf| rf.iter().map(|(r, _)| *r).product::<usize>())
                }
                _ => None,
            };
            let (trainable, frozen) = counts.get(&node.name).copied().unwrap_or_default();
            rows.push(SummaryRow {
                name: node.name.clone(),
                kind: if node.layer_of == rows.len() {
                    node.spec.kind().to_string()
                } else {
                    format!("shared({})", self.nodes[node.layer_of].name)
                },
                inputs: self.spec.nodes[rows.len()].inputs.clone(),
                output_shapes: node.outputs.clone(),
                trainable,
                frozen,
                receptive_field: field
                    .as_ref()
                    .filter(|f| f.iter().any(|(r, _)| *r > 1))
                    .map(|f| f.iter().map(|(r, _)| *r).collect()),
            });
            fields.push(field);
        }
        let trainable = rows.iter().map(|r| r.trainable).sum();
        let frozen = rows.iter().map(|r| r.frozen).sum();
        Summary {
            rows,
            trainable,
            frozen,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header = [
            "layer",
            "kind",
            "from",
            "output shape",
            "trainable",
            "frozen",
            "receptive field",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.name.clone(),
                    r.kind.clone(),
                    r.inputs.join(", "),
                    r.output_shapes
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    r.trainable.to_string(),
                    r.frozen.to_string(),
                    r.receptive_field
                        .as_ref()
                        .map(|rf| rf.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("×"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..7)
            .map(|i| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |f: &mut std::fmt::Formatter<'_>, row: &[String]| -> std::fmt::Result {
            let parts: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            writeln!(f, "{}", parts.join("  ").trim_end())
        };
        line(f, &header.map(String::from))?;
        writeln!(f, "{}", "-".repeat(widths.iter().sum::<usize>() + 12))?;
        for c in &cells {
            line(f, c)?;
        }
        writeln!(f, "{}", "-".repeat(widths.iter().sum::<usize>() + 12))?;
        writeln!(f, "trainable parameters: {}", self.trainable)?;
        writeln!(f, "frozen parameters:    {}", self.frozen)?;
        write!(f, "total parameters:     {}", self.trainable + self.frozen)
    }
}
