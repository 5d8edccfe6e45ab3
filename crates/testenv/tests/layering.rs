//! The layering check: README.md's layout table orders the workspace's crates, and a
//! crate may depend only on crates listed above it. Read from the real files:
//! README.md's `## Layout` table and every `crates/*/Cargo.toml`.
//!
//! - `[dependencies]` and `[build-dependencies]` (also under `[target.'cfg(…)'.…]`)
//!   must point up the table: they are what a crate's users build too.
//! - `[dev-dependencies]` may point anywhere: a test may drive a crate through a higher
//!   one (or use `wharf-testenv`, the test support listed last), and nothing that
//!   depends on the crate builds them.
//! - Every workspace crate has a row, and every row names a workspace crate.
//!
//! The failure names the crate, the dependency and both rows.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// One workspace crate as the check sees it.
#[derive(Debug)]
struct Manifest {
    /// `crates/core`
    dir: String,
    /// `wharf-core`
    package: String,
    manifest: toml::Table,
}

#[test]
fn no_crate_depends_on_one_listed_below_it() {
    let root = wharf_testenv::repo_root();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let table = layout_table(&readme).unwrap_or_else(|e| panic!("README.md: {e}"));
    let workspace = read(&root.join("Cargo.toml"));
    let mut manifests = Vec::new();
    let mut dirs: Vec<_> = fs::read_dir(root.join("crates")).expect("crates/").map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs {
        let path = dir.join("Cargo.toml");
        if !path.exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy();
        manifests.push(manifest(&format!("crates/{name}"), read(&path)));
    }
    assert!(manifests.len() > 10, "only {} crates found under crates/", manifests.len());
    let problems = violations(&table, &manifests, &workspace);
    assert!(
        problems.is_empty(),
        "the workspace breaks the layering of README.md's layout table (a crate depends only on crates listed above \
         it; dev-dependencies excepted):\n- {}",
        problems.join("\n- ")
    );
}

fn read(path: &Path) -> toml::Table {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest(dir: &str, manifest: toml::Table) -> Manifest {
    let package = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{dir}/Cargo.toml has no package.name"))
        .to_owned();
    Manifest { dir: dir.to_owned(), package, manifest }
}

/// The crate directories of the `## Layout` section's table, top to bottom: the first
/// cell of each row starts with `` `crates/<name>` ``.
fn layout_table(readme: &str) -> Result<Vec<String>, String> {
    let mut lines = readme.lines().skip_while(|l| l.trim_end() != "## Layout");
    lines.next().ok_or("no `## Layout` section")?;
    let section = lines.take_while(|l| !l.starts_with("## "));
    let mut rows = Vec::new();
    for line in section.skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')) {
        let first = line.trim_start_matches('|').split('|').next().unwrap_or("").trim();
        if first == "crate" || first.starts_with("---") {
            continue;
        }
        let dir = first
            .strip_prefix('`')
            .and_then(|rest| rest.split_once('`'))
            .map(|(dir, _)| dir)
            .filter(|dir| dir.starts_with("crates/"))
            .ok_or_else(|| format!("a layout row does not start with `crates/<name>`: {line}"))?;
        rows.push(dir.to_owned());
    }
    if rows.is_empty() {
        return Err("the `## Layout` section has no table of crates".into());
    }
    Ok(rows)
}

/// Every breach of the layering, in words.
fn violations(table: &[String], crates: &[Manifest], workspace: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    let row_of = |dir: &str| table.iter().position(|row| row == dir);
    let by_package: BTreeMap<&str, &Manifest> = crates.iter().map(|c| (c.package.as_str(), c)).collect();
    for (i, row) in table.iter().enumerate() {
        if !crates.iter().any(|c| &c.dir == row) {
            problems.push(format!("row {} of the layout table names `{row}`, which is not a workspace crate", i + 1));
        }
        if table[..i].contains(row) {
            problems.push(format!("`{row}` has two rows in the layout table"));
        }
    }
    for krate in crates {
        let Some(row) = row_of(&krate.dir) else {
            problems.push(format!("`{}` ({}) is missing from the layout table", krate.dir, krate.package));
            continue;
        };
        for (section, key, dep) in built_dependencies(&krate.manifest) {
            let name = dependency_package(key, dep, workspace);
            let Some(target) = by_package.get(name.as_str()) else { continue };
            let Some(target_row) = row_of(&target.dir) else { continue };
            if target_row >= row {
                problems.push(format!(
                    "`{}` ({}, row {}) depends on `{}` ({}, row {}) in [{section}]: a crate may depend only on crates \
                     listed above it (move the dependency, or the rows if the table is wrong)",
                    krate.dir,
                    krate.package,
                    row + 1,
                    target.dir,
                    target.package,
                    target_row + 1,
                ));
            }
        }
    }
    problems
}

/// `(section, key, spec)` of every dependency a crate's users build: normal and build
/// dependencies, also per target. Dev-dependencies are left out (see the module doc).
fn built_dependencies(manifest: &toml::Table) -> Vec<(String, &str, &toml::Value)> {
    let mut scopes: Vec<(String, &toml::Table)> = vec![(String::new(), manifest)];
    for (cfg, table) in manifest.get("target").and_then(toml::Value::as_table).into_iter().flatten() {
        if let Some(table) = table.as_table() {
            scopes.push((format!("target.'{cfg}'."), table));
        }
    }
    let mut out = Vec::new();
    for (prefix, table) in scopes {
        for section in ["dependencies", "build-dependencies"] {
            for (key, spec) in table.get(section).and_then(toml::Value::as_table).into_iter().flatten() {
                out.push((format!("{prefix}{section}"), key.as_str(), spec));
            }
        }
    }
    out
}

/// The package a dependency entry names: its `package` (a renamed dependency), the
/// workspace entry's `package` for `workspace = true`, else its key.
fn dependency_package(key: &str, spec: &toml::Value, workspace: &toml::Table) -> String {
    let package_of = |spec: &toml::Value| spec.get("package").and_then(toml::Value::as_str).map(str::to_owned);
    if let Some(package) = package_of(spec) {
        return package;
    }
    if spec.get("workspace").and_then(toml::Value::as_bool) == Some(true)
        && let Some(package) = workspace
            .get("workspace")
            .and_then(|w| w.get("dependencies"))
            .and_then(|deps| deps.get(key))
            .and_then(package_of)
    {
        return package;
    }
    key.to_owned()
}

// The check itself, on tables and manifests in memory.

const README: &str = "# X\n\n## Layout\n\nOne workspace.\n\n| crate | what it owns |\n| --- | --- |\n| `crates/core` \
                      (`wharf-core`) | names |\n| `crates/engine` | runs |\n| `crates/server` | axum |\n\n## Status\n\
                      \n| `crates/nope` | not a layout row |\n";

fn crates_of(manifests: &[(&str, &str)]) -> Vec<Manifest> {
    manifests.iter().map(|(dir, text)| manifest(dir, text.parse().unwrap())).collect()
}

fn workspace() -> toml::Table {
    "[workspace.dependencies]\nwharf-core = { path = \"crates/core\" }\nwharf-engine = { path = \"crates/engine\" }\n\
     server = { path = \"crates/server\", package = \"wharf-server\" }\n"
        .parse()
        .unwrap()
}

const CORE: (&str, &str) = ("crates/core", "[package]\nname = \"wharf-core\"\n[dependencies]\nserde = \"1\"\n");
const SERVER: (&str, &str) = (
    "crates/server",
    "[package]\nname = \"wharf-server\"\n[dependencies]\nwharf-core.workspace = true\nwharf-engine.workspace = true\n",
);

#[test]
fn the_table_is_read_in_order_from_the_layout_section_only() {
    assert_eq!(layout_table(README).unwrap(), ["crates/core", "crates/engine", "crates/server"]);
    assert!(layout_table("# X\n## Status\n").unwrap_err().contains("no `## Layout`"));
    let bad = layout_table("## Layout\n\n| crate | x |\n| --- | --- |\n| core | y |\n").unwrap_err();
    assert!(bad.contains("| core | y |"), "{bad}");
}

#[test]
fn a_layered_workspace_passes() {
    let table = layout_table(README).unwrap();
    let engine =
        ("crates/engine", "[package]\nname = \"wharf-engine\"\n[dependencies]\nwharf-core = { path = \"../core\" }\n");
    assert_eq!(violations(&table, &crates_of(&[CORE, engine, SERVER]), &workspace()), Vec::<String>::new());
}

#[test]
fn a_dependency_on_a_crate_listed_below_fails_naming_the_edge() {
    let table = layout_table(README).unwrap();
    let engine = ("crates/engine", "[package]\nname = \"wharf-engine\"\n[dependencies]\nwharf-server = \"0.1\"\n");
    let problems = violations(&table, &crates_of(&[CORE, engine, SERVER]), &workspace());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "`crates/engine` (wharf-engine, row 2) depends on `crates/server` (wharf-server, row 3) in [dependencies]"
        ),
        "{}",
        problems[0]
    );
    // So does one renamed in the workspace table, a build dependency, and a
    // target's dependency renamed in place.
    for deps in [
        "[dependencies]\nserver.workspace = true\n",
        "[build-dependencies]\nwharf-server = \"0.1\"\n",
        "[target.'cfg(unix)'.dependencies]\nweb = { path = \"../server\", package = \"wharf-server\" }\n",
    ] {
        let text = format!("[package]\nname = \"wharf-engine\"\n{deps}");
        let problems = violations(&table, &crates_of(&[CORE, ("crates/engine", &text), SERVER]), &workspace());
        assert_eq!(problems.len(), 1, "{deps}: {problems:?}");
        assert!(problems[0].contains("depends on `crates/server`"), "{}", problems[0]);
    }
}

#[test]
fn dev_dependencies_may_point_anywhere() {
    let table = layout_table(README).unwrap();
    let engine =
        ("crates/engine", "[package]\nname = \"wharf-engine\"\n[dev-dependencies]\nwharf-server.workspace = true\n");
    assert_eq!(violations(&table, &crates_of(&[CORE, engine, SERVER]), &workspace()), Vec::<String>::new());
}

#[test]
fn a_crate_missing_from_the_table_or_a_stale_row_fails() {
    let table = layout_table(README).unwrap();
    let web = ("crates/web", "[package]\nname = \"wharf-web\"\n");
    let problems = violations(&table, &crates_of(&[CORE, web, SERVER]), &workspace());
    assert_eq!(
        problems,
        [
            "row 2 of the layout table names `crates/engine`, which is not a workspace crate",
            "`crates/web` (wharf-web) is missing from the layout table",
        ]
    );
}
