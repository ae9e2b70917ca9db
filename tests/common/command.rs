//! The `tarjama translate` command on the Marian fixture.

use std::io::Write;
use std::process::{Command, Stdio};

use super::engine::MARIAN;

/// `tarjama translate --offline --model <Marian fixture> --threads 1 ARGS` with `stdin`;
/// its standard output (it must succeed).
pub fn translate(args: &[&str], stdin: &str) -> String {
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
