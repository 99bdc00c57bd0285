//! The code's shape, checked on every run: no import circles between modules, and no
//! production file that has grown past what one reader holds in mind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose sources are checked.
const CRATES: &[&str] = &[
    "pki",
    "common",
    "ca-server",
    "ca-client",
    "proto",
    "bench",
    "tests",
    "fuzzing",
];

/// Past this many lines (tests at the end not counted) a module becomes a folder.
const MAX_LINES: usize = 500;

/// Files that may be longer, and why.
const LONG_FILES: &[(&str, &str)] = &[(
    "ca-server/src/store/conformance.rs",
    "the one test suite both stores pass: a list of cases, read one at a time",
)];

type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The module a file under `src` defines (`agent/mod.rs` and `agent.rs` are `agent`).
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Where a file's unit tests begin (`#[cfg(test)]` over a `mod tests`), or its end.
fn tests_start(text: &str) -> usize {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]"
            && text[at + line.len()..]
                .lines()
                .next()
                .is_some_and(|next| next.contains("mod tests"))
        {
            return at;
        }
        at += line.len();
    }
    text.len()
}

/// The text before its unit tests, without comments.
fn production_text(text: &str) -> String {
    text[..tests_start(text)]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a module's text names through `crate::`, `super::` and `self::`, made
/// absolute (`me` is the module of the text; in a folder's `mod.rs` too, `super` is its
/// parent).
fn references(text: &str, me: &Module) -> BTreeSet<Module> {
    let text = production_text(text);
    let mut out = BTreeSet::new();
    // `use crate::{a, b::c}` and `use super::{a, b}` lists, possibly over several lines.
    let mut statement: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if statement.is_none()
            && let Some(i) = line
                .find("use ")
                .filter(|&i| matches!(&line[..i], "" | "pub " | "pub(crate) " | "pub(super) "))
        {
            statement = Some(String::new());
            statement.as_mut().unwrap().push_str(&line[i + 4..]);
        } else if let Some(s) = statement.as_mut() {
            s.push_str(line);
        }
        if let Some(s) = statement.take_if(|s| s.ends_with(';')) {
            let compact: String = s.trim_end_matches(';').split_whitespace().collect();
            out.extend(expand(&compact));
        }
    }
    // Inline paths: `crate::node::x(...)`.
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("crate::") || word.starts_with("super::") || word.starts_with("self::")
        {
            out.insert(word.split("::").map(str::to_string).collect());
        }
    }
    out.into_iter()
        .filter_map(|path| absolute(&path, me))
        .collect()
}

/// `crate::{a,b::{c,d}}` -> `crate::a`, `crate::b::c`, `crate::b::d`.
fn expand(stmt: &str) -> Vec<Module> {
    let Some(open) = stmt.find('{') else {
        return vec![stmt.split("::").map(str::to_string).collect()];
    };
    let prefix: Module = stmt[..open]
        .trim_end_matches("::")
        .split("::")
        .map(str::to_string)
        .collect();
    let inner = &stmt[open + 1..stmt.rfind('}').unwrap_or(stmt.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(|item| {
            expand(item).into_iter().map(|tail| {
                let mut p = prefix.clone();
                p.extend(tail);
                p
            })
        })
        .collect()
}

fn absolute(path: &[String], me: &Module) -> Option<Module> {
    let (head, mut rest) = path.split_first()?;
    let mut base: Module = match head.as_str() {
        "crate" => Vec::new(),
        "self" => me.clone(),
        "super" => {
            let mut b = me.clone();
            b.pop();
            b
        }
        _ => return None,
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Import edges between sibling modules: `a -> b` when something in `a` names something
/// in `b` and neither contains the other.
fn sibling_edges(krate: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let src = krate.join("src");
    let files = sources(&src);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let resolve = |path: &Module| {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains_key(p))
    };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (me, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        for target in references(&text, me).iter().filter_map(resolve) {
            if target.starts_with(me) || me.starts_with(&target) {
                continue;
            }
            let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
            edges
                .entry(me[..=common].to_vec())
                .or_default()
                .insert(target[..=common].to_vec());
        }
    }
    edges
}

/// One circle in `edges`, if there is any.
fn circle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut found = path[i..].to_vec();
            found.push(node.clone());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    for krate in CRATES {
        let edges = sibling_edges(&workspace().join(krate));
        if let Some(found) = circle(&edges) {
            let names: Vec<String> = found.iter().map(|m| m.join("::")).collect();
            panic!("{krate}: import circle {}", names.join(" -> "));
        }
    }
}

/// The detector itself: the circle wave 1 had (`agent` used `node::report_engine`, `node`
/// used `agent::backup_dir`) is found, and a one-way import is not a circle.
#[test]
fn the_circle_detector_finds_the_agent_node_circle_of_wave_one() {
    let me = vec!["agent".to_string()];
    let refs = references(
        "use crate::node::report_engine;\nfn f() { crate::docker::rotate(); }",
        &me,
    );
    assert!(refs.contains(&vec!["node".to_string(), "report_engine".into()]));
    assert!(refs.contains(&vec!["docker".to_string(), "rotate".into()]));
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges
        .entry(me.clone())
        .or_default()
        .insert(vec!["node".into()]);
    assert_eq!(circle(&edges), None);
    edges
        .entry(vec!["node".into()])
        .or_default()
        .insert(me.clone());
    assert!(circle(&edges).is_some());
    assert_eq!(
        expand("super::{a,b::{c,d}}"),
        vec![
            vec!["super".to_string(), "a".into()],
            vec!["super".into(), "b".into(), "c".into()],
            vec!["super".into(), "b".into(), "d".into()],
        ]
    );
}

#[test]
fn no_production_file_is_longer_than_one_reader_holds_in_mind() {
    let root = workspace();
    let mut long = Vec::new();
    for krate in CRATES {
        for file in sources(&root.join(krate).join("src")) {
            let rel = file.strip_prefix(&root).unwrap().display().to_string();
            let in_tests = rel.ends_with("/tests.rs") || rel.contains("/tests/");
            if in_tests || LONG_FILES.iter().any(|(f, _)| *f == rel) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let lines = text[..tests_start(&text)].lines().count();
            if lines > MAX_LINES {
                long.push(format!("{rel}: {lines} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "past {MAX_LINES} lines, a module becomes a folder: {long:?}"
    );
}
