//! Architecture guards: the modules of src/ import each other without cycles (layers only point
//! down); the scheduler and worker state machines stay pure (no sockets, threads,
//! channels, disk or clock), and every module says what it is for.

use std::fs;
use std::path::{Path, PathBuf};

const CORES: &[&str] = &[
    "src/scheduler/core",
    "src/worker/core",
    // The sans-IO parts shared by an IO layer and the simulation.
    "src/client/state.rs",
    "src/scheduler/journal/tables.rs",
    // The adaptive scaling policy: figures and time in, a decision out.
    "src/adaptive.rs",
];

/// What a pure core may not reach, by path prefix, with what it would mean.
const FORBIDDEN: &[(&str, &str)] = &[
    ("zmq", "a socket"),
    ("std::net", "a socket"),
    ("std::os", "the operating system"),
    ("libc", "the operating system"),
    ("signal_hook", "the operating system"),
    ("std::thread", "a thread"),
    ("crossbeam", "a channel"),
    ("crossbeam_channel", "a channel"),
    ("std::sync::mpsc", "a channel"),
    ("std::sync::Mutex", "a lock"),
    ("std::sync::RwLock", "a lock"),
    ("sled", "the disk"),
    ("zask_storage", "the disk"),
    (
        "zask_compat",
        "the legacy (2015) protocol, which the IO layer answers",
    ),
    ("std::fs", "the disk"),
    ("std::io::stdin", "the terminal"),
    ("std::env", "the environment"),
    ("std::process", "a process"),
    ("std::time::Instant", "the clock"),
    ("std::time::SystemTime", "the clock"),
    ("std::time::UNIX_EPOCH", "the clock"),
    ("std::collections::hash_map::RandomState", "randomness"),
    ("rand", "randomness"),
    ("crate::net", "the network layer"),
    // The client's and the journal's pure parts (state.rs, tables.rs) are pure roots; the
    // rest of those modules reaches the network or the disk (caught transitively, and here).
    ("crate::client::io", "the network client"),
    ("crate::client::Client", "the network client"),
    ("crate::fatal", "the process"),
    ("crate::local_cluster", "threads and sockets"),
    ("crate::scheduler::server", "the scheduler's IO layer"),
    ("crate::scheduler::journal::sled", "the disk"),
    ("crate::scheduler::journal::Journal", "the disk"),
    ("crate::worker::server", "the worker's IO layer"),
    ("crate::worker::executor", "threads"),
    ("crate::worker::nanny", "a process"),
];

/// Methods that read a clock whatever their receiver's path looks like.
const FORBIDDEN_METHODS: &[(&str, &str)] = &[("elapsed", "the clock")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The module path (`crate::a::b`) of a source file under src/.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root().join("src")).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The file of module `crate::<parts>`, if it is one.
fn file_of(parts: &[String]) -> Option<PathBuf> {
    let mut base = root().join("src");
    for p in parts {
        base.push(p);
    }
    let candidates = [base.with_extension("rs"), base.join("mod.rs")];
    candidates.into_iter().find(|c| c.is_file())
}

/// Every path a file names: `use` trees (expanded) and paths in code, as segment lists.
#[derive(Default)]
struct Paths {
    found: Vec<Vec<String>>,
    methods: Vec<String>,
}

/// Whether an item is compiled only for tests (`#[cfg(test)]`): what tests use is not what ships.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

impl<'ast> syn::visit::Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !test_only(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        fn expand(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match tree {
                syn::UseTree::Path(p) => {
                    prefix.push(p.ident.to_string());
                    expand(&p.tree, prefix, out);
                    prefix.pop();
                }
                syn::UseTree::Name(n) => {
                    let mut full = prefix.clone();
                    full.push(n.ident.to_string());
                    out.push(full);
                }
                syn::UseTree::Rename(r) => {
                    let mut full = prefix.clone();
                    full.push(r.ident.to_string());
                    out.push(full);
                }
                syn::UseTree::Glob(_) => out.push(prefix.clone()),
                syn::UseTree::Group(g) => {
                    for t in &g.items {
                        expand(t, prefix, out);
                    }
                }
            }
        }
        expand(&item.tree, &mut Vec::new(), &mut self.found);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.found
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.methods.push(call.method.to_string());
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Macro bodies are tokens, not syntax: paths inside them (`std::thread::spawn` in a
        // `format!` argument, say) are read as paths where they parse as expressions.
        if let Ok(expr) = mac.parse_body_with(
            syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated,
        ) {
            for e in &expr {
                syn::visit::visit_expr(self, e);
            }
        }
        syn::visit::visit_macro(self, mac);
    }
}

/// `path` as written in `module`, made absolute (`crate::…`, or an external crate's).
fn absolute(module: &[String], path: &[String]) -> Vec<String> {
    match path.first().map(String::as_str) {
        Some("self") => module
            .iter()
            .cloned()
            .chain(path[1..].iter().cloned())
            .collect(),
        Some("super") => {
            let mut base = module.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            std::iter::once("crate".to_owned())
                .chain(base)
                .chain(rest.iter().cloned())
                .collect()
        }
        Some("crate") => path.to_vec(),
        _ => path.to_vec(),
    }
}

fn starts_with(path: &[String], prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
}

/// Test-only code in `src/`: a `tests.rs` module, or a module inside a `tests/` folder (the
/// children of a `tests.rs`, such as `scheduler/core/tests/stories.rs`).
fn is_test_code(file: &Path) -> bool {
    file.ends_with("tests.rs") || file.parent().is_some_and(|dir| dir.ends_with("tests"))
}

#[test]
fn state_machines_reach_no_socket_thread_channel_disk_clock_or_process() {
    // Every file of the cores, and every crate module they reach through their imports and
    // paths, transitively.
    let mut work: Vec<PathBuf> = Vec::new();
    for core in CORES {
        let mut files = Vec::new();
        let path = root().join(core);
        if path.is_file() {
            files.push(path);
        } else {
            rust_files(&path, &mut files);
        }
        assert!(!files.is_empty(), "{core} has no sources");
        work.extend(files.into_iter().filter(|f| !is_test_code(f)));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut violations = Vec::new();
    while let Some(file) = work.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
        let mut paths = Paths::default();
        syn::visit::Visit::visit_file(&mut paths, &ast);
        let module = module_of(&file);
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for path in &paths.found {
            let path = absolute(&module, path);
            for (prefix, what) in FORBIDDEN {
                if starts_with(&path, prefix) {
                    violations.push(format!("{name}: {} ({what})", path.join("::")));
                }
            }
            if path.first().is_some_and(|s| s == "crate") {
                // The longest prefix that is a module file is a module this file reaches.
                let parts = &path[1..];
                if let Some(f) = (1..=parts.len()).rev().find_map(|n| file_of(&parts[..n])) {
                    work.push(f);
                }
            }
        }
        for m in &paths.methods {
            for (method, what) in FORBIDDEN_METHODS {
                if m == method {
                    violations.push(format!("{name}: .{m}() ({what})"));
                }
            }
        }
    }
    // The walk follows imports for real: the cores' known dependencies are among the files.
    for dependency in [
        "src/protocol/mod.rs",
        "src/protocol/codec.rs",
        "src/graph/mod.rs",
    ] {
        assert!(
            seen.contains(&root().join(dependency)),
            "the walk did not reach {dependency}: {seen:?}"
        );
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "the pure cores (and what they reach) must not touch IO, threads, clocks or processes:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_purity_check_catches_what_it_should() {
    // The checker itself, on a made-up module: an honest failure must be possible.
    let text = r#"
        use std::{thread, time::Instant as I};
        use super::super::net::Waker;
        fn f() { let t = I::now(); let _ = t.elapsed(); std::process::exit(1); }
    "#;
    let ast = syn::parse_file(text).unwrap();
    let mut paths = Paths::default();
    syn::visit::Visit::visit_file(&mut paths, &ast);
    let module: Vec<String> = vec!["scheduler".into(), "core".into()];
    let hits: Vec<String> = paths
        .found
        .iter()
        .map(|p| absolute(&module, p))
        .filter(|p| FORBIDDEN.iter().any(|(f, _)| starts_with(p, f)))
        .map(|p| p.join("::"))
        .collect();
    assert!(hits.contains(&"std::thread".to_owned()), "{hits:?}");
    assert!(hits.contains(&"std::time::Instant".to_owned()), "{hits:?}");
    assert!(hits.contains(&"crate::net::Waker".to_owned()), "{hits:?}");
    assert!(
        hits.iter().any(|h| h.starts_with("std::process")),
        "{hits:?}"
    );
    assert!(paths.methods.contains(&"elapsed".to_owned()));
}

#[test]
fn every_module_starts_by_saying_what_it_is_for() {
    let mut files = Vec::new();
    for dir in ["src", "storage/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a //! line: {missing:?}"
    );
}

/// Which modules of `src/` each module uses (`use crate::…` and paths in code, made
/// absolute), test-only code aside: what ships. Modules are taken `depth` levels deep (1: the
/// top-level modules, `worker`; 2: also their submodules, `worker::core`), and a path counts
/// for the deepest such module it names. The binaries are crates of their own (they use
/// `zask::…`), and lib.rs only declares and re-exports, so neither counts.
fn module_dependencies(
    depth: usize,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut deps: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for file in files {
        let module = module_of(&file);
        if module.is_empty() || module[0] == "bin" || is_test_code(&file) {
            continue;
        }
        let own = module[..module.len().min(depth)].join("::");
        let text = fs::read_to_string(&file).unwrap();
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
        let mut paths = Paths::default();
        syn::visit::Visit::visit_file(&mut paths, &ast);
        let mut used = std::collections::BTreeSet::new();
        for path in &paths.found {
            let path = absolute(&module, path);
            if path.len() < 2 || path[0] != "crate" {
                continue;
            }
            let parts = &path[1..];
            if let Some(n) = (1..=parts.len().min(depth))
                .rev()
                .find(|n| file_of(&parts[..*n]).is_some())
            {
                let target = parts[..n].join("::");
                // Within one module (or a module and its own parent) is not between modules.
                if !own.starts_with(&target) && !target.starts_with(&own) {
                    used.insert(target);
                }
            }
        }
        deps.entry(own).or_default().extend(used);
    }
    deps
}

/// A cycle in `deps` (as the modules along it, the first repeated at the end), if any.
fn find_cycle(
    deps: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        deps: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        done: &mut std::collections::BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_owned());
        for d in deps.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(d, deps, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = Default::default();
    deps.keys()
        .find_map(|m| visit(m, deps, &mut done, &mut Vec::new()))
}

#[test]
fn layers_only_point_down_no_cycle_between_modules() {
    let deps = module_dependencies(1);
    // The walk reads real imports: known edges are found.
    for (from, to) in [
        ("client", "protocol"),
        ("client", "net"),
        ("local_cluster", "scheduler"),
        ("protocol", "collection"),
        ("bag", "collection"),
    ] {
        assert!(
            deps.get(from).is_some_and(|d| d.contains(to)),
            "{from} → {to} not found: {deps:?}"
        );
    }
    // The data model is below the network: a bag never reaches the client.
    assert!(!deps["bag"].contains("client"), "{deps:?}");
    if let Some(cycle) = find_cycle(&deps) {
        panic!(
            "modules of src/ import each other in a cycle: {}\nall imports: {deps:?}",
            cycle.join(" → ")
        );
    }
    // One level down too: the parts of the scheduler and of the worker (core, server,
    // journal, executor, registry, nanny) only point down as well.
    let deps = module_dependencies(2);
    assert!(
        deps.get("worker::server")
            .is_some_and(|d| d.contains("worker::core")),
        "{deps:?}"
    );
    if let Some(cycle) = find_cycle(&deps) {
        panic!(
            "modules of src/ import each other in a cycle: {}\nall imports: {deps:?}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_cycle_check_catches_a_cycle() {
    let deps = |edges: &[(&str, &str)]| {
        let mut d: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for (a, b) in edges {
            d.entry(a.to_string()).or_default().insert(b.to_string());
            d.entry(b.to_string()).or_default();
        }
        d
    };
    let layered = deps(&[("a", "b"), ("a", "c"), ("b", "c"), ("d", "a")]);
    assert_eq!(find_cycle(&layered), None);
    let cyclic = deps(&[
        ("protocol", "collection"),
        ("collection", "bag"),
        ("bag", "client"),
        ("client", "net"),
        ("net", "protocol"),
        ("value", "graph"),
    ]);
    let cycle = find_cycle(&cyclic).expect("the cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 6, "{cycle:?}");
    // And on parsed code: a made-up `bag` module importing the client is an edge.
    let ast = syn::parse_file("use crate::client::{Client, ClientError};").unwrap();
    let mut paths = Paths::default();
    syn::visit::Visit::visit_file(&mut paths, &ast);
    let module = vec!["bag".to_owned()];
    assert!(paths
        .found
        .iter()
        .map(|p| absolute(&module, p))
        .any(|p| p.len() >= 2 && p[0] == "crate" && p[1] == "client"));
}

/// zask-compat is the legacy protocol's codec, beside zask's own protocol module: it must not
/// depend on the zask crate (zask depends on it).
#[test]
fn the_compat_crate_does_not_depend_on_zask() {
    let manifest = std::fs::read_to_string(root().join("compat/Cargo.toml")).unwrap();
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section.contains("dependencies") {
            let name = line.split(['=', ' ', '.']).next().unwrap_or("");
            assert_ne!(name, "zask", "compat/Cargo.toml {section}: {line}");
        }
    }
}
