//! ProcessArticle and ProcessArticleStream: the pipeline's article mapped to protobuf, the
//! stream's events sent as the pipeline reports them.

use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;

use super::context::UsageTotals;
use super::convert;
use super::status::field_status;
use super::validate::ArticleJob;
use crate::pipeline::{
    translate_article, ArticleError, ArticlePart, ArticleProgress, Engines, ModelInfo, Totals,
    TranslatedArticle, TranslatedText,
};
use crate::proto::{self, process_article_stream_response::Event};

/// Progress events buffered between the pipeline and a slow client.
const EVENT_BUFFER: usize = 4;

/// The status of a failed article, naming the field at fault.
fn article_status(e: ArticleError) -> Status {
    let field = match e.part {
        ArticlePart::Title => "title",
        ArticlePart::Body => "body",
        ArticlePart::Whole => "",
    };
    field_status(field, e.error)
}

pub async fn process(
    engines: &Engines,
    job: ArticleJob,
    deadline: Option<Instant>,
) -> Result<proto::ProcessArticleResponse, Status> {
    let done = translate_article(engines, &job.article, deadline, None)
        .await
        .map_err(article_status)?;
    Ok(response(engines.translator.info(), &job, done))
}

fn segments(part: Option<&TranslatedText>, offset: usize) -> Vec<proto::Segment> {
    part.map_or_else(Vec::new, |t| convert::segments(&t.segments, offset))
}

fn text(part: Option<&TranslatedText>) -> String {
    part.map(|t| t.text.clone()).unwrap_or_default()
}

fn response(
    info: &ModelInfo,
    job: &ArticleJob,
    done: TranslatedArticle,
) -> proto::ProcessArticleResponse {
    let (title, body) = (done.title.as_ref(), done.body.as_ref());
    proto::ProcessArticleResponse {
        id: job.id.clone(),
        title: text(title),
        title_segments: segments(title, 0),
        body: text(body),
        segments: segments(body, job.body_offset),
        summary: done.summary.as_ref().map(convert::summary),
        detected_language: done.totals.language.to_string(),
        usage: Some(usage(&done.totals)),
        timings: Some(timings(&done.totals)),
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
    let (progress_tx, mut progress) = mpsc::channel(EVENT_BUFFER);
    let work = async {
        let done = translate_article(engines, &job.article, deadline, Some(&progress_tx)).await;
        drop(progress_tx);
        done.map_err(article_status)
    };
    let forward = async {
        let mut count = 0u32;
        while let Some(event) = progress.recv().await {
            let event = match event {
                ArticleProgress::Title(title) => Event::Title(proto::ArticleTitle {
                    id: job.id.clone(),
                    text: text(title.as_ref()),
                    segments: segments(title.as_ref(), 0),
                }),
                // An empty paragraph (nothing translated in it) is not an event.
                ArticleProgress::Paragraph(p) if p.text.is_empty() => continue,
                ArticleProgress::Paragraph(p) => {
                    count += 1;
                    Event::Paragraph(proto::ArticleParagraph {
                        index: count - 1,
                        text: p.text,
                        segments: convert::segments(&p.segments, job.body_offset),
                    })
                }
            };
            send(tx, event).await?;
        }
        Ok::<_, Status>(count)
    };
    let (done, count) = tokio::try_join!(work, forward)?;
    let info = engines.translator.info();
    let (usage, timings) = (Some(usage(&done.totals)), Some(timings(&done.totals)));
    let event = Event::Done(proto::ArticleDone {
        id: job.id.clone(),
        paragraphs: count,
        detected_language: done.totals.language.to_string(),
        usage,
        timings,
        summary: done.summary.as_ref().map(convert::summary),
        model: info.id.clone(),
        model_revision: info.revision.clone(),
        body: match &done.body {
            Some(html) if html.plain_text.is_some() => html.text.clone(),
            _ => String::new(),
        },
    });
    send(tx, event).await?;
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

fn usage(t: &Totals) -> proto::Usage {
    proto::Usage {
        input_tokens: convert::clamp(t.input_tokens),
        output_tokens: convert::clamp(t.output_tokens),
        sentences: convert::clamp(t.sentences),
    }
}

fn timings(t: &Totals) -> proto::Timings {
    proto::Timings {
        queue_ms: convert::ms(t.queue),
        inference_ms: convert::ms(t.inference),
        total_ms: convert::ms(t.total),
    }
}
