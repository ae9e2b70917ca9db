//! One article through `ProcessArticleStream`: the request, the events put back together into
//! a result line, and the retries around it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::{Code, Status};

use super::connect::Client;
use super::input::{self, Article, Item};
use super::output::{Record, RecordTimings, RecordUsage};
use super::retry::{self, RetryPolicy};
use crate::config::ClientSummary;
use crate::proto::{self, process_article_stream_response::Event};

/// Extra time given to a stream past its deadline before the client gives up on its own:
/// the server normally ends it first, with DEADLINE_EXCEEDED, and that message is better.
const DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// How every article is asked for.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub summary: ClientSummary,
    pub beam_size: Option<u32>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// For `.txt` files and JSONL `text`.
    pub title_from_first_line: bool,
    /// What the articles are.
    pub format: crate::pipeline::TextFormat,
}

/// How one article ended.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    pub result: Result<Record, String>,
    pub attempts: u32,
}

pub async fn process(client: Client, item: Item, options: &CallOptions) -> Outcome {
    let started = Instant::now();
    let fail = |message: String, attempts| Outcome {
        id: item.id.clone(),
        result: Err(format!("{}: {message}", item.origin)),
        attempts,
    };
    let article = match input::read(&item, options.title_from_first_line).await {
        Ok(article) => article,
        Err(message) => return fail(message, 0),
    };
    let request = request(&item.id, article, options);
    let (result, attempts) = retry::with_retries(&options.retry, &item.id, || {
        attempt(client.clone(), request.clone(), options.timeout)
    })
    .await;
    match result {
        Ok(streamed) => Outcome {
            id: item.id.clone(),
            result: Ok(streamed.record(item.id.clone(), options, attempts, started)),
            attempts,
        },
        Err(status) => fail(describe(&status, attempts), attempts),
    }
}

fn request(id: &str, article: Article, options: &CallOptions) -> proto::ProcessArticleRequest {
    proto::ProcessArticleRequest {
        id: id.to_string(),
        title: article.title,
        body: article.body,
        // Auto: Arabic is translated, text already in English passes through.
        source_language: String::new(),
        options: options.beam_size.map(|beams| proto::TranslationOptions {
            beam_size: Some(beams),
            ..Default::default()
        }),
        summary_options: summary_options(options.summary),
        title_from_first_line: article.title_from_first_line,
        format: proto_format(options.format),
    }
}

fn proto_format(format: crate::pipeline::TextFormat) -> i32 {
    let format = match format {
        crate::pipeline::TextFormat::Plain => proto::TextFormat::Plain,
        crate::pipeline::TextFormat::Html => proto::TextFormat::Html,
    };
    format as i32
}

fn summary_options(summary: ClientSummary) -> Option<proto::SummaryOptions> {
    let method = match summary {
        ClientSummary::Auto => return None,
        ClientSummary::Extractive => proto::SummaryMethod::Extractive,
        ClientSummary::Abstractive => proto::SummaryMethod::Abstractive,
        ClientSummary::None => proto::SummaryMethod::None,
    };
    Some(proto::SummaryOptions {
        method: method as i32,
        ..Default::default()
    })
}

/// One call, read to its end. A failure mid-stream fails the attempt: the retry starts the
/// article over, since a partial article is of no use.
async fn attempt(
    mut client: Client,
    request: proto::ProcessArticleRequest,
    timeout: Duration,
) -> Result<Streamed, Status> {
    let mut call = tonic::Request::new(proto::ProcessArticleStreamRequest::from(request));
    call.set_timeout(timeout);
    let work = async {
        let mut events = client.process_article_stream(call).await?.into_inner();
        let mut streamed = Streamed::default();
        while let Some(event) = events.message().await? {
            streamed.push(event);
        }
        Ok::<_, Status>(streamed)
    };
    let streamed = tokio::time::timeout(timeout + DEADLINE_GRACE, work)
        .await
        .map_err(|_| Status::deadline_exceeded("no answer within the deadline"))??;
    if streamed.done.is_none() {
        return Err(Status::internal(
            "the server ended the stream before its final event",
        ));
    }
    Ok(streamed)
}

/// The events of one call.
#[derive(Debug, Default)]
struct Streamed {
    title: String,
    paragraphs: BTreeMap<u32, String>,
    done: Option<proto::ArticleDone>,
}

impl Streamed {
    fn push(&mut self, event: proto::ProcessArticleStreamResponse) {
        match event.event {
            Some(Event::Title(title)) => self.title = title.text,
            Some(Event::Paragraph(p)) => {
                self.paragraphs.insert(p.index, p.text);
            }
            Some(Event::Done(done)) => self.done = Some(done),
            // An event kind newer than this client: nothing it needs.
            None => {}
        }
    }

    fn record(self, id: String, options: &CallOptions, attempts: u32, started: Instant) -> Record {
        let mut done = self.done.unwrap_or_default();
        let usage = done.usage.unwrap_or_default();
        let timings = done.timings.unwrap_or_default();
        let summary = done
            .summary
            .filter(|_| options.summary != ClientSummary::None);
        Record {
            id,
            title: self.title,
            // HTML comes whole at the end; plain text is its paragraphs, in index order
            // whatever the arrival order (the server sends them in order).
            translation: match done.body.is_empty() {
                false => std::mem::take(&mut done.body),
                true => self
                    .paragraphs
                    .into_values()
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            },
            summary_method: summary.as_ref().map(|s| method_name(s.method).to_string()),
            summary: summary.map(|s| s.text),
            detected_language: done.detected_language,
            usage: RecordUsage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
            },
            timings: RecordTimings {
                queue_ms: timings.queue_ms,
                inference_ms: timings.inference_ms,
                total_ms: timings.total_ms,
                client_ms: started.elapsed().as_millis() as u64,
            },
            attempts,
        }
    }
}

fn method_name(method: i32) -> &'static str {
    match proto::SummaryMethod::try_from(method) {
        Ok(proto::SummaryMethod::Abstractive) => "abstractive",
        Ok(proto::SummaryMethod::Extractive) => "extractive",
        _ => "unspecified",
    }
}

/// `RESOURCE_EXHAUSTED after 6 attempts: …`.
fn describe(status: &Status, attempts: u32) -> String {
    let code = code_name(status.code());
    if attempts > 1 {
        format!("{code} after {attempts} attempts: {}", status.message())
    } else {
        format!("{code}: {}", status.message())
    }
}

/// The status name as gRPC spells it (`ResourceExhausted` → `RESOURCE_EXHAUSTED`).
pub fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_grpc_ones() {
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
    }

    #[test]
    fn paragraphs_are_joined_in_index_order() {
        let mut s = Streamed::default();
        for (index, text) in [(1, "b"), (0, "a")] {
            s.push(proto::ProcessArticleStreamResponse {
                event: Some(Event::Paragraph(proto::ArticleParagraph {
                    index,
                    text: text.into(),
                    segments: vec![],
                })),
            });
        }
        s.done = Some(Default::default());
        let options = CallOptions {
            summary: ClientSummary::None,
            beam_size: None,
            timeout: Duration::from_secs(1),
            retry: RetryPolicy::new(0),
            title_from_first_line: false,
            format: Default::default(),
        };
        let record = s.record("x".into(), &options, 1, Instant::now());
        assert_eq!(record.translation, "a\n\nb");
        assert_eq!(record.summary, None);
    }
}
