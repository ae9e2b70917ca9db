//! `tarjama translate --lines`: one JSON object per input line, in order, each what
//! `translate --json` prints for that line alone.

mod common;

use common::command::translate as tarjama;

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
