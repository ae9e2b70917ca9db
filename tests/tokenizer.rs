//! Parity with the reference outputs of HF transformers (fixtures' reference.json),
//! plus error handling for corrupt files.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tarjama::tokenizer::{MarianTokenizer, SpmModel, Tokenizer, TokenizerError};

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn reference(dir: &str) -> Value {
    let text = std::fs::read_to_string(fixture(dir).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn marian() -> MarianTokenizer {
    MarianTokenizer::from_dir(&fixture("tiny-marian-ar-en")).unwrap()
}

/// The opus-mt-ar-en stand-in, and the opus-mt-tc-big-ar-en one (`</s>` and `<unk>` in the
/// middle of its vocabulary).
const MARIANS: [&str; 2] = ["tiny-marian-ar-en", "tiny-marian-tc-big-ar-en"];

#[test]
fn marian_pieces_and_ids_match_reference() {
    MARIANS
        .iter()
        .for_each(|dir| check_marian_pieces_and_ids(dir));
}

fn check_marian_pieces_and_ids(dir: &str) {
    let tok = MarianTokenizer::from_dir(&fixture(dir)).unwrap();
    let generic = Tokenizer::from_dir(&fixture(dir)).unwrap();
    assert!(matches!(generic, Tokenizer::Marian(_)));
    let cases = reference(dir)["tokenize"].as_array().unwrap().clone();
    assert!(!cases.is_empty());
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let pieces: Vec<String> = case["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(tok.pieces(text).unwrap(), pieces, "{dir}: pieces of {text}");
        assert_eq!(
            generic.encode(text).unwrap(),
            ids(&case["ids"]),
            "{dir}: ids of {text}"
        );
        assert_eq!(generic.token_count(text).unwrap(), pieces.len() + 1);
    }
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let batch = generic.encode_batch(&texts).unwrap();
    for (got, case) in batch.iter().zip(&cases) {
        assert_eq!(got, &ids(&case["ids"]));
    }
}

#[test]
fn marian_decode_matches_reference() {
    MARIANS.iter().for_each(|dir| check_marian_decode(dir));
}

fn check_marian_decode(dir: &str) {
    let tok = Tokenizer::from_dir(&fixture(dir)).unwrap();
    let r = reference(dir);
    let mut cases: Vec<(Vec<u32>, String)> = Vec::new();
    for key in ["decode", "greedy", "beam4"] {
        for c in r[key].as_array().unwrap() {
            let text = c
                .get("text")
                .filter(|_| key == "decode")
                .or(c.get("translation"));
            cases.push((ids(&c["ids"]), text.unwrap().as_str().unwrap().to_owned()));
        }
    }
    assert!(cases.len() >= 12);
    for (ids, text) in &cases {
        assert_eq!(
            &tok.decode(ids, true).unwrap(),
            text,
            "{dir}: decode of {ids:?}"
        );
    }
    let all: Vec<Vec<u32>> = cases.iter().map(|c| c.0.clone()).collect();
    let texts = tok.decode_batch(&all, true).unwrap();
    assert_eq!(texts, cases.iter().map(|c| c.1.clone()).collect::<Vec<_>>());
}

#[test]
fn marian_decode_keeps_specials_when_asked() {
    let tok = marian();
    // HF: special tokens are emitted verbatim followed by a space, then stripped.
    assert_eq!(
        tok.decode(&[565, 182, 0], false).unwrap(),
        "<pad> للأنباء</s>"
    );
    assert_eq!(
        tok.decode(&[565, 182, 1, 182, 0], true).unwrap(),
        "للأنباء للأنباء"
    );
    assert_eq!(tok.decode(&[], true).unwrap(), "");
}

#[test]
fn marian_language_code_is_one_token() {
    let tok = marian();
    let pieces = tok.pieces(">>ara<< مرحبا").unwrap();
    assert_eq!(pieces[0], ">>ara<<");
    assert_eq!(&pieces[1..], tok.pieces("مرحبا").unwrap().as_slice());
    // Not in this vocabulary, so it maps to <unk> like HF.
    assert_eq!(tok.encode(">>ara<< مرحبا").unwrap()[0], tok.unk_id());
}

#[test]
fn marian_empty_and_whitespace() {
    let tok = marian();
    assert_eq!(tok.encode("").unwrap(), vec![0]);
    assert_eq!(tok.encode(" \t\n ").unwrap(), vec![0]);
    assert_eq!(
        tok.pieces("  مع   مع  ").unwrap(),
        tok.pieces("مع مع").unwrap()
    );
}

#[test]
fn bart_ids_and_summaries_match_reference() {
    let tok = Tokenizer::from_dir(&fixture("tiny-bart-summarizer")).unwrap();
    assert!(matches!(tok, Tokenizer::Bart(_)));
    let r = reference("tiny-bart-summarizer");
    let cases = r["tokenize"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "ids of {text}"
        );
        assert_eq!(
            tok.token_count(text).unwrap(),
            case["ids"].as_array().unwrap().len()
        );
    }
    let sums = r["summaries"].as_array().unwrap();
    assert!(!sums.is_empty());
    for s in sums {
        let got = tok.decode(&ids(&s["ids"]), true).unwrap();
        assert_eq!(got, s["summary"].as_str().unwrap());
    }
    assert_eq!(tok.vocab_size(), r["vocab_size"].as_u64().unwrap() as usize);
}

#[test]
fn bart_decode_keeps_specials_when_asked() {
    let tok = Tokenizer::from_dir(&fixture("tiny-bart-summarizer")).unwrap();
    let ids = tok.encode("The government held its meeting.").unwrap();
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<s>The government held its meeting.</s>"
    );
    assert_eq!(
        tok.decode(&ids, true).unwrap(),
        "The government held its meeting."
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tarjama-tok-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of the Marian fixture with one file replaced.
fn marian_with(name: &str, file: &str, contents: &[u8]) -> PathBuf {
    let dir = temp_dir(name);
    for f in ["source.spm", "target.spm", "vocab.json"] {
        std::fs::copy(fixture("tiny-marian-ar-en").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join(file), contents).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    let err = Tokenizer::from_dir(dir).unwrap_err();
    err.to_string()
}

#[test]
fn corrupt_spm_is_a_clear_error() {
    let good = std::fs::read(fixture("tiny-marian-ar-en/source.spm")).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random", random),
        ("trunc-half", good[..good.len() / 2].to_vec()),
        ("trunc-tail", good[..good.len() - 3].to_vec()),
        ("trunc-head", good[..100].to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in cases {
        let dir = marian_with(name, "source.spm", &bytes);
        let msg = load_error(&dir);
        assert!(msg.contains("source.spm"), "{name}: {msg}");
        assert!(msg.contains("corrupt SentencePiece"), "{name}: {msg}");
        let err = SpmModel::from_bytes(&bytes, Path::new("x.spm")).unwrap_err();
        assert!(matches!(err, TokenizerError::CorruptSpm { .. }), "{name}");
    }
}

#[test]
fn bad_vocab_json_is_a_clear_error() {
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "huge-id",
            b"{\"</s>\": 0, \"<unk>\": 4000000000}",
            "out of range",
        ),
        ("invalid", b"{\"a\": 1,", "invalid JSON"),
        ("array", b"[1, 2, 3]", "expected an object"),
        ("strings", b"{\"<unk>\": \"1\"}", "expected an object"),
        ("no-unk", b"{\"</s>\": 0, \"a\": 1}", "<unk>"),
        ("dup", b"{\"</s>\": 0, \"<unk>\": 0}", "used twice"),
    ];
    for (name, contents, want) in cases {
        let dir = marian_with(&format!("vocab-{name}"), "vocab.json", contents);
        let msg = load_error(&dir);
        assert!(msg.contains("vocab.json"), "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
}

#[test]
fn missing_files_are_named() {
    let dir = temp_dir("missing-vocab");
    std::fs::copy(
        fixture("tiny-marian-ar-en/source.spm"),
        dir.join("source.spm"),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("vocab.json"));
    let msg = load_error(&dir);
    assert!(
        msg.contains("missing") && msg.contains("vocab.json"),
        "{msg}"
    );

    let empty = temp_dir("no-files");
    assert!(matches!(
        Tokenizer::from_dir(&empty),
        Err(TokenizerError::NoTokenizer(_))
    ));

    let bart = temp_dir("bart-bad-merges");
    std::fs::copy(
        fixture("tiny-bart-summarizer/vocab.json"),
        bart.join("vocab.json"),
    )
    .unwrap();
    std::fs::write(bart.join("merges.txt"), "#version: 0.2\nĠ t\nbroken\n").unwrap();
    let msg = load_error(&bart);
    assert!(msg.contains("merges.txt"), "{msg}");
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<TokenizerError>();
}

/// Each reference piece's byte range holds the text the piece was made from: normalised,
/// without the space symbol, it is the piece; a lone `▁` and `</s>` get empty ranges.
#[test]
fn marian_source_offsets_match_reference_pieces() {
    let tok = marian();
    let spm = tok.source_spm();
    let letters = |s: &str| s.replace(['\u{2581}', ' '], "");
    for case in reference("tiny-marian-ar-en")["tokenize"]
        .as_array()
        .unwrap()
    {
        let text = case["text"].as_str().unwrap();
        let (ids, ranges) = tok.encode_with_offsets(text);
        assert_eq!(ids, self::ids(&case["ids"]), "ids of {text}");
        let pieces = case["pieces"].as_array().unwrap();
        assert_eq!(ranges.len(), pieces.len() + 1);
        for (piece, r) in pieces.iter().zip(&ranges) {
            let piece = letters(piece.as_str().unwrap());
            assert_eq!(
                letters(&spm.normalize(&text[r.clone()])),
                piece,
                "{text}: {r:?}"
            );
            assert_eq!(r.is_empty(), piece.is_empty(), "{text}: {r:?}");
        }
        let eos = ranges.last().unwrap();
        assert_eq!(eos.clone(), text.len()..text.len());
    }
}

/// Each generated token's range holds its piece's text; special tokens get empty ranges.
#[test]
fn marian_target_offsets_match_reference_decodes() {
    let tok = marian();
    let r = reference("tiny-marian-ar-en");
    for c in r["decode"].as_array().unwrap() {
        let ids = ids(&c["ids"]);
        let (text, ranges) = tok.decode_with_offsets(&ids);
        assert_eq!(text, c["text"].as_str().unwrap());
        for (&id, range) in ids.iter().zip(&ranges) {
            let piece = tok.id_piece(id).unwrap();
            let want = match id == tok.eos_id() || Some(id) == tok.pad_id() {
                true => String::new(),
                false => piece.replace('\u{2581}', " ").trim().to_owned(),
            };
            assert_eq!(&text[range.clone()], want, "id {id} of {ids:?}");
        }
    }
}
