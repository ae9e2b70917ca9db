//! ProcessArticle and ProcessArticleStream: title and body translated concurrently, the body
//! streamed paragraph by paragraph.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::Status;

use super::context::UsageTotals;
use super::convert;
use super::state::Engines;
use super::status::field_status;
use super::validate::ArticleJob;
use crate::pipeline::{
    summarize_english, PreparedText, TranslatedParagraph, TranslatedText, Translator,
};
use crate::proto::{self, process_article_stream_response::Event};

/// Paragraphs buffered between the translation and a slow client.
const PARAGRAPH_BUFFER: usize = 16;

/// Title and body prepared (a blank part is `None`), the article's cost admitted as a
/// whole before either is queued.
struct PreparedArticle {
    title: Option<PreparedText>,
    body: Option<PreparedText>,
}

async fn prepare_part(
    translator: &Translator,
    field: &str,
    text: &str,
    job: &ArticleJob,
) -> Result<Option<PreparedText>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let prepared = translator
        .prepare(text.to_string(), job.language)
        .await
        .map_err(|e| field_status(field, e))?;
    Ok(Some(prepared))
}

async fn prepare(translator: &Translator, job: &ArticleJob) -> Result<PreparedArticle, Status> {
    let (title, body) = tokio::try_join!(
        prepare_part(translator, "title", &job.title, job),
        prepare_part(translator, "body", &job.body, job),
    )?;
    let cost = [&title, &body]
        .into_iter()
        .flatten()
        .map(|p| translator.cost(p, &job.options))
        .fold(Default::default(), |a, b| a + b);
    translator
        .admit(cost)
        .map_err(|e| field_status("body", e))?;
    Ok(PreparedArticle { title, body })
}

/// Translates a prepared part (none when it was blank).
async fn run_part(
    translator: &Translator,
    part: Option<PreparedText>,
    job: &ArticleJob,
    deadline: Option<Instant>,
    progress: Option<&mpsc::Sender<TranslatedParagraph>>,
) -> Result<Option<TranslatedText>, Status> {
    let Some(part) = part else {
        return Ok(None);
    };
    let done = translator
        .run(part, &job.options, deadline, progress)
        .await?;
    Ok(Some(done))
}

pub async fn process(
    engines: &Engines,
    job: ArticleJob,
    deadline: Option<Instant>,
) -> Result<proto::ProcessArticleResponse, Status> {
    let translator = &engines.translator;
    let parts = prepare(translator, &job).await?;
    let (title, body) = tokio::try_join!(
        run_part(translator, parts.title, &job, deadline, None),
        run_part(translator, parts.body, &job, deadline, None),
    )?;
    let summary = summary(engines, &job, title.as_ref(), body.as_ref(), deadline).await?;
    let mut response = response(translator, &job, title, body);
    response.summary = summary;
    Ok(response)
}

/// The English article's summary (of the body; of the title when there is no body).
async fn summary(
    engines: &Engines,
    job: &ArticleJob,
    title: Option<&TranslatedText>,
    body: Option<&TranslatedText>,
    deadline: Option<Instant>,
) -> Result<Option<proto::Summary>, Status> {
    let Some(request) = &job.summary else {
        return Ok(None);
    };
    let Some(english) = body.or(title).map(|t| t.text.clone()) else {
        return Ok(None);
    };
    let out = summarize_english(engines.summarizer.as_deref(), english, request, deadline).await?;
    Ok(Some(convert::summary(&out)))
}

fn response(
    translator: &Translator,
    job: &ArticleJob,
    title: Option<TranslatedText>,
    body: Option<TranslatedText>,
) -> proto::ProcessArticleResponse {
    let totals = Totals::of(&[title.as_ref(), body.as_ref()]);
    let info = translator.info();
    proto::ProcessArticleResponse {
        id: job.id.clone(),
        title: title.as_ref().map(|t| t.text.clone()).unwrap_or_default(),
        title_segments: title
            .as_ref()
            .map_or_else(Vec::new, |t| convert::segments(&t.segments, 0)),
        body: body.as_ref().map(|t| t.text.clone()).unwrap_or_default(),
        segments: body.as_ref().map_or_else(Vec::new, |t| {
            convert::segments(&t.segments, job.body_offset)
        }),
        summary: None,
        detected_language: totals.language.to_string(),
        usage: Some(totals.usage()),
        timings: Some(totals.timings()),
        model: info.id.clone(),
        model_revision: info.revision.clone(),
    }
}

/// Streams the article: title, then each body paragraph as soon as it is done, then totals.
pub async fn stream(
    engines: &Engines,
    job: ArticleJob,
    deadline: Option<Instant>,
    tx: &mpsc::Sender<Result<proto::ProcessArticleStreamResponse, Status>>,
) -> Result<UsageTotals, Status> {
    let translator = &engines.translator;
    let parts = prepare(translator, &job).await?;
    let (paragraph_tx, mut paragraphs) = mpsc::channel(PARAGRAPH_BUFFER);
    let body = async {
        let done = run_part(translator, parts.body, &job, deadline, Some(&paragraph_tx)).await;
        drop(paragraph_tx);
        done
    };
    let forward = async {
        let title = run_part(translator, parts.title, &job, deadline, None).await?;
        let event = Event::Title(proto::ArticleTitle {
            id: job.id.clone(),
            text: title.as_ref().map(|t| t.text.clone()).unwrap_or_default(),
            segments: title
                .as_ref()
                .map_or_else(Vec::new, |t| convert::segments(&t.segments, 0)),
        });
        send(tx, event).await?;
        let mut count = 0u32;
        while let Some(p) = paragraphs.recv().await {
            if p.text.is_empty() {
                continue;
            }
            let event = Event::Paragraph(proto::ArticleParagraph {
                index: count,
                text: p.text,
                segments: convert::segments(&p.segments, job.body_offset),
            });
            send(tx, event).await?;
            count += 1;
        }
        Ok((title, count))
    };
    let (body, (title, count)) = tokio::try_join!(body, forward)?;
    let summary = summary(engines, &job, title.as_ref(), body.as_ref(), deadline).await?;
    let totals = Totals::of(&[title.as_ref(), body.as_ref()]);
    let info = translator.info();
    let (usage, timings) = (Some(totals.usage()), Some(totals.timings()));
    let done = Event::Done(proto::ArticleDone {
        id: job.id.clone(),
        paragraphs: count,
        detected_language: totals.language.to_string(),
        usage,
        timings,
        summary,
        model: info.id.clone(),
        model_revision: info.revision.clone(),
    });
    send(tx, done).await?;
    Ok(UsageTotals::of([(usage, timings)]))
}

async fn send(
    tx: &mpsc::Sender<Result<proto::ProcessArticleStreamResponse, Status>>,
    event: Event,
) -> Result<(), Status> {
    tx.send(Ok(proto::ProcessArticleStreamResponse {
        event: Some(event),
    }))
    .await
    // The client went away: stop, which drops (and so cancels) the work in flight.
    .map_err(|_| Status::cancelled("the client went away"))
}

/// Usage and timings of an article's parts together.
struct Totals {
    language: &'static str,
    input_tokens: usize,
    output_tokens: usize,
    sentences: usize,
    queue: Duration,
    inference: Duration,
    total: Duration,
}

impl Totals {
    fn of(parts: &[Option<&TranslatedText>]) -> Self {
        let parts: Vec<&TranslatedText> = parts.iter().flatten().copied().collect();
        Self {
            // The body decides; a title alone speaks for itself.
            language: parts.last().map_or("ar", |p| p.detected_language),
            input_tokens: parts.iter().map(|p| p.input_tokens).sum(),
            output_tokens: parts.iter().map(|p| p.output_tokens).sum(),
            sentences: parts.iter().map(|p| p.segments.len()).sum(),
            queue: parts.iter().map(|p| p.queue_time).max().unwrap_or_default(),
            inference: parts.iter().map(|p| p.inference_time).sum(),
            total: parts.iter().map(|p| p.total_time).max().unwrap_or_default(),
        }
    }

    fn usage(&self) -> proto::Usage {
        proto::Usage {
            input_tokens: convert::clamp(self.input_tokens),
            output_tokens: convert::clamp(self.output_tokens),
            sentences: convert::clamp(self.sentences),
        }
    }

    fn timings(&self) -> proto::Timings {
        proto::Timings {
            queue_ms: convert::ms(self.queue),
            inference_ms: convert::ms(self.inference),
            total_ms: convert::ms(self.total),
        }
    }
}
