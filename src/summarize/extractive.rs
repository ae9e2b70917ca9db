//! Sentence ranking (TF-IDF + TextRank + lead bias) and budgeted selection.

use std::collections::BTreeMap;

use super::split::split_sentences;
use super::stopwords::is_stopword;

/// Sentence cap used when a budget sets neither limit.
pub const DEFAULT_MAX_SENTENCES: usize = 3;

/// Sentences ranked at most: the first ones of the text. TextRank is quadratic in the
/// sentence count (an n × n similarity matrix, n² work per iteration), and news puts what
/// matters first; without a cap one 100 kB request of short lines costs gigabytes.
pub const MAX_RANKED_SENTENCES: usize = 256;

const DAMPING: f64 = 0.85;
const MAX_ITERATIONS: usize = 200;
const TOLERANCE: f64 = 1e-6;

/// Size limits for a summary. With both `None`, at most
/// [`DEFAULT_MAX_SENTENCES`] sentences are taken; with only `max_words` set,
/// the sentence count is unlimited. `max_sentences: Some(0)` is treated as 1,
/// because a non-empty input never yields an empty summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SummaryBudget {
    pub max_sentences: Option<usize>,
    pub max_words: Option<usize>,
}

/// The chosen sentences joined by single spaces, and their indices into
/// [`split_sentences`] output, ascending (article order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractiveSummary {
    pub text: String,
    pub sentences: Vec<usize>,
}

/// Summarises English `text` by extracting its most central sentences.
///
/// Only the first [`MAX_RANKED_SENTENCES`] sentences are candidates, so memory and time are
/// bounded whatever the input (linear in its length, plus a fixed quadratic part).
///
/// Ranking: each sentence becomes a TF-IDF vector (lowercased alphanumeric
/// tokens of 2+ chars, stop words removed, `tf` = raw count,
/// `idf = ln((1 + n) / (1 + df)) + 1`). Edges are cosine similarities; the
/// centrality is weighted TextRank (PageRank, damping 0.85, until the L1
/// change is below 1e-6 or 200 iterations). News puts the key facts first, so
/// the final score is `textrank × n × (1 + 1 / (1 + position))`: the lead is
/// doubled, the second sentence ×1.5, fading towards ×1. Ties go to the
/// earlier sentence.
///
/// Selection: sentences are taken best-first until `max_sentences`; one that
/// would push the word count (whitespace-separated) past `max_words` is
/// skipped and later, shorter ones are still tried. If no sentence fits
/// `max_words` at all, the single best sentence is returned whole, exceeding
/// the word budget rather than truncating or returning nothing.
pub fn extractive(text: &str, budget: &SummaryBudget) -> ExtractiveSummary {
    let mut sentences = split_sentences(text);
    sentences.truncate(MAX_RANKED_SENTENCES);
    if sentences.is_empty() {
        return ExtractiveSummary::default();
    }
    let ranked = rank(&sentences);
    let mut chosen = select(&sentences, &ranked, budget);
    chosen.sort_unstable();
    let text = chosen
        .iter()
        .map(|&i| sentences[i].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    ExtractiveSummary {
        text,
        sentences: chosen,
    }
}

/// Sentence indices ordered best-first (score descending, position ascending).
fn rank(sentences: &[String]) -> Vec<usize> {
    let vectors = tfidf_vectors(sentences);
    let centrality = textrank(&similarity_matrix(&vectors));
    let n = sentences.len() as f64;
    let scores: Vec<f64> = centrality
        .iter()
        .enumerate()
        .map(|(pos, c)| c * n * (1.0 + 1.0 / (1.0 + pos as f64)))
        .collect();
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

fn select(sentences: &[String], ranked: &[usize], budget: &SummaryBudget) -> Vec<usize> {
    let max_sentences = match (budget.max_sentences, budget.max_words) {
        (Some(m), _) => m.max(1),
        (None, Some(_)) => usize::MAX,
        (None, None) => DEFAULT_MAX_SENTENCES,
    };
    let max_words = budget.max_words.unwrap_or(usize::MAX);
    let mut chosen = Vec::new();
    let mut words = 0usize;
    for &i in ranked {
        if chosen.len() >= max_sentences {
            break;
        }
        let w = word_count(&sentences[i]);
        if words.saturating_add(w) <= max_words {
            words += w;
            chosen.push(i);
        }
    }
    if chosen.is_empty() {
        chosen.extend(ranked.first().copied());
    }
    chosen
}

/// Number of whitespace-separated words, the unit of `max_words`.
fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

fn tokenize(sentence: &str) -> Vec<String> {
    sentence
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|t| t.chars().count() >= 2 && !is_stopword(t))
        .collect()
}

/// Sparse TF-IDF vectors; BTreeMap keeps every iteration order deterministic.
fn tfidf_vectors(sentences: &[String]) -> Vec<BTreeMap<String, f64>> {
    let counts: Vec<BTreeMap<String, f64>> = sentences
        .iter()
        .map(|s| {
            let mut tf = BTreeMap::new();
            for t in tokenize(s) {
                *tf.entry(t).or_insert(0.0) += 1.0;
            }
            tf
        })
        .collect();
    let mut df: BTreeMap<&str, f64> = BTreeMap::new();
    for tf in &counts {
        for term in tf.keys() {
            *df.entry(term.as_str()).or_insert(0.0) += 1.0;
        }
    }
    let n = sentences.len() as f64;
    let idf = |term: &str| ((1.0 + n) / (1.0 + df.get(term).copied().unwrap_or(0.0))).ln() + 1.0;
    counts
        .iter()
        .map(|tf| tf.iter().map(|(t, c)| (t.clone(), c * idf(t))).collect())
        .collect()
}

fn cosine(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> f64 {
    let dot: f64 = a.iter().filter_map(|(t, x)| b.get(t).map(|y| x * y)).sum();
    let norm = |v: &BTreeMap<String, f64>| v.values().map(|x| x * x).sum::<f64>().sqrt();
    let denom = norm(a) * norm(b);
    if denom > 0.0 {
        dot / denom
    } else {
        0.0
    }
}

/// Symmetric similarity matrix with a zero diagonal (no self-votes).
fn similarity_matrix(vectors: &[BTreeMap<String, f64>]) -> Vec<Vec<f64>> {
    let n = vectors.len();
    let mut m = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in (i + 1)..n {
            let s = cosine(&vectors[i], &vectors[j]);
            m[i][j] = s;
            m[j][i] = s;
        }
    }
    m
}

/// Weighted PageRank; a sentence with no edges spreads its score evenly so
/// the scores keep summing to 1.
fn textrank(sim: &[Vec<f64>]) -> Vec<f64> {
    let n = sim.len();
    let uniform = 1.0 / n as f64;
    let out_weight: Vec<f64> = sim.iter().map(|row| row.iter().sum()).collect();
    let mut scores = vec![uniform; n];
    for _ in 0..MAX_ITERATIONS {
        let dangling: f64 = (0..n)
            .filter(|&j| out_weight[j] <= 0.0)
            .map(|j| scores[j])
            .sum();
        let next: Vec<f64> = (0..n)
            .map(|i| {
                let inflow: f64 = (0..n)
                    .filter(|&j| out_weight[j] > 0.0)
                    .map(|j| sim[j][i] / out_weight[j] * scores[j])
                    .sum();
                (1.0 - DAMPING) * uniform + DAMPING * (inflow + dangling * uniform)
            })
            .collect();
        let delta: f64 = next.iter().zip(&scores).map(|(a, b)| (a - b).abs()).sum();
        scores = next;
        if delta < TOLERANCE {
            break;
        }
    }
    scores
}
