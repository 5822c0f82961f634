//! The rooms of docs/architecture.md hold: every `crate::…` path of a room names only
//! rooms its row of the doc's table lets it import, every allowed import runs down a
//! layer unless the doc names it as an upward import, and no two modules import each
//! other through a cycle (the OpenAPI collector is the named exception). The table is
//! read from the doc, so the doc and this check cannot disagree.
//!
//! `SYMBOLON_ARCH_ROOT=<checkout>` measures another tree (e.g. an older commit) against
//! this doc's table and prints its numbers before failing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source of the crate: `crate::a::b` is module `a::b`.
fn repo_root() -> PathBuf {
    std::env::var_os("SYMBOLON_ARCH_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// The doc's table after `marker`: the cells of each row, backticks removed.
fn table(doc: &str, marker: &str) -> Vec<Vec<String>> {
    let Some(start) = doc.find(marker) else { panic!("docs/architecture.md has no {marker:?}") };
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            let l = l.trim().trim_start_matches('|').trim_end_matches('|');
            l.split('|').map(|c| c.trim().replace('`', "")).collect()
        })
        .collect()
}

fn names(cell: &str) -> BTreeSet<String> {
    cell.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "—").map(String::from).collect()
}

/// The rules of docs/architecture.md §Rooms.
struct Rules {
    layer: BTreeMap<String, u32>,
    may_import: BTreeMap<String, BTreeSet<String>>,
    /// Named upward imports: (from, to).
    upward: BTreeSet<(String, String)>,
    /// Modules whose imports are left out of the cycle search (the OpenAPI collector).
    cycle_exempt: BTreeSet<String>,
}

fn rules(doc: &str) -> Rules {
    let mut layer = BTreeMap::new();
    let mut may_import = BTreeMap::new();
    for row in table(doc, "<!-- rooms:") {
        let [n, rooms, imports, ..] = row.as_slice() else {
            panic!("room row {row:?}: layer | rooms | may import | job")
        };
        let n: u32 = n.parse().unwrap_or_else(|_| panic!("layer {n:?} is not a number"));
        for room in names(rooms) {
            assert!(layer.insert(room.clone(), n).is_none(), "room {room} is in the table twice");
            may_import.insert(room, names(imports));
        }
    }
    let (mut upward, mut cycle_exempt) = (BTreeSet::new(), BTreeSet::new());
    for row in table(doc, "<!-- exceptions:") {
        let [kind, from, to, ..] = row.as_slice() else { panic!("exception row {row:?}: kind | from | to | why") };
        match kind.as_str() {
            "upward import" => {
                upward.insert((from.clone(), to.clone()));
            }
            "cycle" => {
                cycle_exempt.insert(from.clone());
            }
            other => panic!("unknown exception kind {other:?}"),
        }
    }
    Rules { layer, may_import, upward, cycle_exempt }
}

/// Comments, string and char literals blanked (a path in a doc comment is no import).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && !ident(prev) || b[i] == b'r' && prev == b'b' && (i < 2 || !ident(b[i - 2])) {
            // A raw string r"…", r#"…"#, br#"…"#, or an identifier starting with r.
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 3;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The paths a use tree or an expression path names after `crate::`: `a::{b, c::d}`
/// gives `a::b` and `a::c::d`.
fn use_tree(s: &[u8], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut segs = prefix.to_vec();
    loop {
        i = skip_ws(i);
        if s.get(i) == Some(&b'{') {
            i += 1;
            loop {
                i = use_tree(s, i, &segs, out);
                i = skip_ws(i);
                match s.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => return i + 1,
                    _ => return i,
                }
                if skip_ws(i) < s.len() && s[skip_ws(i)] == b'}' {
                    return skip_ws(i) + 1;
                }
            }
        }
        let start = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_' || s[i] == b'*') {
            i += 1;
        }
        if start == i {
            out.push(segs);
            return i;
        }
        segs.push(String::from_utf8_lossy(&s[start..i]).into_owned());
        let j = skip_ws(i);
        if s[j..].starts_with(b"::") && !s[skip_ws(j + 2)..].starts_with(b"<") {
            i = j + 2;
        } else {
            out.push(segs);
            return i;
        }
    }
}

/// Every module of `src/` (`trust::cert`, `http`; `main` is the binary) and its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap_or(&file).with_extension("");
        let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        if segs == ["lib"] {
            continue;
        }
        if segs.last().is_some_and(|s| s == "mod") {
            segs.pop();
        }
        modules.insert(segs.join("::"), file);
    }
    modules
}

/// Module → the modules it names (outside itself), and room → rooms.
struct Graph {
    modules: BTreeMap<String, BTreeSet<String>>,
    rooms: BTreeMap<String, BTreeSet<String>>,
}

fn room(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

fn graph(src: &Path) -> Graph {
    let files = modules(src);
    let mut g = Graph { modules: BTreeMap::new(), rooms: BTreeMap::new() };
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let code = code_only(&text);
        let me: Vec<String> = module.split("::").map(String::from).collect();
        let krate = if module == "main" { "symbolon" } else { "crate" };
        g.modules.entry(module.clone()).or_default();
        g.rooms.entry(room(module).to_owned()).or_default();
        let bytes = code.as_bytes();
        for keyword in [krate, "super", "self"] {
            let pattern = format!("{keyword}::");
            for (at, _) in code.match_indices(&pattern) {
                if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                    continue;
                }
                let mut paths = Vec::new();
                use_tree(bytes, at + pattern.len(), &[], &mut paths);
                for segs in paths {
                    let mut full: Vec<String> = match keyword {
                        "super" => me[..me.len() - 1].to_vec(),
                        "self" => me.clone(),
                        _ => Vec::new(),
                    };
                    for s in segs {
                        match s.as_str() {
                            "super" => {
                                full.pop();
                            }
                            "self" => {}
                            _ => full.push(s),
                        }
                    }
                    let Some(target) =
                        (1..=full.len()).rev().map(|k| full[..k].join("::")).find(|m| files.contains_key(m))
                    else {
                        continue;
                    };
                    if room(&target) != room(module) {
                        g.rooms.entry(room(module).to_owned()).or_default().insert(room(&target).to_owned());
                    }
                    // A module and its ancestors share one room's job (mod.rs re-exports).
                    let related = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}::"));
                    if !related(&target, module) && !related(module, &target) {
                        g.modules.entry(module.clone()).or_default().insert(target);
                    }
                }
            }
        }
    }
    g
}

/// The strongly connected components with more than one member (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn rooms_import_only_down_their_table_of_docs_architecture_md() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    let rules = rules(&doc);
    let g = graph(&repo_root().join("src"));

    let mut problems = Vec::new();
    let mut upward = Vec::new();
    for (from, tos) in &g.rooms {
        let Some(&from_layer) = rules.layer.get(from) else {
            problems.push(format!("room {from} is not in the table of docs/architecture.md"));
            continue;
        };
        for to in tos {
            if !rules.may_import[from].contains(to) {
                problems.push(format!("{from} imports {to}, which its row of docs/architecture.md does not allow"));
            }
            if rules.layer.get(to).is_some_and(|&l| l >= from_layer) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    for (from, allowed) in &rules.may_import {
        if !g.rooms.contains_key(from) {
            problems.push(format!("the table names room {from}, which src/ does not have"));
        }
        for to in allowed {
            match rules.layer.get(to) {
                None => problems.push(format!("{from} may import {to}, which is not in the table")),
                Some(&l) if l >= rules.layer[from] && !rules.upward.contains(&(from.clone(), to.clone())) => {
                    problems.push(format!("{from} may import {to} upward, but it is not a named upward import"))
                }
                _ => {}
            }
        }
    }
    for (from, to) in &rules.upward {
        if !g.rooms.get(from).is_some_and(|t| t.contains(to)) {
            problems.push(format!("the named upward import {from} -> {to} is gone: drop it from the doc"));
        }
    }
    assert!(rules.upward.len() <= 2, "at most two upward imports (docs/architecture.md)");

    let mut exempt = g.modules.clone();
    for m in &rules.cycle_exempt {
        assert!(exempt.contains_key(m), "the cycle exception {m} is not a module");
        exempt.insert(m.clone(), BTreeSet::new());
    }
    for cycle in cycles(&g.rooms).into_iter().chain(cycles(&exempt)) {
        problems.push(format!("import cycle: {}", cycle.join(", ")));
    }

    let module_edges: usize = g.modules.values().map(BTreeSet::len).sum();
    let room_edges: usize = g.rooms.values().map(BTreeSet::len).sum();
    println!(
        "rooms: {}, room imports: {room_edges}, upward: {} {upward:?}, room cycles: {}; modules: {}, module \
         imports (outside their own folder's ancestors): {module_edges}, module cycles: {} (with the named \
         exceptions: {})",
        g.rooms.len(),
        upward.len(),
        cycles(&g.rooms).len(),
        g.modules.len(),
        cycles(&g.modules).len(),
        cycles(&exempt).len(),
    );
    assert!(problems.is_empty(), "docs/architecture.md is not what src/ does:\n{}", problems.join("\n"));
}

/// docs/architecture.md §Stores: the SQL lives once in `store/sql.rs`; the SQLite and
/// PostgreSQL files keep only what differs, so they share no run of six lines of code
/// (blank lines and lines of closing brackets alone left out, the databases' names
/// made equal).
#[test]
fn sqlite_and_postgres_share_no_run_of_six_lines() {
    let store = repo_root().join("src/store");
    let lines = |name: &str| -> Vec<String> {
        let text = std::fs::read_to_string(store.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let normalized = text.replace("postgres", "DB").replace("Postgres", "DB").replace("sqlite", "DB");
        normalized
            .replace("Sqlite", "DB")
            .lines()
            .map(str::trim)
            .filter(|l| l.chars().any(|c| !matches!(c, '}' | ')' | ']' | ';' | ',')))
            .map(String::from)
            .collect()
    };
    let (a, b) = (lines("sqlite.rs"), lines("postgres.rs"));
    let runs_b: BTreeSet<&[String]> = b.windows(6).collect();
    let shared: Vec<&[String]> = a.windows(6).filter(|w| runs_b.contains(w)).collect();
    assert!(shared.is_empty(), "store/sqlite.rs and store/postgres.rs share {:?}", shared.first());
}
