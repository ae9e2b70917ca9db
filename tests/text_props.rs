//! Property tests of `tarjama::text`, plus a long fuzz run (ignored by
//! default): `TARJAMA_FUZZ_SECS=600 cargo test --release --test text_props
//! -- --ignored --nocapture fuzz_long`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::cell::Cell;
use std::time::{Duration, Instant};
use tarjama::text::*;

const ATOMS: &[&str] = &[
    ".",
    "!",
    "?",
    "؟",
    "،",
    "؛",
    "«",
    "»",
    "\"",
    "…",
    ",",
    ";",
    ":",
    "٫",
    "٬",
    "(",
    ")",
    "'",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    "\r\n",
    "\r",
    "\u{A0}",
    "\u{2028}",
    "\n\n\n",
    " \n ",
    "\u{200B}",
    "\u{200C}",
    "\u{200D}",
    "\u{200E}",
    "\u{200F}",
    "\u{061C}",
    "\u{202A}",
    "\u{202B}",
    "\u{202C}",
    "\u{202D}",
    "\u{202E}",
    "\u{2066}",
    "\u{2067}",
    "\u{2068}",
    "\u{2069}",
    "\u{FEFF}",
    "\u{AD}",
    "\u{0}",
    "ـ",
    "ی",
    "ک",
    "ە",
    "ۀ",
    "ې",
    "ہ",
    "ھ",
    "ڪ",
    "😀",
    "👨\u{200D}👩",
    "❤\u{FE0F}",
    "3.5",
    "20:35",
    "1,000",
    "U.S.",
    "Mr.",
    "د.",
    "أ.",
    "م.",
    "ص.",
    "e.g.",
    "A.",
    "انتهى/",
    "انتهي/",
    "رأیکم",
    "!».",
    "؟»،",
    ".»",
    "ﻻ",
    "ﷲ",
    "ﷺ",
    "ﹱ",
    "ﹰ",
];

fn range(lo: u32, hi: u32) -> BoxedStrategy<String> {
    (lo..=hi)
        .prop_map(|u| char::from_u32(u).map(String::from).unwrap_or_default())
        .boxed()
}

/// One piece of input: Arabic letters and words dominate, with every kind
/// of troublemaker mixed in.
fn atom() -> BoxedStrategy<String> {
    prop_oneof![
        8 => "[\u{0621}-\u{064A}]{1,7}",
        2 => range(0x064B, 0x0652),
        1 => Just("\u{0670}".to_string()),
        2 => range(0x06F0, 0x06F9),
        2 => range(0x0660, 0x0669),
        2 => "[0-9]{1,4}",
        3 => "[a-zA-Z]{1,6}",
        8 => prop::sample::select(ATOMS).prop_map(String::from),
        1 => range(0xFB50, 0xFDFF),
        1 => range(0xFE70, 0xFEFF),
        1 => any::<char>().prop_map(String::from),
    ]
    .boxed()
}

fn input(max_atoms: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(atom(), 0..max_atoms).prop_map(|v| v.concat())
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn substr(s: &str, (a, b): (usize, usize)) -> String {
    s.chars().skip(a).take(b.saturating_sub(a)).collect()
}

fn opts(strip: bool, drop: bool) -> NormalizeOptions {
    NormalizeOptions {
        strip_diacritics: strip,
        drop_boilerplate: drop,
    }
}

/// Every property, for one input.
fn check(raw: &str, max: usize, by_chars: bool, strip: bool) -> Result<(), TestCaseError> {
    let count: &dyn Fn(&str) -> usize = if by_chars { &chars } else { &words };
    for drop in [false, true] {
        let o = opts(strip, drop);
        let n = normalize(raw, &o);
        prop_assert_eq!(&normalize(&n.text, &o).text, &n.text, "not idempotent");
        prop_assert_eq!(n.offsets().len(), n.text.chars().count());
        prop_assert!(n.offsets().windows(2).all(|w| w[0] <= w[1]));
        prop_assert!(n.offsets().iter().all(|&o| o < n.original_len_chars()));
        let doc = segment(&n.text, max, count);
        check_doc(&n.text, &doc, max, count)?;
        if !drop {
            check_spans(raw, &n, &doc, &o)?;
        }
        let _ = detect_language(&n.text);
        let _ = detect_script(raw);
    }
    // Raw, unnormalised text: no panic, still tiles.
    let doc = segment(raw, max, count);
    if raw.chars().any(|c| !c.is_whitespace()) {
        check_tiling(raw, &doc)?;
    } else {
        prop_assert!(doc.segments.is_empty());
    }
    Ok(())
}

fn check_tiling(text: &str, doc: &Document) -> Result<(), TestCaseError> {
    let tiled: String = doc
        .segments
        .iter()
        .map(|s| substr(text, (s.start, s.end)))
        .collect();
    prop_assert_eq!(&tiled, text, "spans do not tile");
    for s in &doc.segments {
        let span = substr(text, (s.start, s.end));
        prop_assert_eq!(span.trim(), s.text.as_str());
        prop_assert!(!s.text.is_empty());
    }
    Ok(())
}

fn check_doc(
    text: &str,
    doc: &Document,
    max: usize,
    count: &dyn Fn(&str) -> usize,
) -> Result<(), TestCaseError> {
    if !text.is_empty() {
        check_tiling(text, doc)?;
    }
    let lines = text.split('\n').filter(|l| !l.trim().is_empty()).count();
    prop_assert_eq!(doc.paragraphs.len(), lines);
    let mut next = 0;
    for (i, p) in doc.paragraphs.iter().enumerate() {
        prop_assert_eq!(p.index, i);
        prop_assert_eq!(p.segments.start, next);
        prop_assert!(p.segments.end > p.segments.start);
        next = p.segments.end;
        for s in &doc.segments[p.segments.clone()] {
            prop_assert_eq!(s.paragraph, i);
            prop_assert!(!s.text.contains('\n'));
        }
    }
    prop_assert_eq!(next, doc.segments.len());
    for s in &doc.segments {
        prop_assert!(
            s.split == SplitKind::Hard || count(&s.text) <= max,
            "over budget: {:?}",
            s
        );
    }
    let ts: Vec<String> = doc.segments.iter().map(|s| s.text.clone()).collect();
    let body = reassemble(doc, &ts);
    prop_assert_eq!(body.split("\n\n").filter(|p| !p.is_empty()).count(), lines);
    Ok(())
}

/// The original text under a segment's span normalises to the segment text,
/// except where a split fell inside one original char's NFKC expansion.
fn check_spans(
    raw: &str,
    n: &Normalized,
    doc: &Document,
    o: &NormalizeOptions,
) -> Result<(), TestCaseError> {
    let offs = n.offsets();
    for s in &doc.segments {
        let end = s.start + s.text.chars().count();
        let cuts_start = s.start > 0 && offs[s.start - 1] == offs[s.start];
        let cuts_end = end < offs.len() && offs[end - 1] == offs[end];
        if cuts_start || cuts_end {
            continue;
        }
        let span = n.segment_span(s);
        prop_assert_eq!(
            &normalize(&substr(raw, span), o).text,
            &s.text,
            "span {:?}",
            span
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config::with_cases(2000))]

    #[test]
    fn all_properties(raw in input(80), max in 0usize..40, by_chars: bool, strip: bool) {
        check(&raw, max, by_chars, strip)?;
    }

    #[test]
    fn arbitrary_strings(raw in any::<String>(), max in 0usize..40, by_chars: bool) {
        check(&raw, max, by_chars, false)?;
    }

    #[test]
    fn english_is_detected(raw in "[A-Za-z]{1,10}( [A-Za-z]{1,10}){0,20}[.!?]?") {
        prop_assert_eq!(detect_language(&raw), DetectedLanguage::English);
    }

    #[test]
    fn arabic_is_detected(raw in "[\u{0621}-\u{063A}\u{0641}-\u{064A}]{1,10}( [\u{0621}-\u{064A}]{1,10}){0,20}") {
        prop_assert_eq!(detect_language(&raw), DetectedLanguage::Arabic);
    }
}

/// Long randomised run; duration from `TARJAMA_FUZZ_SECS` (default 30).
/// Prints the number of executions.
#[test]
#[ignore]
fn fuzz_long() {
    let secs: u64 = std::env::var("TARJAMA_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let executions = Cell::new(0u64);
    let strategy = (input(400), 0usize..600, any::<bool>(), any::<bool>());
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        // A fresh, randomly seeded runner per round.
        let mut runner = TestRunner::new(Config {
            cases: 5000,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |(raw, max, by_chars, strip)| {
            executions.set(executions.get() + 1);
            check(&raw, max, by_chars, strip)
        });
        rounds += 1;
        if let Err(e) = result {
            panic!("after {} executions: {e}", executions.get());
        }
    }
    eprintln!(
        "fuzz_long: {} executions in {rounds} rounds, {secs}s, no failure",
        executions.get()
    );
}
