//! BART tokenizer: byte-level BPE via the `tokenizers` crate, either from
//! `tokenizer.json` or rebuilt from `vocab.json` + `merges.txt` the way HF's
//! BartTokenizer is configured (no prefix space, `<s> … </s>`, `<mask>` lstrip).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::TokenizerError;

const SPECIALS: [&str; 5] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];

/// Byte-level BPE tokenizer for BART models.
#[derive(Clone)]
pub struct BartTokenizer {
    // Boxed: the tokenizers struct is large and would bloat every `Tokenizer` enum value.
    inner: Box<Tokenizer>,
}

impl std::fmt::Debug for BartTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BartTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl BartTokenizer {
    /// Prefers `tokenizer.json`, else `vocab.json` + `merges.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let vocab = super::require(dir, "vocab.json")?;
        let merges = super::require(dir, "merges.txt")?;
        Self::from_vocab_merges(&vocab, &merges)
    }

    /// The longest token: byte-level BPE writes one byte per character of a token.
    pub fn max_token_bytes(&self) -> usize {
        self.inner
            .get_vocab(true)
            .keys()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(0)
    }

    pub fn from_tokenizer_json(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = super::read_file(path)?;
        let inner =
            Tokenizer::from_bytes(&bytes).map_err(|e| TokenizerError::BadTokenizerJson {
                path: PathBuf::from(path),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner: Box::new(inner),
        })
    }

    pub fn from_vocab_merges(
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self, TokenizerError> {
        let vocab = super::read_vocab_json(vocab_path)?;
        let merges = read_merges(merges_path)?;
        let bad = |path: &Path, reason: String| TokenizerError::BadMerges {
            path: PathBuf::from(path),
            reason,
        };
        let (bos, eos) = match (vocab.get("<s>"), vocab.get("</s>")) {
            (Some(&b), Some(&e)) => (b, e),
            _ => {
                return Err(TokenizerError::BadVocab {
                    path: PathBuf::from(vocab_path),
                    reason: "BART vocabulary needs <s> and </s>".into(),
                })
            }
        };
        let specials = special_tokens(&vocab);
        let vocab: Vocab = vocab.into_iter().collect();
        let mut builder = BPE::builder().vocab_and_merges(vocab, merges);
        if specials.iter().any(|t| t.content == "<unk>") {
            // Slow BartTokenizer maps bytes missing from the vocabulary to <unk>.
            builder = builder.unk_token("<unk>".into());
        }
        let bpe = builder
            .build()
            .map_err(|e| bad(merges_path, e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevel::default()))
            .with_post_processor(Some(
                RobertaProcessing::new(("</s>".into(), eos), ("<s>".into(), bos))
                    .trim_offsets(true)
                    .add_prefix_space(false),
            ));
        inner
            .add_special_tokens(specials)
            .map_err(|e| bad(merges_path, e.to_string()))?;
        Ok(Self {
            inner: Box::new(inner),
        })
    }

    /// Ids with `<s>` … `</s>`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode_fast(text, true).map_err(encode_err)?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TokenizerError> {
        let encs = self
            .inner
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(encode_err)?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// As [`Self::encode`], with each id's byte range in `text` (see [`super::token_ranges`];
    /// `<s>` and `</s>` get empty ones).
    pub fn encode_with_offsets(
        &self,
        text: &str,
    ) -> Result<(Vec<u32>, Vec<std::ops::Range<usize>>), TokenizerError> {
        let enc = self.inner.encode(text, true).map_err(encode_err)?;
        let specials = enc.get_special_tokens_mask();
        let mut seen_text = false;
        let starts: Vec<usize> = enc
            .get_offsets()
            .iter()
            .zip(specials)
            .map(|(&(start, _), &special)| match special {
                0 => {
                    seen_text = true;
                    start
                }
                _ if seen_text => text.len(),
                _ => 0,
            })
            .collect();
        let ranges = super::token_ranges(text, &starts);
        Ok((enc.get_ids().to_vec(), ranges))
    }

    /// `decode(ids, true)`, with each id's byte range in the text: a token starts where the
    /// text of the ids before it, decoded alone, stops agreeing with the whole text
    /// (byte-level tokens can split a character; such a token gets the character's
    /// remainder). Quadratic in the length: meant for sentences.
    pub fn decode_with_offsets(
        &self,
        ids: &[u32],
    ) -> Result<(String, Vec<std::ops::Range<usize>>), TokenizerError> {
        let text = self.decode(ids, true)?;
        let starts = (0..ids.len())
            .map(|i| Ok(common_prefix(&self.decode(&ids[..i], true)?, &text)))
            .collect::<Result<Vec<usize>, TokenizerError>>()?;
        let ranges = super::token_ranges(&text, &starts);
        Ok((text, ranges))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// Bytes of the longest common prefix of `a` and `b`, at a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

fn encode_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Encode(e.to_string())
}

/// Special tokens present in the vocabulary; `<mask>` swallows the space
/// before it, as in HF's BartTokenizer.
fn special_tokens(vocab: &HashMap<String, u32>) -> Vec<AddedToken> {
    SPECIALS
        .iter()
        .filter(|t| vocab.contains_key(**t))
        .map(|t| AddedToken::from(*t, true).lstrip(*t == "<mask>"))
        .collect()
}

/// Parses merges.txt: optional `#version` header, then `a b` per line.
fn read_merges(path: &Path) -> Result<Vec<(String, String)>, TokenizerError> {
    let bytes = super::read_file(path)?;
    let bad = |reason: String| TokenizerError::BadMerges {
        path: PathBuf::from(path),
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_owned(), b.to_owned()))
            }
            _ => return Err(bad(format!("line {} is not a merge pair", n + 1))),
        }
    }
    Ok(merges)
}
