//! Requests are checked once, here, and turned into domain values; nothing downstream
//! re-validates. Every problem is reported with the field at fault.

use std::collections::HashSet;

use crate::model::GenerationOverrides;
use crate::pipeline::{
    Article, SourceLanguage, SourceText, SummaryMethod, SummaryRequest, TextFormat, MAX_BEAM_SIZE,
};
use crate::proto;
use crate::summarize::SummaryBudget;

/// Limits a request must respect.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_input_chars: usize,
    pub max_texts_per_request: usize,
    /// Longest generation the model allows.
    pub max_output_tokens: usize,
    /// Longest generation the summarization model allows (0: none loaded).
    pub max_summary_tokens: usize,
}

/// Bounds of the extractive budget.
const MAX_SUMMARY_SENTENCES: u32 = 50;
const MAX_SUMMARY_WORDS: u32 = 5000;

/// Characters of a client string (id, language code) quoted in a violation.
const QUOTED_CHARS: usize = 64;

fn quoted(s: &str) -> String {
    crate::text::clip(s, QUOTED_CHARS)
}

/// A field and what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
pub struct InvalidRequest(pub Vec<Violation>);

pub struct TextJob {
    pub id: String,
    pub text: SourceText,
}

pub struct TranslateJob {
    pub texts: Vec<TextJob>,
    pub language: SourceLanguage,
    pub options: GenerationOverrides,
}

/// A checked article, with the client's id and where the body starts in the client's
/// `body` field (in characters) when the title was taken from its first line.
pub struct ArticleJob {
    pub id: String,
    pub body_offset: usize,
    pub article: Article,
}

/// A checked Summarize call.
pub struct SummarizeJob {
    pub text: String,
    /// Translate first.
    pub arabic: bool,
    pub summary: SummaryRequest,
    pub translation: GenerationOverrides,
}

#[derive(Default)]
struct Checker(Vec<Violation>);

impl Checker {
    fn fail(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, InvalidRequest> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(InvalidRequest(self.0))
        }
    }
}

pub fn translate_request(
    request: proto::TranslateRequest,
    limits: &Limits,
) -> Result<TranslateJob, InvalidRequest> {
    let mut check = Checker::default();
    let language = language_pair(
        &mut check,
        ("source_language", &request.source_language),
        ("target_language", &request.target_language),
    );
    let options = translation_options(
        &mut check,
        "options",
        request.options.as_ref(),
        limits.max_output_tokens,
    );
    if request.texts.is_empty() {
        check.fail("texts", "at least one text is required");
    }
    if request.texts.len() > limits.max_texts_per_request {
        check.fail(
            "texts",
            format!(
                "{} texts sent; at most {} are accepted per request (split the batch, or use TranslateStream)",
                request.texts.len(),
                limits.max_texts_per_request
            ),
        );
    }
    let mut seen = HashSet::new();
    for (i, input) in request.texts.iter().enumerate() {
        text_field(&mut check, &format!("texts[{i}].text"), &input.text, limits);
        text_format(&mut check, &format!("texts[{i}].format"), input.format);
        if !input.id.is_empty() && !seen.insert(input.id.as_str()) {
            check.fail(
                format!("texts[{i}].id"),
                format!(
                    "id `{}` is used twice in this request; ids must be unique",
                    quoted(&input.id)
                ),
            );
        }
    }
    let texts = request
        .texts
        .into_iter()
        .map(|t| TextJob {
            id: t.id,
            text: SourceText {
                text: t.text,
                format: format_of(t.format),
            },
        })
        .collect();
    check.finish(TranslateJob {
        texts,
        language,
        options,
    })
}

fn text_format(check: &mut Checker, field: &str, format: i32) {
    if proto::TextFormat::try_from(format).is_err() {
        check.fail(
            field,
            format!("unknown format {format}: use TEXT_FORMAT_PLAIN or TEXT_FORMAT_HTML"),
        );
    }
}

/// A checked `TextFormat` (unknown values were refused).
fn format_of(format: i32) -> TextFormat {
    match proto::TextFormat::try_from(format) {
        Ok(proto::TextFormat::Html) => TextFormat::Html,
        _ => TextFormat::Plain,
    }
}

fn text_field(check: &mut Checker, field: &str, text: &str, limits: &Limits) {
    if text.trim().is_empty() {
        check.fail(field, "the text is empty");
        return;
    }
    let chars = text.chars().count();
    if chars > limits.max_input_chars {
        check.fail(
            field,
            format!(
                "the text has {chars} characters; the limit is {} characters",
                limits.max_input_chars
            ),
        );
    }
}

fn language_pair(
    check: &mut Checker,
    source: (&str, &str),
    target: (&str, &str),
) -> SourceLanguage {
    let language = match source.1.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => SourceLanguage::Auto,
        "ar" => SourceLanguage::Arabic,
        other => {
            check.fail(
                source.0,
                format!("unknown language pair `{}` → `en`: this server translates `ar` (or `auto`) into `en`", quoted(other)),
            );
            SourceLanguage::Auto
        }
    };
    match target.1.trim().to_ascii_lowercase().as_str() {
        "" | "en" => {}
        other => check.fail(
            target.0,
            format!(
                "unknown language pair → `{}`: the only target language is `en`",
                quoted(other)
            ),
        ),
    }
    language
}

fn translation_options(
    check: &mut Checker,
    prefix: &str,
    options: Option<&proto::TranslationOptions>,
    max_output_tokens: usize,
) -> GenerationOverrides {
    let Some(options) = options else {
        return GenerationOverrides::default();
    };
    let num_beams = options.beam_size.map(|b| b as usize);
    if let Some(beams) = num_beams {
        if beams == 0 || beams > MAX_BEAM_SIZE {
            check.fail(
                format!("{prefix}.beam_size"),
                format!("beam size {beams} is out of range: use 1 (greedy) to {MAX_BEAM_SIZE}, or leave it unset for the model default"),
            );
        }
    }
    let max_new_tokens = options.max_output_tokens.map(|m| m as usize);
    if let Some(max) = max_new_tokens {
        if max == 0 || max > max_output_tokens {
            check.fail(
                format!("{prefix}.max_output_tokens"),
                format!("{max} is out of range: use 1 to {max_output_tokens}, or leave it unset"),
            );
        }
    }
    let penalty = options.length_penalty;
    let length_penalty = if penalty == 0.0 {
        None
    } else if !(penalty.is_finite() && penalty > 0.0 && penalty <= 5.0) {
        check.fail(
            format!("{prefix}.length_penalty"),
            format!("{penalty} is out of range: use a value in (0, 5], or 0 for the model default"),
        );
        None
    } else {
        Some(penalty)
    };
    GenerationOverrides {
        num_beams,
        max_new_tokens,
        length_penalty,
        ..Default::default()
    }
}

pub fn article_request(
    request: proto::ProcessArticleRequest,
    limits: &Limits,
) -> Result<ArticleJob, InvalidRequest> {
    let mut check = Checker::default();
    let language = language_pair(
        &mut check,
        ("source_language", &request.source_language),
        ("target_language", ""),
    );
    let options = translation_options(
        &mut check,
        "options",
        request.options.as_ref(),
        limits.max_output_tokens,
    );
    let summary = summary_options(&mut check, request.summary_options.as_ref(), limits, true);
    text_format(&mut check, "format", request.format);
    if format_of(request.format) == TextFormat::Html && request.title_from_first_line {
        check.fail(
            "title_from_first_line",
            "lines mean nothing in HTML: send the title (it may be an <h1>) in `title`",
        );
    }
    let (title, body, body_offset) =
        if request.title.trim().is_empty() && request.title_from_first_line {
            split_first_line(&request.body)
        } else {
            (request.title.clone(), request.body.clone(), 0)
        };
    if title.trim().is_empty() && body.trim().is_empty() {
        check.fail("body", "the article is empty: give a title or a body");
    }
    let chars = request.title.chars().count() + request.body.chars().count();
    if chars > limits.max_input_chars {
        check.fail(
            "body",
            format!(
                "the article has {chars} characters (title and body); the limit is {} characters",
                limits.max_input_chars
            ),
        );
    }
    check.finish(ArticleJob {
        id: request.id,
        body_offset,
        article: Article {
            title,
            body,
            format: format_of(request.format),
            language,
            options,
            summary,
        },
    })
}

pub fn summarize_request(
    request: proto::SummarizeRequest,
    limits: &Limits,
) -> Result<SummarizeJob, InvalidRequest> {
    let mut check = Checker::default();
    text_field(&mut check, "text", &request.text, limits);
    let arabic = match request.language.trim().to_ascii_lowercase().as_str() {
        "ar" => true,
        "en" => false,
        "" | "auto" => crate::text::detect_language(&request.text).needs_translation(),
        other => {
            check.fail(
                "language",
                format!(
                    "unknown language `{}`: use `en`, `ar`, or leave it empty to detect",
                    quoted(other)
                ),
            );
            false
        }
    };
    let translation = translation_options(
        &mut check,
        "translation_options",
        request.translation_options.as_ref(),
        limits.max_output_tokens,
    );
    let summary =
        summary_options(&mut check, request.options.as_ref(), limits, false).unwrap_or_default();
    check.finish(SummarizeJob {
        text: request.text,
        arabic,
        summary,
        translation,
    })
}

/// `None` when the client asked for no summary (allowed for articles only).
fn summary_options(
    check: &mut Checker,
    options: Option<&proto::SummaryOptions>,
    limits: &Limits,
    none_allowed: bool,
) -> Option<SummaryRequest> {
    let Some(options) = options else {
        return Some(SummaryRequest::default());
    };
    let method = match proto::SummaryMethod::try_from(options.method) {
        Ok(proto::SummaryMethod::Unspecified) => SummaryMethod::Auto,
        Ok(proto::SummaryMethod::Extractive) => SummaryMethod::Extractive,
        Ok(proto::SummaryMethod::Abstractive) => SummaryMethod::Abstractive,
        Ok(proto::SummaryMethod::None) if none_allowed => return None,
        Ok(proto::SummaryMethod::None) => {
            check.fail(
                "options.method",
                "SUMMARY_METHOD_NONE is for articles only; Summarize always makes a summary",
            );
            SummaryMethod::Auto
        }
        Err(_) => {
            check.fail(
                "summary_options.method",
                format!("unknown method {}", options.method),
            );
            SummaryMethod::Auto
        }
    };
    let bounded = |check: &mut Checker, field: &str, value: u32, max: u32| {
        if value > max {
            check.fail(
                format!("summary_options.{field}"),
                format!("{value} is over the limit of {max}"),
            );
        }
        (value > 0).then_some(value as usize)
    };
    let budget = SummaryBudget {
        max_sentences: bounded(
            check,
            "max_sentences",
            options.max_sentences,
            MAX_SUMMARY_SENTENCES,
        ),
        max_words: bounded(check, "max_words", options.max_words, MAX_SUMMARY_WORDS),
    };
    let as_translation = proto::TranslationOptions {
        beam_size: options.beam_size,
        max_output_tokens: options.max_output_tokens,
        length_penalty: options.length_penalty,
    };
    let max_tokens = limits.max_summary_tokens.max(1);
    let generation =
        translation_options(check, "summary_options", Some(&as_translation), max_tokens);
    Some(SummaryRequest {
        method,
        budget,
        generation,
    })
}

/// (first non-empty line, the rest, chars before the rest).
fn split_first_line(text: &str) -> (String, String, usize) {
    let mut consumed = 0;
    for line in text.split_inclusive('\n') {
        consumed += line.chars().count();
        if !line.trim().is_empty() {
            let rest: String = text.chars().skip(consumed).collect();
            return (line.trim().to_string(), rest, consumed);
        }
    }
    (String::new(), String::new(), consumed)
}
