//! The `tarjama.v1.TranslationService` service.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use std::collections::VecDeque;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::article;
use super::context::{CallPolicy, RequestContext, UsageParts, UsageTotals};
use super::convert;
use super::state::AppState;
use super::status::field_status;
use super::validate::{self, Limits, SummarizeJob, TextJob, TranslateJob};
use crate::model::GenerationOverrides;
use crate::pipeline::{
    summarize_text, Engines, SourceLanguage, TextError, TranslatedText, Translator,
};
use crate::proto::{self, translation_service_server};

/// Texts of one stream in flight (translating, or translated and not yet handed to the
/// transport); more wait, and the stream stops reading (HTTP/2 flow control then pushes back
/// on the client).
const STREAM_TEXTS_IN_FLIGHT: usize = 32;

/// Finished responses buffered between a stream's producer and the transport.
const STREAM_BUFFER: usize = 4;

#[derive(Clone)]
pub struct TarjamaService {
    state: Arc<AppState>,
}

impl TarjamaService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

type StreamOut = ReceiverStream<Result<proto::TranslateStreamResponse, Status>>;

#[tonic::async_trait]
impl translation_service_server::TranslationService for TarjamaService {
    async fn translate(
        &self,
        request: Request<proto::TranslateRequest>,
    ) -> Result<Response<proto::TranslateResponse>, Status> {
        let ctx = RequestContext::new("Translate", request.metadata(), self.state.policy());
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
        request: Request<Streaming<proto::TranslateStreamRequest>>,
    ) -> Result<Response<StreamOut>, Status> {
        // A stream lives as long as its client feeds it; the default timeout bounds each
        // of its texts instead.
        let stream_policy = CallPolicy {
            default_timeout: None,
            ..self.state.policy().clone()
        };
        let ctx = RequestContext::new("TranslateStream", request.metadata(), &stream_policy);
        let engines = self.state.engines().map_err(|s| ctx.refuse(s))?;
        let limits = self.state.limits(&engines);
        let translator = engines.translator.clone();
        let incoming = request.into_inner();
        let policy = self.state.policy().clone();
        Ok(stream_response(ctx, STREAM_BUFFER, move |tx, deadline| {
            let stream = TextStream {
                limits,
                translator,
                tx,
                deadline,
                policy,
            };
            stream.drive(incoming)
        }))
    }

    async fn process_article(
        &self,
        request: Request<proto::ProcessArticleRequest>,
    ) -> Result<Response<proto::ProcessArticleResponse>, Status> {
        let ctx = RequestContext::new("ProcessArticle", request.metadata(), self.state.policy());
        let deadline = ctx.deadline();
        let work = async {
            let engines = self.state.engines()?;
            let limits = self.state.limits(&engines);
            let job = validate::article_request(request.into_inner(), &limits)?;
            article::process(&engines, job, deadline).await
        };
        unary(ctx, work, |r| vec![(r.usage, r.timings)]).await
    }

    type ProcessArticleStreamStream =
        ReceiverStream<Result<proto::ProcessArticleStreamResponse, Status>>;

    async fn process_article_stream(
        &self,
        request: Request<proto::ProcessArticleStreamRequest>,
    ) -> Result<Response<Self::ProcessArticleStreamStream>, Status> {
        let ctx = RequestContext::new(
            "ProcessArticleStream",
            request.metadata(),
            self.state.policy(),
        );
        let engines = self.state.engines().map_err(|s| ctx.refuse(s))?;
        let job =
            validate::article_request(request.into_inner().into(), &self.state.limits(&engines))
                .map_err(|s| ctx.refuse(s.into()))?;
        Ok(stream_response(
            ctx,
            STREAM_BUFFER,
            move |tx, deadline| async move { article::stream(&engines, job, deadline, &tx).await },
        ))
    }

    async fn summarize(
        &self,
        request: Request<proto::SummarizeRequest>,
    ) -> Result<Response<proto::SummarizeResponse>, Status> {
        let ctx = RequestContext::new("Summarize", request.metadata(), self.state.policy());
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
        let ctx = RequestContext::new("ListModels", request.metadata(), self.state.policy());
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
    ctx.finish(result.as_ref().map(|r| UsageTotals::of(parts(r))));
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
    F: Future<Output = Result<UsageTotals, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity);
    let response = ctx.response(ReceiverStream::new(rx));
    let span = ctx.span();
    let work = produce(tx.clone(), ctx.deadline());
    tokio::spawn(
        async move {
            let result = ctx.within_deadline(work).await;
            ctx.finish(result.as_ref().copied());
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
    let (ids, texts): (Vec<String>, Vec<_>) = texts.into_iter().map(|t| (t.id, t.text)).unzip();
    let done = translator
        .translate_all(texts, language, &options, deadline)
        .await
        .map_err(text_error_status)?;
    let translations = ids
        .into_iter()
        .zip(done)
        .map(|(id, done)| convert::translation(id, done, translator.info()))
        .collect();
    Ok(proto::TranslateResponse { translations })
}

/// A failed text of a Translate call, named by its field.
fn text_error_status(e: TextError) -> Status {
    match e.index {
        None => field_status("texts", e.error),
        Some(i) => field_status(&format!("texts[{i}].text"), e.error),
    }
}

async fn summarize_job(
    engines: &Engines,
    job: SummarizeJob,
    deadline: Option<Instant>,
) -> Result<proto::SummarizeResponse, Status> {
    let done = summarize_text(
        engines,
        job.text,
        job.arabic,
        &job.summary,
        &job.translation,
        deadline,
    )
    .await?;
    let summary = convert::summary(&done.summary);
    Ok(proto::SummarizeResponse {
        text: summary.text,
        method: summary.method,
        model: summary.model,
        input_truncated: summary.input_truncated,
        usage: summary.usage,
        timings: Some(proto::Timings {
            queue_ms: convert::ms(done.queue_time),
            inference_ms: convert::ms(done.inference_time),
            total_ms: convert::ms(done.total_time),
        }),
        translation: done.translation.map(|t| t.text).unwrap_or_default(),
    })
}

/// One TranslateStream call: reads requests and answers each text as soon as it is done.
struct TextStream {
    limits: Limits,
    translator: Arc<Translator>,
    tx: mpsc::Sender<Result<proto::TranslateStreamResponse, Status>>,
    /// The client's deadline for the whole stream, if it sent one.
    deadline: Option<Instant>,
    policy: CallPolicy,
}

/// What a finished text holds until its response is handed on: its slot among the texts in
/// flight, and its share of the stream's token budget.
struct InFlight {
    _slot: OwnedSemaphorePermit,
    _tokens: Option<OwnedSemaphorePermit>,
}

type TextResult = (String, Result<TranslatedText, Status>, InFlight);

impl TextStream {
    /// Stops (and so cancels the work in flight) when the client goes away or any text
    /// fails. Bounded: at most [`STREAM_TEXTS_IN_FLIGHT`] texts and the per-request token
    /// budget in flight, released only once a text's response is handed to the transport;
    /// while they are taken, the stream reads nothing more.
    async fn drive(
        self,
        mut incoming: Streaming<proto::TranslateStreamRequest>,
    ) -> Result<UsageTotals, Status> {
        let mut totals = UsageTotals::default();
        let slots = Arc::new(Semaphore::new(STREAM_TEXTS_IN_FLIGHT));
        let budget = self
            .translator
            .max_request_tokens()
            .min(Semaphore::MAX_PERMITS);
        let tokens = Arc::new(Semaphore::new(budget));
        let mut pending: VecDeque<(TextJob, SourceLanguage, GenerationOverrides)> = VecDeque::new();
        let mut running: JoinSet<TextResult> = JoinSet::new();
        let mut input_open = true;
        loop {
            while let Some(slot) = pending
                .front()
                .and_then(|_| slots.clone().try_acquire_owned().ok())
            {
                if let Some((input, language, options)) = pending.pop_front() {
                    running.spawn(self.translate(input, language, options, slot, tokens.clone()));
                }
            }
            if !input_open && pending.is_empty() && running.is_empty() {
                return Ok(totals);
            }
            tokio::select! {
                _ = self.tx.closed() => return Err(client_gone()),
                message = incoming.message(), if input_open && pending.is_empty() => match message? {
                    Some(request) => {
                        let job = validate::translate_request(request.into(), &self.limits)?;
                        let (language, options) = (job.language, job.options);
                        pending.extend(job.texts.into_iter().map(|t| (t, language, options.clone())));
                    }
                    None => input_open = false,
                },
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    let (id, result, in_flight) = joined
                        .map_err(|e| Status::internal(format!("translation task failed: {e}")))?;
                    let done = result.map_err(|s| {
                        Status::new(s.code(), format!("text `{}`: {}", crate::text::clip(&id, 64), s.message()))
                    })?;
                    let translation = convert::translation(id, done, self.translator.info());
                    totals.add((translation.usage, translation.timings));
                    let response = proto::TranslateStreamResponse { translation: Some(translation) };
                    if self.tx.send(Ok(response)).await.is_err() {
                        return Err(client_gone());
                    }
                    drop(in_flight);
                },
            }
        }
    }

    /// One text's work: prepared, admitted against the per-request budget, then run once the
    /// stream's token budget has room for it.
    fn translate(
        &self,
        input: TextJob,
        language: SourceLanguage,
        options: GenerationOverrides,
        slot: OwnedSemaphorePermit,
        tokens: Arc<Semaphore>,
    ) -> impl Future<Output = TextResult> + Send + 'static {
        let translator = self.translator.clone();
        let deadline = self.policy.deadline_from_now(self.deadline);
        async move {
            let mut in_flight = InFlight {
                _slot: slot,
                _tokens: None,
            };
            let result = async {
                let prepared = translator.prepare(input.text, language).await?;
                let cost = translator.cost(&prepared, &options);
                translator.admit(cost)?;
                // Within u32 (the semaphore's unit): admit bounds it by the stream's budget.
                let n = u32::try_from(cost.token_beams).unwrap_or(u32::MAX);
                in_flight._tokens = Some(tokens.acquire_many_owned(n).await.map_err(|_| {
                    crate::pipeline::PipelineError::Internal("stream closed".into())
                })?);
                translator.run(prepared, &options, deadline, None).await
            }
            .await
            .map_err(|e| field_status("texts.text", e));
            (input.id, result, in_flight)
        }
    }
}

/// How a stream whose client left is logged and counted; the client sees nothing more.
fn client_gone() -> Status {
    Status::cancelled("the client went away")
}
