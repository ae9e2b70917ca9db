//! Character classes shared by normalisation, segmentation and detection.
//!
//! Kept as explicit, documented lists so that behaviour is predictable and
//! reviewable rather than depending on broad Unicode categories.

/// Tatweel (kashida): a purely typographic stretch, carries no meaning.
pub const TATWEEL: char = '\u{0640}';

/// Arabic presentation forms (A: FB50–FDFF, B: FE70–FEFF). Only these get
/// NFKC, so that other scripts and symbols are never altered.
pub fn is_presentation_form(c: char) -> bool {
    matches!(c, '\u{FB50}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFF}')
}

/// Invisible characters removed outright: zero-width space, ZWNJ (meaningful
/// in Persian, noise in Arabic, and the model is ar→en), word joiner and
/// invisible operators, BOM / ZWNBSP, soft hyphen, and every bidi control
/// (ALM, LRM, RLM, LRE..RLO, LRI..PDI). ZWJ is handled separately.
pub fn is_removed_control(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'
            | '\u{200C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{061C}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{00AD}'
    ) || is_other_control(c)
}

/// C0/C1 controls other than the whitespace ones: never content.
fn is_other_control(c: char) -> bool {
    c.is_control() && !c.is_whitespace()
}

pub const ZWJ: char = '\u{200D}';

/// Rough Extended_Pictographic test: ZWJ after one of these builds an emoji
/// sequence (👨‍👩‍👧) and is kept; elsewhere ZWJ is only a shaping hint.
pub fn is_pictograph(c: char) -> bool {
    matches!(c, '\u{1F000}'..='\u{1FAFF}' | '\u{2600}'..='\u{27BF}' | '\u{2B00}'..='\u{2BFF}')
        || c == '\u{FE0F}'
}

/// Line breaks of any convention; `\r\n` is folded to one break by the caller.
pub fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Arabic diacritics removed when `strip_diacritics` is set: harakat
/// (064B–0652), superscript alef (0670) and Quranic annotation marks.
/// Combining hamza/madda (0653–0655) are kept: they change the letter.
pub fn is_diacritic(c: char) -> bool {
    matches!(
        c,
        '\u{0610}'..='\u{061A}'
            | '\u{064B}'..='\u{0652}'
            | '\u{0656}'..='\u{065F}'
            | '\u{0670}'
            | '\u{06D6}'..='\u{06DC}'
            | '\u{06DF}'..='\u{06E4}'
            | '\u{06E7}'..='\u{06E8}'
            | '\u{06EA}'..='\u{06ED}'
    )
}

/// Persian/Urdu/Kurdish letter forms and Eastern digits mapped to their
/// Arabic/ASCII equivalents. The full list:
/// - ی (06CC farsi yeh), ې (06D0 pashto e) → ي
/// - ک (06A9 keheh), ڪ (06AA swash kaf) → ك
/// - ە (06D5 ae), ۀ (06C0 heh with yeh), ہ (06C1 heh goal), ھ (06BE heh doachashmee) → ه
/// - ٠–٩ (0660–0669) and ۰–۹ (06F0–06F9) → 0–9
/// - ٫ (066B decimal separator) → `.`, ٬ (066C thousands separator) → `,`
pub fn map_letter(c: char) -> char {
    match c {
        '\u{06CC}' | '\u{06D0}' => '\u{064A}',
        '\u{06A9}' | '\u{06AA}' => '\u{0643}',
        '\u{06D5}' | '\u{06C0}' | '\u{06C1}' | '\u{06BE}' => '\u{0647}',
        '\u{0660}'..='\u{0669}' => digit(c as u32 - 0x0660),
        '\u{06F0}'..='\u{06F9}' => digit(c as u32 - 0x06F0),
        '\u{066B}' => '.',
        '\u{066C}' => ',',
        _ => c,
    }
}

fn digit(d: u32) -> char {
    char::from_digit(d, 10).unwrap_or('0')
}

/// Any char of the Arabic blocks (Arabic, Supplement, Extended-A, presentation forms):
/// letters, marks, tatweel, digits and punctuation.
pub fn is_arabic_block(c: char) -> bool {
    matches!(
        c,
        '\u{0600}'..='\u{06FF}'
            | '\u{0750}'..='\u{077F}'
            | '\u{08A0}'..='\u{08FF}'
            | '\u{FB50}'..='\u{FDFF}'
            | '\u{FE70}'..='\u{FEFF}'
    )
}

/// Letters of the Arabic script, diacritics and tatweel excluded.
pub fn is_arabic_letter(c: char) -> bool {
    is_arabic_block(c) && c.is_alphabetic() && !is_diacritic(c) && c != TATWEEL
}

/// Latin letters: ASCII, Latin-1 Supplement, Extended-A/B, Extended Additional.
pub fn is_latin_letter(c: char) -> bool {
    let in_block =
        c.is_ascii_alphabetic() || matches!(c, '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}');
    in_block && c.is_alphabetic()
}

/// Sentence-final punctuation.
pub fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '؟' | '…')
}

/// Quotes and brackets that may close right after a terminator.
pub fn is_closing(c: char) -> bool {
    matches!(c, '»' | '"' | '”' | '’' | '\'' | '›' | ')' | ']')
}

/// Characters that may open a word before an abbreviation's dot.
pub fn is_opening(c: char) -> bool {
    matches!(c, '«' | '"' | '“' | '‘' | '\'' | '‹' | '(' | '[')
}
