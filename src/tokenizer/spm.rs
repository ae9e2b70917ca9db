//! SentencePiece unigram model: loading a `.spm` `ModelProto`, normalising,
//! Viterbi segmentation and piece decoding, following SentencePiece's C++
//! (`unigram_model.cc` EncodeOptimized, `sentencepiece_processor.cc`).
//! Scores are summed in f32 as SentencePiece does, so ties break identically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;

use super::normalizer::{Normalizer, SPACE_SYMBOL};
use super::proto::{self, ModelProto};
use super::trie::Trie;
use super::TokenizerError;

/// SentencePiece's penalty below the lowest piece score for unknown characters.
const UNK_PENALTY: f32 = 10.0;

#[derive(Debug, Clone)]
struct PieceInfo {
    piece: String,
    score: f32,
    kind: i32,
}

/// A loaded SentencePiece unigram model.
#[derive(Debug, Clone)]
pub struct SpmModel {
    pieces: Vec<PieceInfo>,
    piece_ids: HashMap<String, u32>,
    trie: Trie,
    normalizer: Normalizer,
    unk_id: u32,
    min_score: f32,
    max_score: f32,
    byte_fallback: bool,
    unk_surface: String,
    bos_id: i32,
    eos_id: i32,
    pad_id: i32,
}

/// One segment of the Viterbi path: byte range in the normalised text and piece id.
struct Segment {
    start: usize,
    end: usize,
    id: u32,
}

impl SpmModel {
    /// Loads a `.spm` file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = super::read_file(path)?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses a serialized `ModelProto`; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, TokenizerError> {
        let corrupt = |reason: String| TokenizerError::CorruptSpm {
            path: PathBuf::from(path),
            reason,
        };
        let model = ModelProto::decode(bytes).map_err(|e| corrupt(format!("protobuf: {e}")))?;
        Self::from_proto(model).map_err(corrupt)
    }

    fn from_proto(model: ModelProto) -> Result<Self, String> {
        let trainer = model.trainer_spec.ok_or("no trainer_spec")?;
        let norm_spec = model.normalizer_spec.ok_or("no normalizer_spec")?;
        if trainer.model_type_or_default() != proto::MODEL_UNIGRAM {
            return Err(format!(
                "model_type {} is not UNIGRAM (1)",
                trainer.model_type_or_default()
            ));
        }
        let pieces = read_pieces(&model.pieces)?;
        if let Some(n) = trainer.vocab_size.filter(|&n| n > 0) {
            if n as usize != pieces.len() {
                return Err(format!("{} pieces but vocab_size {n}", pieces.len()));
            }
        }
        let unk_id = find_unk(&pieces, trainer.unk_id_or_default())?;
        let user_defined = pieces
            .iter()
            .filter(|p| p.kind == proto::TYPE_USER_DEFINED)
            .map(|p| p.piece.clone())
            .collect();
        let normalizer = Normalizer::new(
            &norm_spec,
            user_defined,
            trainer.treat_whitespace_as_suffix.unwrap_or(false),
        )?;
        Ok(Self::assemble(pieces, normalizer, unk_id, &trainer))
    }

    fn assemble(
        pieces: Vec<PieceInfo>,
        normalizer: Normalizer,
        unk_id: u32,
        trainer: &proto::TrainerSpec,
    ) -> Self {
        let mut trie = Trie::new();
        let mut piece_ids = HashMap::with_capacity(pieces.len());
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN);
        for (id, p) in pieces.iter().enumerate() {
            piece_ids.entry(p.piece.clone()).or_insert(id as u32);
            // Only normal and user-defined pieces can be matched from text.
            if p.kind == proto::TYPE_NORMAL || p.kind == proto::TYPE_USER_DEFINED {
                trie.insert(p.piece.as_bytes(), id as u32);
            }
            if p.kind == proto::TYPE_NORMAL {
                min_score = min_score.min(p.score);
                max_score = max_score.max(p.score);
            }
        }
        if min_score > max_score {
            (min_score, max_score) = (0.0, 0.0);
        }
        Self {
            pieces,
            piece_ids,
            trie,
            normalizer,
            unk_id,
            min_score,
            max_score,
            byte_fallback: trainer.byte_fallback.unwrap_or(false),
            unk_surface: trainer.unk_surface_or_default().to_owned(),
            bos_id: trainer.bos_id_or_default(),
            eos_id: trainer.eos_id_or_default(),
            pad_id: trainer.pad_id_or_default(),
        }
    }

    /// Number of pieces in the model.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// (unk, bos, eos, pad) ids from the trainer spec; -1 means "none".
    pub fn special_ids(&self) -> (u32, i32, i32, i32) {
        (self.unk_id, self.bos_id, self.eos_id, self.pad_id)
    }

    /// The piece string of `id`.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.piece.as_str())
    }

    /// The id of `piece`, if it is in the model.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.piece_ids.get(piece).copied()
    }

    /// SentencePiece normalisation of `text` (whitespace escaped to `▁`).
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer.normalize(text)
    }

    /// Segments `text` into pieces, as `SentencePieceProcessor::Encode` with
    /// `out_type=str`: unknown runs are merged into one piece carrying their text.
    pub fn encode(&self, text: &str) -> Vec<String> {
        let normalized = self.normalize(text);
        let segments = self.viterbi(&normalized);
        self.segments_to_pieces(&normalized, &segments, None)
    }

    /// As [`Self::encode`], with the byte offset in `text` each piece starts at (where the
    /// first character it was normalised from is; see [`super::token_ranges`]).
    pub fn encode_with_starts(&self, text: &str) -> (Vec<String>, Vec<usize>) {
        let (normalized, origins) = self.normalizer.normalize_with_origins(text);
        let segments = self.viterbi(&normalized);
        let mut starts = Vec::with_capacity(segments.len());
        let pieces = self.segments_to_pieces(&normalized, &segments, Some(&mut starts));
        let starts = starts
            .into_iter()
            .map(|at| origins.get(at).copied().unwrap_or(text.len()))
            .collect();
        (pieces, starts)
    }

    /// Pieces of the segments; with `starts`, each piece's start in `normalized` too.
    fn segments_to_pieces(
        &self,
        normalized: &str,
        segments: &[Segment],
        mut starts: Option<&mut Vec<usize>>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(segments.len());
        let mut prev_unk = false;
        for seg in segments {
            let text = &normalized[seg.start..seg.end];
            let is_unk = seg.id == self.unk_id;
            let before = out.len();
            if is_unk && self.byte_fallback {
                out.extend(text.bytes().map(|b| format!("<0x{b:02X}>")));
            } else if is_unk && prev_unk {
                if let Some(last) = out.last_mut() {
                    last.push_str(text);
                }
            } else {
                out.push(text.to_owned());
            }
            if let Some(starts) = starts.as_deref_mut() {
                starts.extend(std::iter::repeat_n(seg.start, out.len() - before));
            }
            prev_unk = is_unk;
        }
        out
    }

    /// Best segmentation of the normalised text (SentencePiece's EncodeOptimized).
    fn viterbi(&self, text: &str) -> Vec<Segment> {
        #[derive(Clone, Copy)]
        struct Best {
            score: f32,
            start: usize,
            id: u32,
            set: bool,
        }
        let bytes = text.as_bytes();
        let unk_score = self.min_score - UNK_PENALTY;
        let empty = Best {
            score: 0.0,
            start: 0,
            id: 0,
            set: false,
        };
        let mut best = vec![empty; bytes.len() + 1];
        let relax = |best: &mut Vec<Best>, end: usize, score: f32, start: usize, id: u32| {
            let node = &mut best[end];
            if !node.set || score > node.score {
                *node = Best {
                    score,
                    start,
                    id,
                    set: true,
                };
            }
        };
        for (start, ch) in text.char_indices() {
            let here = best[start].score;
            let char_len = ch.len_utf8();
            let mut has_single = false;
            self.trie.for_each_prefix(&bytes[start..], |len, id| {
                let score = match self.pieces[id as usize].kind {
                    proto::TYPE_USER_DEFINED => len as f32 * self.max_score - 0.1,
                    _ => self.pieces[id as usize].score,
                };
                relax(&mut best, start + len, here + score, start, id);
                has_single |= len == char_len;
            });
            if !has_single {
                relax(
                    &mut best,
                    start + char_len,
                    here + unk_score,
                    start,
                    self.unk_id,
                );
            }
        }
        backtrack(&best.iter().map(|b| (b.start, b.id)).collect::<Vec<_>>())
    }

    /// SentencePiece's `DecodePieces`: control pieces vanish, the first piece's
    /// leading `▁` is consumed, `▁` becomes a space, byte pieces are reassembled.
    pub fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        self.decode_pieces_into(pieces, None)
    }

    /// As [`Self::decode_pieces`], with the length of the text once each piece is decoded
    /// (byte pieces that make one character together end where it does).
    pub fn decode_pieces_with_ends<S: AsRef<str>>(&self, pieces: &[S]) -> (String, Vec<usize>) {
        let mut ends = Vec::with_capacity(pieces.len());
        let text = self.decode_pieces_into(pieces, Some(&mut ends));
        (text, ends)
    }

    fn decode_pieces_into<S: AsRef<str>>(
        &self,
        pieces: &[S],
        mut ends: Option<&mut Vec<usize>>,
    ) -> String {
        let mut text = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        let (mut is_bos_ws, mut bos_ws_seen) = (true, false);
        // Byte pieces end when their bytes are flushed: `pending` of them wait.
        let mut pending = 0;
        let mut flush = |bytes: &mut Vec<u8>, text: &mut String, pending: &mut usize| {
            flush_bytes(bytes, text);
            if let Some(ends) = ends.as_deref_mut() {
                ends.extend(std::iter::repeat_n(text.len(), *pending));
            }
            *pending = 0;
        };
        for piece in pieces {
            let piece = piece.as_ref();
            let id = self.piece_to_id(piece);
            let kind = id.map_or(proto::TYPE_UNKNOWN, |i| self.pieces[i as usize].kind);
            if kind == proto::TYPE_BYTE {
                if let Some(b) = byte_piece_value(piece) {
                    bytes.push(b);
                    pending += 1;
                    continue;
                }
            }
            flush(&mut bytes, &mut text, &mut pending);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            let (surface, consumed) = self.decode_piece(piece, id, kind, is_bos_ws);
            bos_ws_seen = consumed;
            text.push_str(&surface);
            pending = 1;
            flush(&mut bytes, &mut text, &mut pending);
        }
        flush(&mut bytes, &mut text, &mut pending);
        text
    }

    fn decode_piece(&self, piece: &str, id: Option<u32>, kind: i32, bos: bool) -> (String, bool) {
        match kind {
            proto::TYPE_CONTROL => return (String::new(), false),
            // A piece unknown to this model is copied verbatim; the unk piece
            // itself shows as the unk surface.
            proto::TYPE_UNKNOWN if id == Some(self.unk_id) => {
                return (self.unk_surface.clone(), false)
            }
            proto::TYPE_UNKNOWN => return (piece.to_owned(), false),
            _ => {}
        }
        let n = &self.normalizer;
        let mut rest = piece;
        let mut consumed = false;
        if bos && (n.add_dummy_prefix || n.remove_extra_whitespaces) {
            if let Some(stripped) = rest.strip_prefix(SPACE_SYMBOL) {
                rest = stripped;
                consumed = true;
            }
        }
        (rest.replace(SPACE_SYMBOL, " "), consumed)
    }
}

fn backtrack(best: &[(usize, u32)]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut end = best.len() - 1;
    while end > 0 {
        let (start, id) = best[end];
        out.push(Segment { start, end, id });
        end = start;
    }
    out.reverse();
    out
}

fn read_pieces(raw: &[proto::SentencePiece]) -> Result<Vec<PieceInfo>, String> {
    if raw.is_empty() {
        return Err("no pieces".into());
    }
    raw.iter()
        .enumerate()
        .map(|(i, p)| {
            let piece = p.piece.clone().filter(|s| !s.is_empty());
            let piece = piece.ok_or_else(|| format!("piece {i} is empty"))?;
            let kind = p.kind();
            if !(proto::TYPE_NORMAL..=proto::TYPE_BYTE).contains(&kind) {
                return Err(format!("piece {i} has unknown type {kind}"));
            }
            let score = p.score.unwrap_or(0.0);
            if !score.is_finite() {
                return Err(format!("piece {i} has a non-finite score"));
            }
            Ok(PieceInfo { piece, score, kind })
        })
        .collect()
}

fn find_unk(pieces: &[PieceInfo], declared: i32) -> Result<u32, String> {
    let unk = pieces.iter().position(|p| p.kind == proto::TYPE_UNKNOWN);
    match unk {
        Some(i) if i as i32 == declared || declared < 0 => Ok(i as u32),
        Some(i) => Err(format!("unk piece at {i} but trainer unk_id {declared}")),
        None => Err("no UNKNOWN piece".into()),
    }
}

fn byte_piece_value(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    if !bytes.is_empty() {
        text.push_str(&String::from_utf8_lossy(bytes));
        bytes.clear();
    }
}
