//! Property tests: no panics on hostile Unicode, deterministic encoding, and
//! lossless round trips where the vocabulary allows them.
//!
//! Marian round trip, defined precisely: for a text whose SentencePiece
//! segmentation has no unknown piece, `decode(encode(s), skip_special_tokens)`
//! equals `normalize(s)` with `▁` turned back into spaces and outer
//! whitespace stripped (i.e. NFKC-style normalisation plus whitespace
//! collapsing; the spm normaliser is the only lossy step). Inputs are built
//! from the source model's own pieces so that condition almost always holds.
//!
//! BART round trip: byte-level BPE is lossless, so `decode(encode(s)) == s`
//! for any text that does not spell a special token.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use tarjama::tokenizer::{MarianTokenizer, Tokenizer};

fn dir(name: &str) -> std::path::PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn marian() -> &'static MarianTokenizer {
    static T: OnceLock<MarianTokenizer> = OnceLock::new();
    T.get_or_init(|| MarianTokenizer::from_dir(&dir("tiny-marian-ar-en")).unwrap())
}

fn marian_any() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_dir(&dir("tiny-marian-ar-en")).unwrap())
}

fn bart() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_dir(&dir("tiny-bart-summarizer")).unwrap())
}

/// Normal pieces of the source spm, `▁` shown as a space.
fn vocab_pieces() -> &'static Vec<String> {
    static P: OnceLock<Vec<String>> = OnceLock::new();
    P.get_or_init(|| {
        let spm = marian().source_spm();
        (0..spm.len() as u32)
            .filter_map(|i| spm.id_to_piece(i))
            .filter(|p| !p.starts_with('<'))
            .map(|p| p.replace('\u{2581}', " "))
            .collect()
    })
}

fn char_from(ranges: &'static [(u32, u32)]) -> impl Strategy<Value = char> {
    prop::sample::select(ranges.to_vec())
        .prop_flat_map(|(lo, hi)| lo..=hi)
        .prop_map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
}

const ARABIC: &[(u32, u32)] = &[
    (0x0621, 0x064A), // letters
    (0x064B, 0x0652), // harakat
    (0x0640, 0x0640), // tatweel
    (0x0670, 0x0670), // superscript alef
    (0x0660, 0x0669), // Arabic-Indic digits
    (0x060C, 0x060C),
    (0x061F, 0x061F),
];
const PERSIAN: &[(u32, u32)] = &[
    (0x067E, 0x067E),
    (0x0686, 0x0686),
    (0x0698, 0x0698),
    (0x06A9, 0x06A9),
    (0x06AF, 0x06AF),
    (0x06CC, 0x06CC),
    (0x06F0, 0x06F9),
];
const LATIN: &[(u32, u32)] = &[(0x41, 0x5A), (0x61, 0x7A), (0x30, 0x39), (0xC0, 0xFF)];
const EMOJI: &[(u32, u32)] = &[(0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x200D, 0x200D)];
const MARKS: &[(u32, u32)] = &[
    (0x200E, 0x200F),
    (0x202A, 0x202E),
    (0x2066, 0x2069),
    (0x061C, 0x061C),
];
const CONTROL: &[(u32, u32)] = &[(0x00, 0x1F), (0x7F, 0x9F), (0xFEFF, 0xFEFF)];
const SPACE: &[(u32, u32)] = &[(0x20, 0x20), (0x09, 0x0A), (0xA0, 0xA0), (0x3000, 0x3000)];

/// Mixed hostile text: every generator above plus arbitrary scalar values.
fn hostile_text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        3 => char_from(ARABIC),
        1 => char_from(PERSIAN),
        1 => char_from(LATIN),
        1 => char_from(EMOJI),
        1 => char_from(MARKS),
        1 => char_from(CONTROL),
        2 => char_from(SPACE),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..200).prop_map(|cs| cs.into_iter().collect())
}

/// Text made of vocabulary pieces and spaces.
fn vocab_text() -> impl Strategy<Value = String> {
    let n = vocab_pieces().len();
    let part =
        prop_oneof![4 => (0..n).prop_map(|i| vocab_pieces()[i].clone()), 1 => Just(" ".to_owned())];
    prop::collection::vec(part, 0..40).prop_map(|ps| ps.concat())
}

fn expected_marian_round_trip(s: &str) -> String {
    let norm = marian().source_spm().normalize(s).replace('\u{2581}', " ");
    norm.trim().to_owned()
}

fn check_no_panic(tok: &Tokenizer, s: &str) -> Result<(), TestCaseError> {
    let ids = tok.encode(s).unwrap();
    prop_assert_eq!(&ids, &tok.encode(s).unwrap(), "non-deterministic");
    prop_assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
    prop_assert_eq!(tok.token_count(s).unwrap(), ids.len());
    tok.decode(&ids, true).unwrap();
    tok.decode(&ids, false).unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn marian_never_panics_and_is_deterministic(s in hostile_text()) {
        check_no_panic(marian_any(), &s)?;
        let ids = marian_any().encode(&s).unwrap();
        prop_assert_eq!(ids.last().copied(), Some(marian().eos_id()));
    }

    #[test]
    fn bart_never_panics_and_is_deterministic(s in hostile_text()) {
        check_no_panic(bart(), &s)?;
    }

    #[test]
    fn marian_round_trips_vocabulary_text(s in vocab_text()) {
        let ids = marian().encode(&s).unwrap();
        prop_assume!(!ids.contains(&marian().unk_id()));
        prop_assert_eq!(marian().decode(&ids, true).unwrap(), expected_marian_round_trip(&s));
    }

    #[test]
    fn marian_pieces_concatenate_to_normalized_text(s in hostile_text()) {
        // Segmentation never loses or invents text, even for unknown characters.
        let pieces = marian().pieces(&s).unwrap();
        prop_assert_eq!(pieces.concat(), marian().source_spm().normalize(&s));
    }

    #[test]
    fn bart_round_trips_any_text(s in hostile_text()) {
        prop_assume!(!["<s>", "</s>", "<pad>", "<unk>", "<mask>"].iter().any(|t| s.contains(t)));
        let ids = bart().encode(&s).unwrap();
        prop_assert_eq!(bart().decode(&ids, true).unwrap(), s);
    }

    #[test]
    fn batch_equals_single(a in hostile_text(), b in vocab_text()) {
        for tok in [marian_any(), bart()] {
            let batch = tok.encode_batch(&[&a, &b]).unwrap();
            prop_assert_eq!(&batch[0], &tok.encode(&a).unwrap());
            prop_assert_eq!(&batch[1], &tok.encode(&b).unwrap());
            let texts = tok.decode_batch(&batch, true).unwrap();
            prop_assert_eq!(&texts[1], &tok.decode(&batch[1], true).unwrap());
        }
    }
}

#[test]
fn empty_string() {
    for tok in [marian_any(), bart()] {
        let ids = tok.encode("").unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), "");
        assert_eq!(tok.token_count("").unwrap(), ids.len());
    }
    assert_eq!(marian_any().encode("").unwrap(), vec![0]);
    assert_eq!(bart().encode("").unwrap(), vec![0, 2]);
}

#[test]
fn hundred_thousand_characters() {
    let pieces = vocab_pieces();
    let mut s = String::new();
    let mut i = 0usize;
    while s.chars().count() < 100_000 {
        s.push_str(&pieces[(i * 7919) % pieces.len()]);
        if i.is_multiple_of(5) {
            s.push(' ');
        }
        i += 1;
    }
    let s: String = s.chars().take(100_000).collect();
    assert_eq!(s.chars().count(), 100_000);
    let ids = marian().encode(&s).unwrap();
    assert_eq!(ids, marian().encode(&s).unwrap());
    if !ids.contains(&marian().unk_id()) {
        assert_eq!(
            marian().decode(&ids, true).unwrap(),
            expected_marian_round_trip(&s)
        );
    }
    let hostile: String = (0..100_000u32)
        .map(|i| char::from_u32(0x600 + (i * 31) % 0x1000).unwrap_or('x'))
        .collect();
    for tok in [marian_any(), bart()] {
        let ids = tok.encode(&hostile).unwrap();
        assert_eq!(ids, tok.encode(&hostile).unwrap());
        tok.decode(&ids, true).unwrap();
    }
    let b = bart().encode(&s).unwrap();
    assert_eq!(bart().decode(&b, true).unwrap(), s);
}

/// Token ranges are in order, do not overlap, lie on character boundaries within the text,
/// and together hold every non-whitespace character of it.
fn check_ranges(text: &str, ranges: &[std::ops::Range<usize>]) -> Result<(), TestCaseError> {
    let mut end = 0;
    for r in ranges {
        prop_assert!(
            end <= r.start && r.start <= r.end && r.end <= text.len(),
            "{r:?} after {end}"
        );
        prop_assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        end = r.end;
    }
    for (i, c) in text.char_indices().filter(|(_, c)| !c.is_whitespace()) {
        prop_assert!(
            ranges.iter().any(|r| r.contains(&i)),
            "{c:?} at {i} in no token"
        );
    }
    Ok(())
}

/// `s` normalised by the source spm, without its space symbols and spaces.
fn normalized_letters(s: &str) -> String {
    let norm = marian().source_spm().normalize(s);
    norm.chars()
        .filter(|&c| c != '\u{2581}' && !c.is_whitespace())
        .collect()
}

/// Ids for the decoder: any id of the vocabulary.
fn marian_ids() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0..marian().vocab_size() as u32, 0..40)
}

fn bart_ids() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0..bart().vocab_size() as u32, 0..40)
}

/// `decode_with_offsets`, checked: the text `decode` gives, one range per id, in order.
fn decode_checked(
    tok: &Tokenizer,
    ids: &[u32],
) -> Result<(String, Vec<std::ops::Range<usize>>), TestCaseError> {
    let (text, ranges) = tok.decode_with_offsets(ids).unwrap();
    prop_assert_eq!(&text, &tok.decode(ids, true).unwrap());
    prop_assert_eq!(ranges.len(), ids.len());
    check_ranges(&text, &ranges)?;
    Ok((text, ranges))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn source_offsets_cover_the_text_in_order(s in hostile_text(), v in vocab_text()) {
        for text in [&s, &v] {
            for tok in [marian_any(), bart()] {
                let (ids, ranges) = tok.encode_with_offsets(text).unwrap();
                prop_assert_eq!(&ids, &tok.encode(text).unwrap());
                prop_assert_eq!(ranges.len(), ids.len());
                check_ranges(text, &ranges)?;
            }
            // Marian: the tokens' texts, normalised, are the normalised text, split.
            let (_, ranges) = marian_any().encode_with_offsets(text).unwrap();
            let parts: String = ranges.iter().map(|r| normalized_letters(&text[r.clone()])).collect();
            prop_assert_eq!(parts, normalized_letters(text));
        }
    }

    #[test]
    fn marian_target_offsets_are_each_pieces_text(ids in marian_ids()) {
        let (text, ranges) = decode_checked(marian_any(), &ids)?;
        let m = marian();
        let special = [Some(m.eos_id()), Some(m.unk_id()), m.pad_id()];
        for (id, r) in ids.iter().zip(&ranges) {
            let expected = match m.id_piece(*id) {
                Some(p) if !special.contains(&Some(*id)) => {
                    m.source_spm().decode_pieces(&[p]).replace('\u{2581}', " ")
                }
                _ => String::new(),
            };
            prop_assert_eq!(&text[r.clone()], expected.trim(), "id {}", id);
        }
    }

    #[test]
    fn bart_target_offsets_cover_the_decoded_text(ids in bart_ids()) {
        decode_checked(bart(), &ids)?;
    }
}
