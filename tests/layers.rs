//! The architecture as a test: imports between the crate's top-level modules only go down the
//! layer list that `src/lib.rs` documents, so no two modules can ever import each other.
//!
//! It reads every `src/**/*.rs` as text and collects `crate::<module>` paths (imports and inline
//! paths alike); a module may name itself, its own layer's neighbours only where listed, and any
//! module of a lower layer.

use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules from the top layer down. Modules in one row may not import each other.
const LAYERS: &[&[&str]] = &[
    &["main", "lib"],
    &["cli"],
    &["runtime"],
    &["admin", "api", "payments", "sandbox_server"],
    &["worker"],
    &["shared"],
    &["access", "backend"],
    &["config"],
    &["store"],
    &["redis", "http", "openai"],
    &["metrics", "log", "access_log"],
    &["errors"],
    &["money", "limits", "clock", "ratelimit", "ids", "json", "panic_guard", "tls", "histogram"],
    // Below every other leaf: decimal digits, which `money` writes its amounts with, and the
    // word-at-a-time search loop, which `json` and the parsers share.
    &["digits", "words"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::name` paths in `text`, outside comments.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            // `$crate::log_warn!` and friends are macros exported at the root, not modules.
            let is_macro = after[name.len()..].starts_with('!');
            if !name.is_empty() && !is_macro {
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

// Goal: every import between top-level modules goes down the documented layers (so the module
// graph has no cycle), and every top-level module has a place in them.
#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        let Some(own_layer) = layer_of(&top) else {
            violations.push(format!("{}: module `{top}` has no layer in this test", relative.display()));
            continue;
        };
        for used in crate_paths(&std::fs::read_to_string(file).unwrap()) {
            if used == top {
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer > own_layer => {}
                Some(_) => {
                    violations.push(format!("{}: `{top}` imports `{used}` (same or higher layer)", relative.display()))
                }
                None => violations.push(format!("{}: imports `{used}`, which has no layer", relative.display())),
            }
        }
    }
    assert!(violations.is_empty(), "imports against the layers:\n{}", violations.join("\n"));
}

// Goal: the scanner itself sees imports, inline paths and skips comments and macros.
#[test]
fn the_scanner_reads_paths_not_comments() {
    let text = "use crate::store::{A, B};\nlet x = crate::money::Nanos(1); // crate::api\ncrate::log_warn!(\"x\");";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["money", "store"]);
}
