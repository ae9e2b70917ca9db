//! SentencePiece text normalisation, reimplemented to match `normalizer.cc`
//! byte for byte: longest-prefix rewriting with the precompiled charsmap (a
//! Darts-clone double array plus a blob of NUL-terminated replacements), then
//! whitespace handling (remove_extra_whitespaces, add_dummy_prefix,
//! escape_whitespaces). We do not use `tokenizers`' `Precompiled` because it
//! rewrites per grapheme cluster, which differs from SentencePiece on long
//! clusters (e.g. an Arabic letter with several diacritics).

use super::proto::NormalizerSpec;

/// The escaped whitespace symbol U+2581.
pub const SPACE_SYMBOL: &str = "\u{2581}";

/// Precompiled charsmap: double-array trie units and the replacement blob.
#[derive(Debug, Clone)]
struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl CharsMap {
    fn parse(blob: &[u8]) -> Result<Self, String> {
        let header: [u8; 4] = blob
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or("precompiled_charsmap shorter than its header")?;
        let trie_len = u32::from_le_bytes(header) as usize;
        let body = &blob[4..];
        if !trie_len.is_multiple_of(4) || trie_len > body.len() || trie_len == 0 {
            return Err(format!(
                "precompiled_charsmap has a bad trie size {trie_len}"
            ));
        }
        let units = body[..trie_len]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let normalized = body[trie_len..].to_vec();
        Ok(Self { units, normalized })
    }

    /// Longest key that prefixes `input`: (key length in bytes, blob offset).
    /// Follows Darts-clone's `commonPrefixSearch`; bounds are checked because
    /// the units come from an untrusted file.
    fn longest_prefix(&self, input: &[u8]) -> Option<(usize, usize)> {
        let unit = |pos: usize| self.units.get(pos).copied();
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut node = offset(unit(0)?);
        let mut best = None;
        for (i, &byte) in input.iter().enumerate() {
            node ^= byte as usize;
            let u = unit(node)?;
            if u & ((1 << 31) | 0xff) != byte as u32 {
                break;
            }
            node ^= offset(u);
            if (u >> 8) & 1 == 1 {
                let value = unit(node)? & 0x7fff_ffff;
                best = Some((i + 1, value as usize));
            }
        }
        best
    }

    /// The NUL-terminated replacement at `offset`, if it is valid UTF-8.
    fn replacement(&self, offset: usize) -> Option<&str> {
        let tail = self.normalized.get(offset..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).ok()
    }
}

/// Normaliser built from a `NormalizerSpec`.
#[derive(Debug, Clone)]
pub struct Normalizer {
    charsmap: Option<CharsMap>,
    /// User-defined pieces bypass normalisation (longest first).
    user_defined: Vec<String>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    pub treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    pub fn new(
        spec: &NormalizerSpec,
        mut user_defined: Vec<String>,
        treat_whitespace_as_suffix: bool,
    ) -> Result<Self, String> {
        let charsmap = match spec.precompiled_charsmap.as_deref() {
            Some(blob) if !blob.is_empty() => Some(CharsMap::parse(blob)?),
            _ => None,
        };
        user_defined.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Ok(Self {
            charsmap,
            user_defined,
            add_dummy_prefix: spec.add_dummy_prefix_or_default(),
            remove_extra_whitespaces: spec.remove_extra_whitespaces_or_default(),
            escape_whitespaces: spec.escape_whitespaces_or_default(),
            treat_whitespace_as_suffix,
        })
    }

    /// Normalises one prefix of `input` (non-empty): (replacement, bytes consumed).
    fn normalize_prefix<'a>(&'a self, input: &'a str) -> (&'a str, usize) {
        if let Some(p) = self
            .user_defined
            .iter()
            .find(|p| input.starts_with(p.as_str()))
        {
            return (&input[..p.len()], p.len());
        }
        if let Some(map) = &self.charsmap {
            if let Some((len, off)) = map.longest_prefix(input.as_bytes()) {
                if input.is_char_boundary(len) {
                    if let Some(rep) = map.replacement(off) {
                        return (rep, len);
                    }
                }
            }
        }
        let len = input.chars().next().map_or(input.len(), char::len_utf8);
        (&input[..len], len)
    }

    /// Normalises `text` exactly as SentencePiece's `Normalizer::Normalize`.
    pub fn normalize(&self, text: &str) -> String {
        self.normalize_into(text, None)
    }

    /// As [`Self::normalize`], with the byte offset in `text` that each byte of the result
    /// came from (the start of the input character, or run of characters, it rewrites;
    /// the dummy prefix points at the first character kept).
    pub fn normalize_with_origins(&self, text: &str) -> (String, Vec<usize>) {
        let mut origins = Vec::with_capacity(text.len() + 8);
        let out = self.normalize_into(text, Some(&mut origins));
        (out, origins)
    }

    fn normalize_into(&self, text: &str, origins: Option<&mut Vec<usize>>) -> String {
        let mut out = Output {
            text: String::with_capacity(text.len() + 8),
            origins,
            space: if self.escape_whitespaces {
                SPACE_SYMBOL
            } else {
                " "
            },
        };
        let mut input = text;
        if self.remove_extra_whitespaces {
            // Drop leading characters that normalise to a single space.
            while !input.is_empty() {
                let (rep, used) = self.normalize_prefix(input);
                if rep != " " {
                    break;
                }
                input = &input[used..];
            }
        }
        if input.is_empty() {
            return String::new();
        }
        let at = |input: &str| text.len() - input.len();
        if self.add_dummy_prefix && !self.treat_whitespace_as_suffix {
            out.push_space(at(input));
        }
        let mut prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut rep, used) = self.normalize_prefix(input);
            if prev_space {
                rep = rep.trim_start_matches(' ');
            }
            if !rep.is_empty() {
                for piece in rep.split_inclusive(' ') {
                    match piece.strip_suffix(' ') {
                        Some(head) => {
                            out.push(head, at(input));
                            out.push_space(at(input));
                        }
                        None => out.push(piece, at(input)),
                    }
                }
                prev_space = rep.ends_with(' ');
            }
            input = &input[used..];
            if !self.remove_extra_whitespaces {
                prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.text.ends_with(out.space) {
                out.truncate(out.text.len() - out.space.len());
            }
        }
        if self.add_dummy_prefix && self.treat_whitespace_as_suffix {
            out.push_space(text.len());
        }
        out.text
    }
}

/// Normalised text being built, and where each of its bytes came from when asked.
struct Output<'a> {
    text: String,
    origins: Option<&'a mut Vec<usize>>,
    space: &'static str,
}

impl Output<'_> {
    fn push(&mut self, s: &str, origin: usize) {
        self.text.push_str(s);
        if let Some(o) = self.origins.as_deref_mut() {
            o.extend(std::iter::repeat_n(origin, s.len()));
        }
    }

    fn push_space(&mut self, origin: usize) {
        self.push(self.space, origin);
    }

    fn truncate(&mut self, len: usize) {
        self.text.truncate(len);
        if let Some(o) = self.origins.as_deref_mut() {
            o.truncate(len);
        }
    }
}
