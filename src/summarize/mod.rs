//! Extractive summarisation of English news text.
//!
//! The pipeline is: split into sentences, rank them by TextRank centrality
//! over TF-IDF cosine similarity, boost early sentences (news lead bias), then
//! pick the best sentences within a [`SummaryBudget`] and emit them in article
//! order. See [`extractive`] for the exact formulas.

mod extractive;
mod split;
mod stopwords;

pub use extractive::{
    extractive, ExtractiveSummary, SummaryBudget, DEFAULT_MAX_SENTENCES, MAX_RANKED_SENTENCES,
};
pub use split::split_sentences;
