//! MarianMT tokenizer (HF `MarianTokenizer` parity): source SentencePiece
//! pieces mapped through `vocab.json`, `</s>` appended; decoding maps ids back
//! to pieces and lets SentencePiece turn them into text. With a shared
//! vocabulary (`separate_vocabs: false`, all opus-mt models we use) transformers
//! 5 decodes with the *source* spm, so we do too; the target spm is not needed.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::spm::SpmModel;
use super::TokenizerError;

const UNK: &str = "<unk>";
const EOS: &str = "</s>";
const PAD: &str = "<pad>";
const SPACE_SYMBOL: char = '\u{2581}';

/// Marian tokenizer loaded from a model folder.
#[derive(Debug, Clone)]
pub struct MarianTokenizer {
    source: SpmModel,
    vocab: HashMap<String, u32>,
    /// id -> piece; `None` for ids absent from vocab.json.
    id_to_piece: Vec<Option<String>>,
    unk_id: u32,
    eos_id: u32,
    pad_id: Option<u32>,
    special_ids: HashSet<u32>,
}

impl MarianTokenizer {
    /// Loads `source.spm` and `vocab.json`; rejects `separate_vocabs: true`
    /// in `tokenizer_config.json` (a second target vocabulary is not supported).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        check_config(&dir.join("tokenizer_config.json"))?;
        let source = SpmModel::from_file(&super::require(dir, "source.spm")?)?;
        let vocab_path = super::require(dir, "vocab.json")?;
        let vocab = super::read_vocab_json(&vocab_path)?;
        Self::new(source, vocab, &vocab_path)
    }

    /// Builds from loaded parts; `vocab_path` is only used in error messages.
    pub fn new(
        source: SpmModel,
        vocab: HashMap<String, u32>,
        vocab_path: &Path,
    ) -> Result<Self, TokenizerError> {
        let missing = |tok: &str| TokenizerError::BadVocab {
            path: PathBuf::from(vocab_path),
            reason: format!("required token {tok} is missing"),
        };
        let unk_id = *vocab.get(UNK).ok_or_else(|| missing(UNK))?;
        let eos_id = *vocab.get(EOS).ok_or_else(|| missing(EOS))?;
        let pad_id = vocab.get(PAD).copied();
        let size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        let mut id_to_piece = vec![None; size];
        for (piece, &id) in &vocab {
            id_to_piece[id as usize] = Some(piece.clone());
        }
        let special_ids = [Some(unk_id), Some(eos_id), pad_id]
            .into_iter()
            .flatten()
            .collect();
        Ok(Self {
            source,
            vocab,
            id_to_piece,
            unk_id,
            eos_id,
            pad_id,
            special_ids,
        })
    }

    /// Source-side pieces of `text` (no `</s>`), including a leading `>>xx<<` code.
    pub fn pieces(&self, text: &str) -> Result<Vec<String>, TokenizerError> {
        let (code, rest) = split_language_code(text);
        let mut pieces: Vec<String> = code.map(str::to_owned).into_iter().collect();
        pieces.extend(self.source.encode(rest));
        Ok(pieces)
    }

    /// Model input ids: pieces through vocab.json (missing -> `<unk>`), then `</s>`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let pieces = self.pieces(text)?;
        let mut ids: Vec<u32> = pieces.iter().map(|p| self.piece_id(p)).collect();
        ids.push(self.eos_id);
        Ok(ids)
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TokenizerError> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// As [`Self::encode`], with each id's byte range in `text` (see [`super::token_ranges`];
    /// `</s>` gets an empty range at the end).
    pub fn encode_with_offsets(&self, text: &str) -> (Vec<u32>, Vec<Range<usize>>) {
        let (code, rest) = split_language_code(text);
        let mut starts: Vec<usize> = code.map(|_| 0).into_iter().collect();
        let mut ids: Vec<u32> = code.map(|c| self.piece_id(c)).into_iter().collect();
        let offset = text.len() - rest.len();
        let (pieces, piece_starts) = self.source.encode_with_starts(rest);
        ids.extend(pieces.iter().map(|p| self.piece_id(p)));
        starts.extend(piece_starts.into_iter().map(|s| s + offset));
        ids.push(self.eos_id);
        starts.push(text.len());
        let ranges = super::token_ranges(text, &starts);
        (ids, ranges)
    }

    /// Ids to text as HF `MarianTokenizer.decode`: special tokens are either
    /// skipped or kept verbatim, other pieces go through the spm, `▁`
    /// becomes a space and the result is stripped. Ids outside vocab.json
    /// decode as `<unk>`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        let mut out = String::new();
        let mut run: Vec<&str> = Vec::new();
        for &id in ids {
            let piece = self.id_piece(id);
            let special = piece.is_none() || self.special_ids.contains(&id);
            if special && skip_special_tokens {
                continue;
            }
            match piece {
                Some(p) if !special => run.push(p),
                _ => {
                    out.push_str(&self.source.decode_pieces(&run));
                    out.push_str(piece.unwrap_or(UNK));
                    out.push(' ');
                    run.clear();
                }
            }
        }
        out.push_str(&self.source.decode_pieces(&run));
        let out = out.replace(SPACE_SYMBOL, " ");
        Ok(python_strip(&out).to_owned())
    }

    /// `decode(ids, true)`, with each id's byte range in the text (special tokens: empty).
    pub fn decode_with_offsets(&self, ids: &[u32]) -> (String, Vec<Range<usize>>) {
        let mut run: Vec<&str> = Vec::with_capacity(ids.len());
        // Per id: whether it is decoded (not special).
        let kept: Vec<bool> = ids
            .iter()
            .map(|&id| match self.id_piece(id) {
                Some(p) if !self.special_ids.contains(&id) => {
                    run.push(p);
                    true
                }
                _ => false,
            })
            .collect();
        let (raw, ends) = self.source.decode_pieces_with_ends(&run);
        // `▁` becomes a space piece by piece, so that the ends follow.
        let mut text = String::with_capacity(raw.len());
        let mut prev = 0;
        let ends: Vec<usize> = ends
            .iter()
            .map(|&end| {
                text.push_str(&raw[prev..end].replace(SPACE_SYMBOL, " "));
                prev = end;
                text.len()
            })
            .collect();
        let stripped = python_strip(&text);
        let lead = text.len() - python_strip_start(&text).len();
        let mut pos = 0usize;
        let mut ends = ends.into_iter();
        let starts: Vec<usize> = kept
            .iter()
            .map(|&kept| {
                let start = pos.saturating_sub(lead).min(stripped.len());
                if kept {
                    pos = ends.next().unwrap_or(pos);
                }
                start
            })
            .collect();
        let ranges = super::token_ranges(stripped, &starts);
        (stripped.to_owned(), ranges)
    }

    /// Number of ids `encode` would return.
    pub fn token_count(&self, text: &str) -> Result<usize, TokenizerError> {
        Ok(self.pieces(text)?.len() + 1)
    }

    /// The longest piece in bytes (`▁` decodes to one space, so this is an upper bound).
    pub fn max_piece_bytes(&self) -> usize {
        self.vocab.keys().map(String::len).max().unwrap_or(0)
    }

    /// One past the largest id in vocab.json.
    pub fn vocab_size(&self) -> usize {
        self.id_to_piece.len()
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The id of a piece (or `<unk>`).
    pub fn piece_id(&self, piece: &str) -> u32 {
        self.vocab.get(piece).copied().unwrap_or(self.unk_id)
    }

    /// The piece of an id, if vocab.json has it.
    pub fn id_piece(&self, id: u32) -> Option<&str> {
        self.id_to_piece.get(id as usize).and_then(|p| p.as_deref())
    }

    /// The source SentencePiece model.
    pub fn source_spm(&self) -> &SpmModel {
        &self.source
    }
}

/// Only the shared-vocabulary layout is supported.
fn check_config(path: &Path) -> Result<(), TokenizerError> {
    if !path.is_file() {
        return Ok(());
    }
    let bytes = super::read_file(path)?;
    let bad = |reason: &str| TokenizerError::BadConfig {
        path: PathBuf::from(path),
        reason: reason.to_owned(),
    };
    let config: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("invalid JSON"))?;
    if config.get("separate_vocabs").and_then(|v| v.as_bool()) == Some(true) {
        return Err(bad(
            "separate_vocabs=true (target_vocab.json) is not supported",
        ));
    }
    Ok(())
}

/// HF keeps a leading `>>xx<<` target-language code as one token.
fn split_language_code(text: &str) -> (Option<&str>, &str) {
    if text.starts_with(">>") {
        if let Some(end) = text.find("<<") {
            return (Some(&text[..end + 2]), &text[end + 2..]);
        }
    }
    (None, text)
}

/// Python's `str.strip()`: Rust's whitespace plus the separators U+001C..U+001F.
fn python_strip(s: &str) -> &str {
    s.trim_matches(python_space)
}

fn python_strip_start(s: &str) -> &str {
    s.trim_start_matches(python_space)
}

fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}
