//! Articles and summaries of whole texts: what is translated, in which order, which summary
//! is made, and the totals. The API only maps these to and from protobuf.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{
    summarize_english, PipelineError, PreparedText, SourceLanguage, SourceText, Summarizer,
    SummaryOutput, SummaryRequest, TextFormat, TranslatedParagraph, TranslatedText, Translator,
};
use crate::model::GenerationOverrides;

/// Paragraphs buffered between the body's translation and the title, which goes first.
const PARAGRAPH_BUFFER: usize = 16;

/// The loaded models.
pub struct Engines {
    pub translator: Arc<Translator>,
    pub summarizer: Option<Arc<Summarizer>>,
}

/// A checked article.
pub struct Article {
    pub title: String,
    pub body: String,
    /// Of title and body alike.
    pub format: TextFormat,
    pub language: SourceLanguage,
    pub options: GenerationOverrides,
    /// `None`: no summary wanted.
    pub summary: Option<SummaryRequest>,
}

/// Which part of an article a failure belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ArticlePart {
    Title,
    Body,
    /// Title and body together (their joint cost), or the summary of their translation.
    Whole,
}

#[derive(Debug)]
pub struct ArticleError {
    pub part: ArticlePart,
    pub error: PipelineError,
}

impl ArticleError {
    fn of(part: ArticlePart) -> impl Fn(PipelineError) -> Self {
        move |error| Self { part, error }
    }
}

/// What a streamed article reports as it goes: the title first, then each body paragraph
/// in order.
pub enum ArticleProgress {
    Title(Option<TranslatedText>),
    Paragraph(TranslatedParagraph),
}

pub struct TranslatedArticle {
    pub title: Option<TranslatedText>,
    pub body: Option<TranslatedText>,
    pub summary: Option<SummaryOutput>,
    pub totals: Totals,
}

/// Usage and timings of an article's parts together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// The body's language decides; a title alone speaks for itself.
    pub language: &'static str,
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub sentences: usize,
    pub queue: Duration,
    pub inference: Duration,
    pub total: Duration,
}

impl Totals {
    fn of(parts: &[Option<&TranslatedText>]) -> Self {
        let parts: Vec<&TranslatedText> = parts.iter().flatten().copied().collect();
        Self {
            language: parts.last().map_or("ar", |p| p.detected_language),
            input_tokens: parts.iter().map(|p| p.input_tokens).sum(),
            output_tokens: parts.iter().map(|p| p.output_tokens).sum(),
            sentences: parts.iter().map(|p| p.segments.len()).sum(),
            queue: parts.iter().map(|p| p.queue_time).max().unwrap_or_default(),
            inference: parts.iter().map(|p| p.inference_time).sum(),
            total: parts.iter().map(|p| p.total_time).max().unwrap_or_default(),
        }
    }
}

/// Title and body prepared (a blank part is `None`), their cost admitted as one call.
async fn prepare(
    translator: &Translator,
    article: &Article,
) -> Result<(Option<PreparedText>, Option<PreparedText>), ArticleError> {
    let part = |text: &str, which: ArticlePart| {
        let text = text.to_string();
        async move {
            if text.trim().is_empty() {
                return Ok(None);
            }
            let text = SourceText {
                text,
                format: article.format,
            };
            translator
                .prepare(text, article.language)
                .await
                .map(Some)
                .map_err(ArticleError::of(which))
        }
    };
    let (title, body) = tokio::try_join!(
        part(&article.title, ArticlePart::Title),
        part(&article.body, ArticlePart::Body),
    )?;
    let cost = [&title, &body]
        .into_iter()
        .flatten()
        .map(|p| translator.cost(p, &article.options))
        .fold(Default::default(), |a, b| a + b);
    translator
        .admit(cost)
        .map_err(ArticleError::of(ArticlePart::Whole))?;
    Ok((title, body))
}

async fn run_part(
    translator: &Translator,
    part: Option<PreparedText>,
    which: ArticlePart,
    article: &Article,
    deadline: Option<Instant>,
    paragraphs: Option<&mpsc::Sender<TranslatedParagraph>>,
) -> Result<Option<TranslatedText>, ArticleError> {
    let Some(part) = part else {
        return Ok(None);
    };
    translator
        .run(part, &article.options, deadline, paragraphs)
        .await
        .map(Some)
        .map_err(ArticleError::of(which))
}

/// Translates an article (title and body side by side) and summarises its English. With
/// `progress`, the title is sent as soon as it is done, then each body paragraph in order.
pub async fn translate_article(
    engines: &Engines,
    article: &Article,
    deadline: Option<Instant>,
    progress: Option<&mpsc::Sender<ArticleProgress>>,
) -> Result<TranslatedArticle, ArticleError> {
    let translator = &engines.translator;
    let (title, body) = prepare(translator, article).await?;
    let (paragraph_tx, mut paragraphs) = mpsc::channel(PARAGRAPH_BUFFER);
    let body = async {
        let paragraph_tx = progress.map(|_| paragraph_tx);
        run_part(
            translator,
            body,
            ArticlePart::Body,
            article,
            deadline,
            paragraph_tx.as_ref(),
        )
        .await
    };
    let title = async {
        let title = run_part(
            translator,
            title,
            ArticlePart::Title,
            article,
            deadline,
            None,
        )
        .await?;
        if let Some(progress) = progress {
            // A receiver that went away wants nothing more; the caller notices.
            let _ = progress.send(ArticleProgress::Title(title.clone())).await;
            while let Some(p) = paragraphs.recv().await {
                let _ = progress.send(ArticleProgress::Paragraph(p)).await;
            }
        }
        Ok(title)
    };
    let (body, title) = tokio::try_join!(body, title)?;
    let summary = summary(engines, article, title.as_ref(), body.as_ref(), deadline)
        .await
        .map_err(ArticleError::of(ArticlePart::Whole))?;
    let totals = Totals::of(&[title.as_ref(), body.as_ref()]);
    Ok(TranslatedArticle {
        title,
        body,
        summary,
        totals,
    })
}

/// The English article's summary (of the body; of the title when there is no body).
async fn summary(
    engines: &Engines,
    article: &Article,
    title: Option<&TranslatedText>,
    body: Option<&TranslatedText>,
    deadline: Option<Instant>,
) -> Result<Option<SummaryOutput>, PipelineError> {
    let Some(request) = &article.summary else {
        return Ok(None);
    };
    let Some(english) = body.or(title).map(|t| t.english().to_string()) else {
        return Ok(None);
    };
    let out = summarize_english(engines.summarizer.as_deref(), english, request, deadline).await?;
    Ok(Some(out))
}

/// A summary of a text, translated first when it is Arabic.
pub struct SummarizedText {
    pub summary: SummaryOutput,
    /// The English that was summarised, when the text was translated.
    pub translation: Option<TranslatedText>,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub total_time: Duration,
}

/// Summarises `text`: English as it is, Arabic translated with `translation` first.
pub async fn summarize_text(
    engines: &Engines,
    text: String,
    arabic: bool,
    request: &SummaryRequest,
    translation: &GenerationOverrides,
    deadline: Option<Instant>,
) -> Result<SummarizedText, PipelineError> {
    let started = Instant::now();
    let (english, translation) = if arabic {
        let done = engines
            .translator
            .translate(
                SourceText::plain(text),
                SourceLanguage::Arabic,
                translation,
                deadline,
            )
            .await?;
        (done.text.clone(), Some(done))
    } else {
        (text, None)
    };
    let summary =
        summarize_english(engines.summarizer.as_deref(), english, request, deadline).await?;
    let (queue, inference) = translation
        .as_ref()
        .map_or((Duration::ZERO, Duration::ZERO), |t| {
            (t.queue_time, t.inference_time)
        });
    Ok(SummarizedText {
        queue_time: queue + summary.queue_time,
        inference_time: inference + summary.inference_time,
        total_time: started.elapsed(),
        summary,
        translation,
    })
}
