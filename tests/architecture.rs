//! The import graph of `src/` stays a tree of layers: util ← stages ← config ← app ← main.
//!
//! Reads every non-test source file, resolves each `crate::`, `super::` and `self::` path (and `perch::`
//! in main.rs) to the file that defines it — through a `mod.rs`'s `pub use` re-exports to the file behind
//! them — and fails on:
//! - any import loop among files (a cycle in the file graph);
//! - a stage file that imports `crate::app` or the composed `crate::config`;
//! - `util` importing anything outside `util`.
//!
//! Test modules (`#[cfg(test)] mod …`) are left out: a unit test may build a whole `Config`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

const STAGES: [&str; 8] = ["capture", "detect", "track", "events", "record", "ota", "health", "fleet"];

struct Source {
    rel: String,
    text: String,
}

fn files(root: &Path) -> BTreeMap<Module, Source> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mut parts: Module = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
            match parts.last().map(String::as_str) {
                Some("mod" | "lib") => {
                    parts.pop();
                }
                Some("main") if parts.len() == 1 => parts = vec!["<main>".into()],
                _ => {}
            }
            let text = strip(&std::fs::read_to_string(&p).unwrap());
            out.insert(parts, Source { rel, text });
        }
    }
    out
}

/// The file without its test module and comments.
fn strip(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod ") {
        Some(i) => &src[..i],
        None => src,
    };
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Inline `mod name {` blocks of a file: (start, end) byte ranges.
fn inline_modules(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("mod ") {
        let at = i + off;
        i = at + 4;
        if at > 0 && is_ident(b[at - 1] as char) {
            continue;
        }
        let rest = &text[i..];
        let name_len = rest.chars().take_while(|c| is_ident(*c)).count();
        let after = rest[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = i + name_len + (rest[name_len..].len() - after.len());
        let mut depth = 0;
        for (k, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((open, open + k));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Every path a file names: `base::a::b` and each leaf of `base::a::{b, c::{d, e}}`, as segments after
/// the base, with the byte offset where it starts.
fn paths(text: &str, base: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let pat = format!("{base}::");
    let mut i = 0;
    while let Some(off) = text[i..].find(&pat) {
        let at = i + off;
        i = at + pat.len();
        if at > 0 && (is_ident(text.as_bytes()[at - 1] as char) || text.as_bytes()[at - 1] == b':') {
            continue;
        }
        let (tree, _) = parse_tree(&text[i..]);
        for leaf in tree {
            out.push((at, leaf));
        }
    }
    out
}

/// Parses `a::b`, `a::{b, c::d}` or `*` at the start of `s`: the leaves, and the bytes used.
fn parse_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let mut segs = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &s[pos..];
        if rest.starts_with('{') {
            let mut leaves = Vec::new();
            pos += 1;
            loop {
                let r = &s[pos..];
                let skip = r.len() - r.trim_start_matches(|c: char| c.is_whitespace() || c == ',').len();
                pos += skip;
                if s[pos..].starts_with('}') || pos >= s.len() {
                    pos += 1;
                    break;
                }
                let (sub, used) = parse_tree(&s[pos..]);
                if used == 0 {
                    break;
                }
                pos += used;
                // `x as y`
                let r = &s[pos..];
                if let Some(r2) = r.trim_start().strip_prefix("as ") {
                    let n = r2.trim_start().chars().take_while(|c| is_ident(*c)).count();
                    pos += r.len() - r2.trim_start().len() + n;
                }
                for l in sub {
                    let mut full = segs.clone();
                    full.extend(l);
                    leaves.push(full);
                }
            }
            return (leaves, pos);
        }
        let n = rest.chars().take_while(|c| is_ident(*c) || *c == '*').count();
        if n == 0 {
            return (if segs.is_empty() { vec![] } else { vec![segs] }, pos);
        }
        segs.push(rest[..n].to_string());
        pos += n;
        if s[pos..].starts_with("::") {
            pos += 2;
        } else {
            return (vec![segs], pos);
        }
    }
}

/// The paths of a file's `pub use a::b;` / `pub use self::a::{b, c};` items, relative to the file.
fn reexported(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = text[i..].find("pub use ") {
        i += off + "pub use ".len();
        let rest = text[i..].strip_prefix("self::").unwrap_or(&text[i..]);
        if rest.starts_with("crate::") || rest.starts_with("super::") {
            continue;
        }
        out.extend(parse_tree(rest).0);
    }
    out
}

struct Graph {
    files: BTreeMap<Module, Source>,
    /// (module, name) → the child file a `pub use child::name` re-exports it from.
    reexports: BTreeMap<(Module, String), Module>,
}

impl Graph {
    fn new(root: &Path) -> Self {
        let files = files(root);
        let mut reexports = BTreeMap::new();
        for (m, f) in &files {
            for leaf in reexported(&f.text) {
                if let Some((first, rest)) = leaf.split_first() {
                    let mut child = m.clone();
                    child.push(first.clone());
                    if files.contains_key(&child)
                        && let Some(name) = rest.last()
                    {
                        reexports.insert((m.clone(), name.clone()), child);
                    }
                }
            }
        }
        Graph { files, reexports }
    }

    /// The file that defines `path` (a full module path with an item at the end, or a module).
    fn resolve(&self, path: &[String]) -> Option<Module> {
        for n in (1..=path.len()).rev() {
            let m: Module = path[..n].to_vec();
            if self.files.contains_key(&m) {
                if let Some(next) = path.get(n)
                    && let Some(child) = self.reexports.get(&(m.clone(), next.clone()))
                {
                    return Some(child.clone());
                }
                return Some(m);
            }
        }
        None
    }

    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut out = BTreeMap::new();
        for (m, f) in &self.files {
            let inline = inline_modules(&f.text);
            let depth = |at: usize| inline.iter().filter(|(a, b)| *a < at && at < *b).count();
            // The module a file's own code lives in (`a/b.rs` is `a::b`, `a/mod.rs` is `a`).
            let parent_of_file: Module = m[..m.len().saturating_sub(1)].to_vec();
            let mut deps = BTreeSet::new();
            let mut add = |p: Vec<String>| {
                let mut path = Vec::new();
                for seg in p {
                    match seg.as_str() {
                        "super" => {
                            path.pop();
                        }
                        "self" | "*" => {}
                        _ => path.push(seg),
                    }
                }
                if let Some(r) = self.resolve(&path)
                    && &r != m
                    && !r.is_empty()
                {
                    deps.insert(r);
                }
            };
            for (_, p) in paths(&f.text, "crate") {
                add(p);
            }
            if f.rel == "main.rs" {
                for (_, p) in paths(&f.text, "perch") {
                    add(p);
                }
            }
            for (at, p) in paths(&f.text, "super") {
                // Inside an inline module, `super` is the file's own module.
                if depth(at) > 0 {
                    continue;
                }
                add([parent_of_file.clone(), p].concat());
            }
            // A `mod.rs` names its children without a prefix (`state::write_atomic`); its `pub use`
            // re-exports are not its own uses.
            if f.rel.ends_with("mod.rs") || f.rel == "lib.rs" {
                let own: String = f.text.lines().filter(|l| !l.trim_start().starts_with("pub use ")).collect::<Vec<_>>().join("\n");
                for child in self.files.keys().filter(|c| c.len() == m.len() + 1 && c.starts_with(m)) {
                    for (_, p) in paths(&own, child.last().unwrap()) {
                        add([child.clone(), p].concat());
                    }
                }
            }
            for (at, p) in paths(&f.text, "self") {
                if depth(at) == 0 {
                    add([m.clone(), p].concat());
                }
            }
            out.insert(m.clone(), deps);
        }
        out
    }
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct T<'a> {
        e: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit(t: &mut T, v: &Module) {
        let i = t.index.len();
        t.index.insert(v.clone(), i);
        t.low.insert(v.clone(), i);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        for w in t.e.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T { e: edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn show(m: &Module) -> String {
    if m.is_empty() { "lib".into() } else { m.join("/") }
}

/// This checkout's `src/` (or, to look at another tree by hand, `PERCH_ARCH_SRC`).
fn src_graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let root = std::env::var_os("PERCH_ARCH_SRC").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), Into::into);
    Graph::new(&root).edges()
}

#[test]
fn no_import_loop_among_source_files() {
    let edges = src_graph();
    assert!(edges.len() > 50, "the scan found only {} files", edges.len());
    let found: Vec<String> = cycles(&edges)
        .iter()
        .map(|c| {
            let set: BTreeSet<&Module> = c.iter().collect();
            let links: Vec<String> =
                c.iter().flat_map(|a| edges[a].iter().filter(|b| set.contains(b)).map(move |b| format!("{} -> {}", show(a), show(b)))).collect();
            format!("{} files: {}", c.len(), links.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import loops:\n{}", found.join("\n"));
}

#[test]
fn stages_never_import_the_app_or_the_composed_config_and_util_is_a_leaf() {
    let mut up = Vec::new();
    for (m, deps) in src_graph() {
        let Some(top) = m.first().map(String::as_str) else { continue };
        for d in deps {
            let to = d.first().map(String::as_str).unwrap_or("lib");
            let bad = (STAGES.contains(&top) && (to == "app" || to == "config")) || (top == "util" && to != "util");
            if bad {
                up.push(format!("{} -> {}", show(&m), show(&d)));
            }
        }
    }
    assert!(up.is_empty(), "imports that run up the layers (util ← stages ← config ← app ← main):\n{}", up.join("\n"));
}

/// Capture is the first stage: it imports only `util` and its own files. Encoded frames reach the recorder
/// through capture's `EncodedSink`, which record implements; the `[[camera]]` table that names the later
/// stages' sections (`[camera.track]`, `[camera.record]`, `[camera.cadence]`) is `config/camera`, which
/// hands capture its `CaptureSettings`.
#[test]
fn capture_knows_no_stage_downstream_of_it() {
    let mut down = Vec::new();
    for (m, deps) in src_graph() {
        if m.first().map(String::as_str) != Some("capture") {
            continue;
        }
        for d in deps {
            if !matches!(d.first().map(String::as_str), Some("capture" | "util")) {
                down.push(format!("{} -> {}", show(&m), show(&d)));
            }
        }
    }
    assert!(down.is_empty(), "capture imports a later stage:\n{}", down.join("\n"));
}

/// The checker itself finds what it must: a loop through a re-export, a `super` path, and a path group.
#[test]
fn the_checker_finds_a_loop_through_reexports_and_groups() {
    let d = tempfile::tempdir().unwrap();
    let w = |p: &str, t: &str| {
        let p = d.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    };
    w("lib.rs", "pub mod a;\npub mod b;\n");
    w("a/mod.rs", "pub mod x;\npub use x::Thing;\n");
    w("a/x.rs", "use crate::{b::{Other, more::Deep}};\npub struct Thing;\n");
    w("b/mod.rs", "pub mod more;\npub struct Other;\n");
    w("b/more.rs", "use super::super::a::Thing;\npub struct Deep;\n#[cfg(test)]\nmod tests { use crate::a::x::Thing; }\n");
    let edges = Graph::new(d.path()).edges();
    let m = |s: &str| s.split('/').map(str::to_string).collect::<Module>();
    assert!(edges[&m("a/x")].contains(&m("b")) && edges[&m("a/x")].contains(&m("b/more")), "{edges:?}");
    assert!(edges[&m("b/more")].contains(&m("a/x")), "the re-export leads to the defining file: {edges:?}");
    let c = cycles(&edges);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].iter().map(show).collect::<BTreeSet<_>>(), ["a/x", "b/more"].map(String::from).into_iter().collect());
}

/// The service wiring reads as a list: no function of `src/app/run.rs` is over 80 lines.
#[test]
fn the_service_wiring_has_no_long_function() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/app/run.rs")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let indent = l.len() - l.trim_start().len();
        let t = l.trim_start();
        let is_fn = ["fn ", "pub fn ", "async fn ", "pub async fn ", "pub(crate) fn "].iter().any(|p| t.starts_with(p));
        if !is_fn || !l.trim_end().ends_with('{') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let end = lines[i + 1..].iter().position(|x| *x == close).map(|n| i + 1 + n).unwrap_or_else(|| panic!("no end for {t}"));
        let len = end - i + 1;
        if len > 80 {
            long.push(format!("{} ({len} lines, line {})", t.split('(').next().unwrap_or(t), i + 1));
        }
    }
    assert!(long.is_empty(), "functions over 80 lines in src/app/run.rs: {long:?}");
}
