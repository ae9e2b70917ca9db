//! The `tarjama.v1.Translator` service.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::try_join_all;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::article;
use super::context::{RequestContext, UsageParts};
use super::convert;
use super::state::{AppState, Engines};
use super::validate::{self, Limits, SummarizeJob, TranslateJob};
use crate::pipeline::{summarize_english, SourceLanguage, TranslatedText, Translator};
use crate::proto::{self, translator_server};

/// Texts of one stream translated at the same time; more wait (HTTP/2 flow control then
/// pushes back on the client).
const STREAM_TEXTS_IN_FLIGHT: usize = 32;

#[derive(Clone)]
pub struct TranslatorService {
    state: Arc<AppState>,
}

impl TranslatorService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

type StreamOut = ReceiverStream<Result<proto::TranslateResponse, Status>>;

#[tonic::async_trait]
impl translator_server::Translator for TranslatorService {
    async fn translate(
        &self,
        request: Request<proto::TranslateRequest>,
    ) -> Result<Response<proto::TranslateResponse>, Status> {
        let ctx = RequestContext::new("Translate", request.metadata());
        let deadline = ctx.deadline();
        let work = async {
            let engines = self.state.engines()?;
            let limits = self.state.limits(&engines);
            let job = validate::translate_request(request.into_inner(), &limits)?;
            tracing::Span::current().record("texts", job.texts.len());
            translate_job(&engines.translator, job, deadline).await
        };
        unary(ctx, work, |r| {
            r.translations
                .iter()
                .map(|t| (t.usage, t.timings))
                .collect()
        })
        .await
    }

    type TranslateStreamStream = StreamOut;

    async fn translate_stream(
        &self,
        request: Request<Streaming<proto::TranslateRequest>>,
    ) -> Result<Response<StreamOut>, Status> {
        let ctx = RequestContext::new("TranslateStream", request.metadata());
        let engines = self.state.engines().map_err(|s| ctx.refuse(s))?;
        let limits = self.state.limits(&engines);
        let translator = engines.translator.clone();
        let incoming = request.into_inner();
        Ok(stream_response(
            ctx,
            STREAM_TEXTS_IN_FLIGHT,
            move |tx, deadline| drive_stream(limits, translator, incoming, tx, deadline),
        ))
    }

    async fn process_article(
        &self,
        request: Request<proto::ArticleRequest>,
    ) -> Result<Response<proto::ArticleResponse>, Status> {
        let ctx = RequestContext::new("ProcessArticle", request.metadata());
        let deadline = ctx.deadline();
        let work = async {
            let engines = self.state.engines()?;
            let limits = self.state.limits(&engines);
            let job = validate::article_request(request.into_inner(), &limits)?;
            article::process(&engines, job, deadline).await
        };
        unary(ctx, work, |r| vec![(r.usage, r.timings)]).await
    }

    type ProcessArticleStreamStream = ReceiverStream<Result<proto::ArticleEvent, Status>>;

    async fn process_article_stream(
        &self,
        request: Request<proto::ArticleRequest>,
    ) -> Result<Response<Self::ProcessArticleStreamStream>, Status> {
        let ctx = RequestContext::new("ProcessArticleStream", request.metadata());
        let engines = self.state.engines().map_err(|s| ctx.refuse(s))?;
        let job = validate::article_request(request.into_inner(), &self.state.limits(&engines))
            .map_err(|s| ctx.refuse(s.into()))?;
        Ok(stream_response(ctx, 4, move |tx, deadline| async move {
            article::stream(&engines, job, deadline, &tx).await
        }))
    }

    async fn summarize(
        &self,
        request: Request<proto::SummarizeRequest>,
    ) -> Result<Response<proto::SummarizeResponse>, Status> {
        let ctx = RequestContext::new("Summarize", request.metadata());
        let deadline = ctx.deadline();
        let work = async {
            let engines = self.state.engines()?;
            let limits = self.state.limits(&engines);
            let job = validate::summarize_request(request.into_inner(), &limits)?;
            summarize_job(&engines, job, deadline).await
        };
        unary(ctx, work, |r| vec![(r.usage, r.timings)]).await
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        let ctx = RequestContext::new("ListModels", request.metadata());
        let work = async {
            let engines = self.state.engines()?;
            let mut models = vec![convert::model_info(engines.translator.info())];
            if let Some(summarizer) = &engines.summarizer {
                models.push(convert::model_info(summarizer.info()));
            }
            Ok(proto::ListModelsResponse { models })
        };
        unary(ctx, work, |_| Vec::new()).await
    }
}

/// Runs a unary RPC's work in the request's span and deadline, and logs its one line;
/// `parts` lists the usage and timings of what the response carries.
async fn unary<T>(
    ctx: RequestContext,
    work: impl Future<Output = Result<T, Status>>,
    parts: impl Fn(&T) -> Vec<UsageParts>,
) -> Result<Response<T>, Status> {
    let result = ctx.within_deadline(work).instrument(ctx.span()).await;
    ctx.finish(result.as_ref().map(parts));
    result.map(|r| ctx.response(r))
}

/// Runs a streaming RPC's producer on its own task; a failure (or the deadline) ends the
/// stream with its status. The producer returns the usage and timings of what it sent, for
/// the request's log line.
fn stream_response<T, F>(
    ctx: RequestContext,
    capacity: usize,
    produce: impl FnOnce(mpsc::Sender<Result<T, Status>>, Option<Instant>) -> F,
) -> Response<ReceiverStream<Result<T, Status>>>
where
    T: Send + 'static,
    F: Future<Output = Result<Vec<UsageParts>, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity);
    let response = ctx.response(ReceiverStream::new(rx));
    let span = ctx.span();
    let work = produce(tx.clone(), ctx.deadline());
    tokio::spawn(
        async move {
            let result = ctx.within_deadline(work).await;
            ctx.finish(result.as_ref().map(|parts| parts.to_vec()));
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        }
        .instrument(span),
    );
    response
}

async fn translate_job(
    translator: &Translator,
    job: TranslateJob,
    deadline: Option<Instant>,
) -> Result<proto::TranslateResponse, Status> {
    let TranslateJob {
        texts,
        language,
        options,
    } = job;
    let work = texts.into_iter().map(|input| {
        let options = &options;
        async move {
            let done = translator
                .translate(input.text, language, options, deadline)
                .await?;
            Ok::<_, Status>(convert::translation(input.id, done, translator.info()))
        }
    });
    let translations = try_join_all(work).await?;
    Ok(proto::TranslateResponse { translations })
}

async fn summarize_job(
    engines: &Engines,
    job: SummarizeJob,
    deadline: Option<Instant>,
) -> Result<proto::SummarizeResponse, Status> {
    let started = Instant::now();
    let (english, translation) = if job.arabic {
        let done = engines
            .translator
            .translate(job.text, SourceLanguage::Arabic, &job.translation, deadline)
            .await?;
        (done.text.clone(), Some(done))
    } else {
        (job.text, None)
    };
    let out = summarize_english(
        engines.summarizer.as_deref(),
        english,
        &job.summary,
        deadline,
    )
    .await?;
    let summary = convert::summary(&out);
    let queue = translation
        .as_ref()
        .map_or(Default::default(), |t| t.queue_time)
        + out.queue_time;
    let inference = translation
        .as_ref()
        .map_or(Default::default(), |t| t.inference_time)
        + out.inference_time;
    Ok(proto::SummarizeResponse {
        text: summary.text,
        method: summary.method,
        model: summary.model,
        input_truncated: summary.input_truncated,
        usage: summary.usage,
        timings: Some(proto::Timings {
            queue_ms: convert::ms(queue),
            inference_ms: convert::ms(inference),
            total_ms: convert::ms(started.elapsed()),
        }),
        translation: translation.map(|t| t.text).unwrap_or_default(),
    })
}

/// Reads requests from the stream and answers each text as soon as it is done. Stops (and
/// so cancels the work in flight) when the client goes away or any text fails.
async fn drive_stream(
    limits: Limits,
    translator: Arc<Translator>,
    mut incoming: Streaming<proto::TranslateRequest>,
    tx: mpsc::Sender<Result<proto::TranslateResponse, Status>>,
    deadline: Option<Instant>,
) -> Result<Vec<UsageParts>, Status> {
    let mut sent = Vec::new();
    let permits = Arc::new(Semaphore::new(STREAM_TEXTS_IN_FLIGHT));
    let mut running: JoinSet<(String, Result<TranslatedText, Status>)> = JoinSet::new();
    let mut input_open = true;
    while input_open || !running.is_empty() {
        tokio::select! {
            _ = tx.closed() => return Err(client_gone()),
            message = incoming.message(), if input_open => match message? {
                Some(request) => {
                    let job = validate::translate_request(request, &limits)?;
                    for input in job.texts {
                        let permit = permits.clone().acquire_owned().await.map_err(|_| Status::internal("stream closed"))?;
                        let translator = translator.clone();
                        let options = job.options.clone();
                        let language = job.language;
                        running.spawn(async move {
                            let result = translator.translate(input.text, language, &options, deadline).await;
                            drop(permit);
                            (input.id, result.map_err(Status::from))
                        });
                    }
                }
                None => input_open = false,
            },
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let (id, result) = joined.map_err(|e| Status::internal(format!("translation task failed: {e}")))?;
                let done = result.map_err(|s| Status::new(s.code(), format!("text `{id}`: {}", s.message())))?;
                let translation = convert::translation(id, done, translator.info());
                sent.push((translation.usage, translation.timings));
                let response = proto::TranslateResponse { translations: vec![translation] };
                if tx.send(Ok(response)).await.is_err() {
                    return Err(client_gone());
                }
            },
        }
    }
    Ok(sent)
}

/// How a stream whose client left is logged and counted; the client sees nothing more.
fn client_gone() -> Status {
    Status::cancelled("the client went away")
}
