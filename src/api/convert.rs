//! Domain results → protobuf messages.

use crate::pipeline::{ModelInfo, SummaryMethod, SummaryOutput, TranslatedSegment, TranslatedText};
use crate::proto;

pub fn ms(d: std::time::Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

pub fn clamp(n: usize) -> u32 {
    n.min(u32::MAX as usize) as u32
}

/// `offset` (characters) is added to the spans, for text that was cut out of a larger field.
pub fn segments(segments: &[TranslatedSegment], offset: usize) -> Vec<proto::Segment> {
    segments
        .iter()
        .map(|s| proto::Segment {
            source: s.source.clone(),
            translation: s.translation.clone(),
            score: s.score,
            source_start: clamp(s.source_start + offset),
            source_end: clamp(s.source_end + offset),
            paragraph: clamp(s.paragraph),
            split: s.split,
            detected_language: s.detected_language.to_string(),
        })
        .collect()
}

pub fn translation(id: String, done: TranslatedText, model: &ModelInfo) -> proto::Translation {
    let segments = segments(&done.segments, 0);
    proto::Translation {
        id,
        text: done.text,
        detected_language: done.detected_language.to_string(),
        usage: Some(proto::Usage {
            input_tokens: clamp(done.input_tokens),
            output_tokens: clamp(done.output_tokens),
            sentences: clamp(segments.len()),
        }),
        segments,
        model: model.id.clone(),
        model_revision: model.revision.clone(),
        timings: Some(proto::Timings {
            queue_ms: ms(done.queue_time),
            inference_ms: ms(done.inference_time),
            total_ms: ms(done.total_time),
        }),
    }
}

pub fn model_info(info: &ModelInfo) -> proto::ModelInfo {
    let catalog = info.catalog.as_ref();
    proto::ModelInfo {
        id: info.id.clone(),
        revision: info.revision.clone(),
        family: info.family.name().to_string(),
        task: info.task.to_string(),
        source_language: info.source_language.to_string(),
        target_language: info.target_language.to_string(),
        max_input_tokens: clamp(info.max_input_tokens),
        max_output_tokens: clamp(info.max_output_tokens),
        default_beam_size: clamp(info.default_beam_size),
        max_beam_size: clamp(crate::pipeline::MAX_BEAM_SIZE),
        compute_type: info.compute_type.name().to_string(),
        catalog_name: catalog.map(|c| c.name.clone()).unwrap_or_default(),
        hub_id: info.hub_id.clone().unwrap_or_default(),
        license: catalog.map(|c| c.license.clone()).unwrap_or_default(),
    }
}

pub fn summary(out: &SummaryOutput) -> proto::Summary {
    proto::Summary {
        text: out.text.clone(),
        method: summary_method(out.method) as i32,
        model: out.model.clone(),
        input_truncated: out.input_truncated,
        usage: Some(proto::Usage {
            input_tokens: clamp(out.input_tokens),
            output_tokens: clamp(out.output_tokens),
            sentences: 0,
        }),
    }
}

pub fn summary_method(method: SummaryMethod) -> proto::SummaryMethod {
    match method {
        SummaryMethod::Auto => proto::SummaryMethod::Unspecified,
        SummaryMethod::Extractive => proto::SummaryMethod::Extractive,
        SummaryMethod::Abstractive => proto::SummaryMethod::Abstractive,
    }
}

/// Conversions both ways between two messages with the same fields (each RPC has its own
/// request message; the streaming ones carry their unary twin's fields).
macro_rules! same_fields {
    ($a:ident, $b:ident, [$($field:ident),+]) => {
        impl From<proto::$a> for proto::$b {
            fn from(r: proto::$a) -> Self {
                Self { $($field: r.$field),+ }
            }
        }
        impl From<proto::$b> for proto::$a {
            fn from(r: proto::$b) -> Self {
                Self { $($field: r.$field),+ }
            }
        }
    };
}

same_fields!(
    TranslateRequest,
    TranslateStreamRequest,
    [texts, source_language, target_language, options]
);
same_fields!(
    ProcessArticleRequest,
    ProcessArticleStreamRequest,
    [
        id,
        title,
        body,
        source_language,
        options,
        summary_options,
        title_from_first_line,
        format
    ]
);
