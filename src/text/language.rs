//! Script-based language detection for `source_language = "auto"`.
//!
//! Only letters count (digits, punctuation, diacritics and symbols do not).
//! With `a`, `l` and `o` the Arabic, Latin and other letters and `n` their sum:
//! - `n == 0` → Unknown;
//! - `a ≥ 80 % of n` → Arabic;
//! - `l ≥ 80 % of n` and `a < 10 % of n` → English (passed through);
//! - otherwise, if `a > 0` → Mixed (translated; reported as `ar`);
//! - otherwise → Unknown (e.g. Cyrillic or CJK text: neither ar nor en).
//!
//! English needs both conditions so that Arabic text quoting a few English
//! words, or English with a noticeable Arabic share, is still translated.

use super::chars::{is_arabic_letter, is_latin_letter};

/// Dominant script of a text's letters (80 % threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Script {
    Arabic,
    Latin,
    /// Arabic and/or Latin letters, neither dominant.
    Mixed,
    /// No letters, or only letters of other scripts.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectedLanguage {
    Arabic,
    English,
    Mixed,
    Unknown,
}

impl DetectedLanguage {
    /// Code for responses: `ar`, `en`, `ar` for Mixed (it is translated as
    /// Arabic), `und` (BCP 47 "undetermined") for Unknown.
    pub fn code(self) -> &'static str {
        match self {
            DetectedLanguage::Arabic | DetectedLanguage::Mixed => "ar",
            DetectedLanguage::English => "en",
            DetectedLanguage::Unknown => "und",
        }
    }

    /// Whether the text goes through the ar→en model.
    pub fn needs_translation(self) -> bool {
        matches!(self, DetectedLanguage::Arabic | DetectedLanguage::Mixed)
    }
}

/// Letter counts by script.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LetterCounts {
    pub arabic: usize,
    pub latin: usize,
    pub other: usize,
}

impl LetterCounts {
    pub fn of(text: &str) -> Self {
        let mut n = LetterCounts::default();
        for c in text.chars() {
            if is_arabic_letter(c) {
                n.arabic += 1;
            } else if is_latin_letter(c) {
                n.latin += 1;
            } else if c.is_alphabetic() && !c.is_ascii_digit() && !is_mark_like(c) {
                n.other += 1;
            }
        }
        n
    }

    pub fn total(&self) -> usize {
        self.arabic + self.latin + self.other
    }
}

/// Arabic-block alphabetic chars that are not letters (diacritics, tatweel):
/// neither Arabic letters nor "other" letters.
fn is_mark_like(c: char) -> bool {
    matches!(c, '\u{0600}'..='\u{06FF}' | '\u{0750}'..='\u{077F}' | '\u{08A0}'..='\u{08FF}')
}

/// `part ≥ pct % of total`, without floats or overflow.
fn at_least(part: usize, pct: usize, total: usize) -> bool {
    (part as u128) * 100 >= (pct as u128) * (total as u128)
}

pub fn detect_script(text: &str) -> Script {
    let n = LetterCounts::of(text);
    let total = n.total();
    if total == 0 {
        Script::Unknown
    } else if at_least(n.arabic, 80, total) {
        Script::Arabic
    } else if at_least(n.latin, 80, total) {
        Script::Latin
    } else if n.arabic + n.latin > 0 {
        Script::Mixed
    } else {
        Script::Unknown
    }
}

/// Whether `text` holds at least one Arabic letter: only such text goes to the model.
pub fn has_arabic_letter(text: &str) -> bool {
    text.chars().any(is_arabic_letter)
}

pub fn detect_language(text: &str) -> DetectedLanguage {
    let n = LetterCounts::of(text);
    let total = n.total();
    if total == 0 {
        DetectedLanguage::Unknown
    } else if at_least(n.arabic, 80, total) {
        DetectedLanguage::Arabic
    } else if at_least(n.latin, 80, total) && !at_least(n.arabic, 10, total) {
        DetectedLanguage::English
    } else if n.arabic > 0 {
        DetectedLanguage::Mixed
    } else {
        DetectedLanguage::Unknown
    }
}
