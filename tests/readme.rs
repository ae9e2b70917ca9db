//! README.md's flags table must say what `tarjama serve` really accepts: every flag, its
//! environment variable and its default, from clap's own description of the command.

use std::collections::BTreeMap;

use clap::CommandFactory;
use tarjama::config::Cli;

/// One row of the README table: env variable and the default cell.
#[derive(Debug, PartialEq)]
struct Row {
    env: String,
    default: Option<String>,
}

/// Rows of the table under `## Flags`, keyed by long flag (without `--`).
fn readme_rows() -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = text
        .split("\n## Flags\n")
        .nth(1)
        .expect("README has a `## Flags` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches('|').trim())
            .collect();
        let flag = ticked(cells[0]).expect("flag in backticks");
        let env = ticked(cells[1]).unwrap_or_default();
        let default = match cells[2] {
            "off" => None,
            c if c.starts_with('`') => ticked(c),
            // Prose ("the standard Hugging Face cache"): clap has no literal default either.
            _ => None,
        };
        let flag = flag.trim_start_matches("--").to_string();
        assert!(
            rows.insert(flag.clone(), Row { env, default }).is_none(),
            "--{flag} twice in the README table"
        );
    }
    rows
}

/// The first `backticked` text of a cell.
fn ticked(cell: &str) -> Option<String> {
    let rest = cell.split_once('`')?.1;
    Some(rest.split_once('`')?.0.to_string())
}

/// The same from clap: flags of `serve` with their env variable and default value.
fn clap_rows() -> BTreeMap<String, Row> {
    let mut cli = Cli::command();
    cli.build();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    serve
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            let default = a
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned())
                // A switch's implicit `false` is what the README calls "off".
                .filter(|d| a.get_action().takes_values() || d != "false");
            Some((
                long,
                Row {
                    env: env.unwrap_or_default(),
                    default,
                },
            ))
        })
        .collect()
}

#[test]
fn readme_flags_table_matches_serve() {
    let (readme, clap) = (readme_rows(), clap_rows());
    assert!(
        clap.contains_key("listen"),
        "clap introspection failed: {clap:?}"
    );
    let missing: Vec<_> = clap.keys().filter(|k| !readme.contains_key(*k)).collect();
    let invented: Vec<_> = readme.keys().filter(|k| !clap.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "serve flags missing from the README table: {missing:?}"
    );
    assert!(
        invented.is_empty(),
        "README lists flags serve lacks: {invented:?}"
    );
    for (flag, want) in &clap {
        assert_eq!(&readme[flag], want, "README row of --{flag}");
    }
}

#[test]
fn the_checker_notices_a_stale_row() {
    let mut readme = readme_rows();
    let clap = clap_rows();
    assert_eq!(readme["listen"], clap["listen"]);
    readme.get_mut("listen").unwrap().default = Some("0.0.0.0:1".into());
    assert_ne!(readme["listen"], clap["listen"]);
}
