//! Tokenizers for the translation (MarianMT) and summarisation (BART) models,
//! loaded from a Hugging Face model folder without Python or network access.

mod bart;
mod marian;
mod normalizer;
pub mod proto;
mod spm;
mod trie;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use bart::BartTokenizer;
pub use marian::MarianTokenizer;
pub use spm::SpmModel;

/// Errors from loading or running a tokenizer. File errors name the file.
#[derive(thiserror::Error, Debug)]
pub enum TokenizerError {
    #[error("missing tokenizer file {}", .0.display())]
    MissingFile(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no tokenizer in {}: expected source.spm, tokenizer.json or vocab.json + merges.txt", .0.display())]
    NoTokenizer(PathBuf),
    #[error("corrupt SentencePiece model {}: {reason}", path.display())]
    CorruptSpm { path: PathBuf, reason: String },
    #[error("bad vocabulary {}: {reason}", path.display())]
    BadVocab { path: PathBuf, reason: String },
    #[error("bad BPE merges {}: {reason}", path.display())]
    BadMerges { path: PathBuf, reason: String },
    #[error("bad tokenizer.json {}: {reason}", path.display())]
    BadTokenizerJson { path: PathBuf, reason: String },
    #[error("bad tokenizer config {}: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// The tokenizer of one model folder.
// Built once per model and shared, so variant size is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Tokenizer {
    Marian(MarianTokenizer),
    Bart(BartTokenizer),
}

impl Tokenizer {
    /// Marian if `source.spm` exists, else BART (`tokenizer.json` or `vocab.json` + `merges.txt`).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        if dir.join("source.spm").is_file() {
            return Ok(Self::Marian(MarianTokenizer::from_dir(dir)?));
        }
        let has = |name: &str| dir.join(name).is_file();
        if has("tokenizer.json") || (has("vocab.json") && has("merges.txt")) {
            return Ok(Self::Bart(BartTokenizer::from_dir(dir)?));
        }
        Err(TokenizerError::NoTokenizer(dir.to_path_buf()))
    }

    /// Model input ids including special tokens (`</s>`; `<s> … </s>` for BART).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Self::Marian(t) => t.encode(text),
            Self::Bart(t) => t.encode(text),
        }
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TokenizerError> {
        match self {
            Self::Marian(t) => t.encode_batch(texts),
            Self::Bart(t) => t.encode_batch(texts),
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        match self {
            Self::Marian(t) => t.decode(ids, skip_special_tokens),
            Self::Bart(t) => t.decode(ids, skip_special_tokens),
        }
    }

    pub fn decode_batch(
        &self,
        ids: &[Vec<u32>],
        skip_special_tokens: bool,
    ) -> Result<Vec<String>, TokenizerError> {
        ids.iter()
            .map(|s| self.decode(s, skip_special_tokens))
            .collect()
    }

    /// As [`Self::encode`], with each id's byte range in `text` (see [`token_ranges`]).
    pub fn encode_with_offsets(
        &self,
        text: &str,
    ) -> Result<(Vec<u32>, Vec<Range<usize>>), TokenizerError> {
        match self {
            Self::Marian(t) => Ok(t.encode_with_offsets(text)),
            Self::Bart(t) => t.encode_with_offsets(text),
        }
    }

    /// `decode(ids, true)`, with each id's byte range in the decoded text (special tokens:
    /// empty ranges).
    pub fn decode_with_offsets(
        &self,
        ids: &[u32],
    ) -> Result<(String, Vec<Range<usize>>), TokenizerError> {
        match self {
            Self::Marian(t) => Ok(t.decode_with_offsets(ids)),
            Self::Bart(t) => t.decode_with_offsets(ids),
        }
    }

    /// `encode(text).len()`.
    pub fn token_count(&self, text: &str) -> Result<usize, TokenizerError> {
        match self {
            Self::Marian(t) => t.token_count(text),
            Self::Bart(t) => Ok(t.encode(text)?.len()),
        }
    }

    /// Most bytes one token can add to decoded text: bounds a generation's text by its
    /// token count.
    pub fn max_token_bytes(&self) -> usize {
        match self {
            Self::Marian(t) => t.max_piece_bytes(),
            Self::Bart(t) => t.max_token_bytes(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Marian(t) => t.vocab_size(),
            Self::Bart(t) => t.vocab_size(),
        }
    }
}

/// Byte ranges of tokens in `text` from where each starts (`starts[i]`: the offset of the
/// first character token `i` was made from): token `i` spans up to where the next one
/// starts (the last one to the end, the first one from 0), without the whitespace at either
/// end. So the ranges are in order, do not overlap, and every non-whitespace character of
/// the text is in one: characters the tokenizer dropped belong to the token before them. A
/// token made only of whitespace (`▁`), or of nothing (special tokens), gets an empty range
/// where the next token starts. Starts that go backwards are taken as the previous one.
pub fn token_ranges(text: &str, starts: &[usize]) -> Vec<Range<usize>> {
    let mut clamped = Vec::with_capacity(starts.len());
    let mut prev = 0;
    for (i, &s) in starts.iter().enumerate() {
        // Off a character boundary (never from our tokenizers): the next boundary.
        let mut s = if i == 0 { 0 } else { s.clamp(prev, text.len()) };
        while !text.is_char_boundary(s) {
            s += 1;
        }
        clamped.push(s);
        prev = s;
    }
    (0..clamped.len())
        .map(|i| {
            let (start, end) = (
                clamped[i],
                clamped.get(i + 1).copied().unwrap_or(text.len()),
            );
            let span = &text[start..end];
            let lead = span.len() - span.trim_start().len();
            let kept = span.trim().len();
            if kept == 0 {
                end..end
            } else {
                start + lead..start + lead + kept
            }
        })
        .collect()
}

/// `dir/name`, or `MissingFile` naming it.
fn require(dir: &Path, name: &str) -> Result<PathBuf, TokenizerError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TokenizerError::MissingFile(path))
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TokenizerError::MissingFile(path.to_path_buf()),
        _ => TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Upper bound on vocabulary ids (real vocabularies are far below it).
const MAX_VOCAB_ID: u32 = 1 << 24;

/// Reads a `{"piece": id, ...}` vocabulary with unique ids.
fn read_vocab_json(path: &Path) -> Result<HashMap<String, u32>, TokenizerError> {
    let bytes = read_file(path)?;
    let bad = |reason: String| TokenizerError::BadVocab {
        path: path.to_path_buf(),
        reason,
    };
    let vocab: HashMap<String, u32> = serde_json::from_slice(&bytes).map_err(|e| {
        let kind = if e.is_data() {
            "expected an object of piece -> id"
        } else {
            "invalid JSON"
        };
        bad(format!("{kind}: {e}"))
    })?;
    if vocab.is_empty() {
        return Err(bad("empty vocabulary".into()));
    }
    // Ids index dense tables, so an absurd id must not allocate gigabytes.
    if let Some((piece, id)) = vocab.iter().find(|(_, &id)| id >= MAX_VOCAB_ID) {
        return Err(bad(format!("id {id} of {piece:?} is out of range")));
    }
    let mut seen = std::collections::HashSet::with_capacity(vocab.len());
    if let Some((piece, id)) = vocab.iter().find(|(_, id)| !seen.insert(**id)) {
        return Err(bad(format!("id {id} is used twice (e.g. by {piece:?})")));
    }
    Ok(vocab)
}
