//! A snapshot file: `# comment` lines, `root` lines, then sections (a header line and
//! its lines, indented by two spaces); and what differs between two of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A snapshot's content: `root` lines, then sections (a header line and its lines).
#[derive(Debug, PartialEq, Default)]
pub struct Snapshot {
    /// The `root` lines (without `root `).
    pub roots: Vec<String>,
    /// Each section's lines (without their indentation), by header.
    pub sections: BTreeMap<String, Vec<String>>,
    /// Section headers in the order written.
    pub order: Vec<String>,
}

impl Snapshot {
    /// Adds a section after the others.
    pub fn section(&mut self, header: String, lines: Vec<String>) {
        self.order.push(header.clone());
        self.sections.insert(header, lines);
    }

    /// The file: `# comment` lines, `root` lines, then each section (its lines
    /// indented by two spaces) after an empty line.
    pub fn text(&self, comment: &[String]) -> String {
        let mut out = String::new();
        for c in comment {
            writeln!(out, "# {c}").unwrap();
        }
        for root in &self.roots {
            writeln!(out, "root {root}").unwrap();
        }
        for header in &self.order {
            writeln!(out, "\n{header}").unwrap();
            for line in &self.sections[header] {
                writeln!(out, "  {line}").unwrap();
            }
        }
        out
    }

    /// Reads [`Snapshot::text`]'s output back (comments and empty lines skipped).
    pub fn parse(text: &str) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let mut current: Option<(String, Vec<String>)> = None;
        for line in text.lines() {
            if let Some(l) = line.strip_prefix("  ") {
                match &mut current {
                    Some((_, lines)) => lines.push(l.to_string()),
                    None => panic!("a snapshot line outside any section: {line}"),
                }
            } else if line.is_empty() || line.starts_with('#') {
                continue;
            } else {
                if let Some((header, lines)) = current.take() {
                    snapshot.section(header, lines);
                }
                match line.strip_prefix("root ") {
                    Some(root) => snapshot.roots.push(root.to_string()),
                    None => current = Some((line.to_string(), Vec::new())),
                }
            }
        }
        if let Some((header, lines)) = current {
            snapshot.section(header, lines);
        }
        snapshot
    }
}

/// The lines of `old` and `new` that differ, in order (`- ` removed, `+ ` added), by
/// longest common subsequence.
fn line_diff(old: &[String], new: &[String]) -> Vec<String> {
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", old[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", new[j]));
            j += 1;
        }
    }
    out
}

/// What changed from the frozen snapshot to today's contract, one paragraph per
/// section; empty if nothing did.
pub fn differences(frozen: &Snapshot, now: &Snapshot) -> String {
    let mut out = String::new();
    for line in line_diff(&frozen.roots, &now.roots) {
        writeln!(out, "roots: {line}").unwrap();
    }
    for (header, lines) in &frozen.sections {
        match now.sections.get(header) {
            None => writeln!(out, "{header}: - removed (or no longer reached)").unwrap(),
            Some(now_lines) if now_lines != lines => {
                writeln!(out, "{header}:").unwrap();
                for line in line_diff(lines, now_lines) {
                    writeln!(out, "    {line}").unwrap();
                }
            }
            Some(_) => {}
        }
    }
    for (header, lines) in &now.sections {
        if !frozen.sections.contains_key(header) {
            writeln!(out, "{header}: + added (newly reached)").unwrap();
            for line in lines {
                writeln!(out, "    + {line}").unwrap();
            }
        }
    }
    out
}
