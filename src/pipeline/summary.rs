//! Choosing and running a summary method for English text.

use std::time::{Duration, Instant};

use super::{PipelineError, Summarizer};
use crate::model::GenerationOverrides;
use crate::summarize::{self, SummaryBudget};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SummaryMethod {
    /// Abstractive when a summarization model is loaded, else extractive.
    Auto,
    Extractive,
    Abstractive,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRequest {
    pub method: SummaryMethod,
    pub budget: SummaryBudget,
    /// Abstractive generation overrides.
    pub generation: GenerationOverrides,
}

impl Default for SummaryRequest {
    fn default() -> Self {
        Self {
            method: SummaryMethod::Auto,
            budget: SummaryBudget::default(),
            generation: GenerationOverrides::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SummaryOutput {
    pub text: String,
    /// The method that ran (never `Auto`).
    pub method: SummaryMethod,
    /// The abstractive model's id, or "extractive".
    pub model: String,
    pub input_truncated: bool,
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

/// Summarises English text by the requested method.
pub async fn summarize_english(
    summarizer: Option<&Summarizer>,
    english: String,
    request: &SummaryRequest,
    deadline: Option<Instant>,
) -> Result<SummaryOutput, PipelineError> {
    let abstractive = match (request.method, summarizer) {
        (SummaryMethod::Extractive, _) | (SummaryMethod::Auto, None) => None,
        (_, Some(s)) => Some(s),
        (SummaryMethod::Abstractive, None) => return Err(PipelineError::NoSummarizationModel),
    };
    match abstractive {
        Some(summarizer) => {
            let out = summarizer
                .summarize(english, &request.generation, deadline)
                .await?;
            Ok(SummaryOutput {
                text: out.text,
                method: SummaryMethod::Abstractive,
                model: summarizer.info().id.clone(),
                input_truncated: out.input_truncated,
                input_tokens: out.input_tokens,
                output_tokens: out.output_tokens,
                queue_time: out.queue_time,
                inference_time: out.inference_time,
            })
        }
        None => {
            let budget = request.budget;
            let started = Instant::now();
            let out = super::blocking::run("extractive summary", move |_| {
                Ok(summarize::extractive(&english, &budget))
            })
            .await?;
            Ok(SummaryOutput {
                text: out.text,
                method: SummaryMethod::Extractive,
                model: "extractive".into(),
                input_truncated: false,
                input_tokens: 0,
                output_tokens: 0,
                queue_time: Duration::ZERO,
                inference_time: started.elapsed(),
            })
        }
    }
}
