//! The deployment examples in `examples/deploy/` without SLURM, Kubernetes or ssh: the shell
//! scripts pass `bash -n`, the Kubernetes manifest has the shape of one (no YAML parser is
//! among the crates available offline, so a small hand check: documents separated by `---`,
//! each with `apiVersion`, `kind` and `metadata`, spaces only, balanced flow lists), and every
//! `zask-scheduler`, `zask-worker` and `zask` command line in them uses only flags that the
//! binary's `--help` lists.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{run, SCHEDULER, WORKER, ZASK};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/deploy")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(example(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The file's lines with shell continuations (`\` at the end) joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// A command found in an example: the binary, its subcommand (for `zask`) and its flags.
#[derive(Debug)]
struct CommandLine {
    binary: &'static str,
    subcommand: Option<String>,
    flags: Vec<String>,
    line: String,
}

/// Every invocation of a Zask binary: the words after its name up to the end of the line or a
/// shell operator (`&`, `|`, `;`, a redirection). Comments count too: a command shown in a
/// comment must work as well. Quotes, brackets and commas (a YAML flow
/// list) separate words.
fn zask_commands(text: &str) -> Vec<CommandLine> {
    let binaries = [
        ("zask-scheduler", SCHEDULER),
        ("zask-worker", WORKER),
        ("zask", ZASK),
    ];
    let mut found = Vec::new();
    for line in logical_lines(text) {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || "\"'[],".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        for (i, word) in words.iter().enumerate() {
            let Some(&(_, binary)) = binaries.iter().find(|(name, _)| name == word) else {
                continue;
            };
            let args: Vec<&str> = words[i + 1..]
                .iter()
                .copied()
                .take_while(|w| {
                    !matches!(*w, "&" | "&&" | "|" | "||" | ";")
                        && !w.starts_with('>')
                        && !w.starts_with('<')
                        && !w.starts_with("2>")
                })
                .collect();
            let subcommand = (binary == ZASK)
                .then(|| {
                    args.iter()
                        .find(|w| !w.starts_with('-'))
                        .map(|w| w.to_string())
                })
                .flatten();
            let flags = args
                .iter()
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(|w| w.split('=').next().unwrap_or(w).to_owned())
                .collect();
            found.push(CommandLine {
                binary,
                subcommand,
                flags,
                line: line.trim().to_owned(),
            });
        }
    }
    found
}

/// The `--flags` a binary's help lists (`zask SUBCOMMAND --help` for `zask`).
fn accepted_flags(binary: &str, subcommand: Option<&str>) -> BTreeSet<String> {
    let mut args: Vec<&str> = subcommand.into_iter().collect();
    args.push("--help");
    let out = run(binary, &args);
    assert_eq!(out.code(), Some(0), "{binary} {args:?}: {out:?}");
    out.stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_owned()
        })
        .collect()
}

/// Checks every Zask command line of `name` against its binary's help; returns the binaries
/// seen.
fn check_flags(name: &str) -> BTreeSet<&'static str> {
    check_text(name, &read(name))
}

/// Checks every Zask command line of `text` (from `name`) against its binary's help.
fn check_text(name: &str, text: &str) -> BTreeSet<&'static str> {
    let commands = zask_commands(text);
    let mut seen = BTreeSet::new();
    for command in &commands {
        let accepted = accepted_flags(command.binary, command.subcommand.as_deref());
        for flag in &command.flags {
            assert!(
                accepted.contains(flag),
                "{name}: {flag} is not a flag of {} {}: {}",
                Path::new(command.binary)
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                command.subcommand.as_deref().unwrap_or(""),
                command.line
            );
        }
        seen.insert(
            match Path::new(command.binary)
                .file_name()
                .and_then(|n| n.to_str())
            {
                Some("zask-scheduler") => "zask-scheduler",
                Some("zask-worker") => "zask-worker",
                _ => "zask",
            },
        );
    }
    seen
}

fn bash_n(name: &str) {
    let path = example(name);
    let out = run("bash", &["-n", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(out.code(), Some(0), "bash -n {name}: {out:?}");
}

#[test]
fn the_slurm_script_is_valid_bash_and_runs_the_binaries_with_their_flags() {
    bash_n("slurm.sh");
    let seen = check_flags("slurm.sh");
    assert!(
        seen.contains("zask-scheduler") && seen.contains("zask-worker"),
        "{seen:?}"
    );
}

#[test]
fn the_ssh_script_is_valid_bash_and_runs_the_binaries_with_their_flags() {
    bash_n("ssh.sh");
    let seen = check_flags("ssh.sh");
    assert!(
        seen.contains("zask-scheduler") && seen.contains("zask-worker"),
        "{seen:?}"
    );
}

#[test]
fn the_kubernetes_manifest_is_well_formed_and_runs_the_binaries_with_their_flags() {
    let text = read("kubernetes.yaml");
    let mut kinds = Vec::new();
    for (n, document) in text.split("\n---\n").enumerate() {
        let content: Vec<&str> = document
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && *l != "---")
            .collect();
        if content.is_empty() {
            continue;
        }
        for line in &content {
            assert!(!line.contains('\t'), "document {n}: a tab: {line:?}");
            let indent = line.len() - line.trim_start().len();
            assert_eq!(indent % 2, 0, "document {n}: odd indentation: {line:?}");
            assert_eq!(
                line.matches('[').count(),
                line.matches(']').count(),
                "document {n}: unbalanced flow list: {line:?}"
            );
            assert_eq!(
                line.matches('"').count() % 2,
                0,
                "document {n}: unbalanced quotes: {line:?}"
            );
        }
        let top = |key: &str| {
            content
                .iter()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        assert!(
            top("apiVersion:").is_some(),
            "document {n} has no apiVersion"
        );
        assert!(top("metadata:").is_some(), "document {n} has no metadata");
        kinds.push(top("kind:").unwrap_or_else(|| panic!("document {n} has no kind")));
    }
    assert_eq!(kinds, ["Service", "Deployment", "Deployment"]);
    let seen = check_flags("kubernetes.yaml");
    assert!(
        seen.contains("zask-scheduler") && seen.contains("zask-worker"),
        "{seen:?}"
    );
}

/// The README's "Deployment beyond one machine": every command in its code blocks (`zask
/// local`, `scale`, `adapt`, `ssh`, the binaries by hand) uses only flags its binary lists.
#[test]
fn the_readme_deployment_commands_use_real_flags() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("## Deployment beyond one machine")
        .expect("the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    // The code blocks only: prose names commands without running them.
    let blocks: String = section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.trim_start_matches(|c: char| c != '\n'))
        .collect::<Vec<_>>()
        .join("\n");
    let commands = zask_commands(&blocks);
    let subcommands: BTreeSet<String> = commands
        .iter()
        .filter_map(|c| c.subcommand.clone())
        .collect();
    for wanted in ["local", "scale", "adapt", "ssh", "status"] {
        assert!(
            subcommands.contains(wanted),
            "no zask {wanted}: {subcommands:?}"
        );
    }
    let seen = check_text("README.md", &blocks);
    assert!(
        seen.contains("zask-scheduler") && seen.contains("zask-worker"),
        "{seen:?}"
    );
}

/// The checker itself finds commands after wrappers, across continuations and in YAML lists,
/// and stops at shell operators.
#[test]
fn the_command_finder_reads_shell_and_yaml_lines() {
    let text = "srun --nodes=1 zask-worker tcp://h:1 \\\n  --nthreads 2 >log 2>&1 &\n\
                command: [\"zask-scheduler\", \"--host\", \"0.0.0.0\"]\n\
                echo zask status --scheduler x --access-file=y | cat --other\n";
    let found = zask_commands(text);
    let flags: Vec<Vec<String>> = found.iter().map(|c| c.flags.clone()).collect();
    assert_eq!(
        flags,
        [
            vec!["--nthreads".to_owned()],
            vec!["--host".to_owned()],
            vec!["--scheduler".to_owned(), "--access-file".to_owned()],
        ]
    );
    assert_eq!(found[2].subcommand.as_deref(), Some("status"));
}
