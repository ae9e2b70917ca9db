//! `tarjama translate --lines`: one JSON object per input line, in order, each what
//! `translate --json` prints for that line alone.

use std::io::Write;
use std::process::{Command, Stdio};

const MARIAN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tiny-marian-ar-en"
);

fn tarjama(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tarjama"))
        .args([
            "translate",
            "--offline",
            "--model",
            MARIAN,
            "--threads",
            "1",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tarjama {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn lines_give_one_object_per_line_in_order() {
    let inputs = ["مرحبا بكم", "", "روسيا: إنشاء وحدة أمن"];
    for compute in ["f32", "int8"] {
        let out = tarjama(
            &["--lines", "--compute-type", compute],
            &(inputs.join("\n") + "\n"),
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), inputs.len(), "{out}");
        assert_eq!(lines[1]["translation"], "");
        for (i, text) in inputs.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            let alone = tarjama(&["--json", "--compute-type", compute], text);
            let alone: serde_json::Value = serde_json::from_str(alone.trim()).unwrap();
            assert_eq!(lines[i], alone, "line {i} ({compute})");
        }
    }
}
