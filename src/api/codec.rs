//! The prost codec with one change: a request that fails to decode is the client's fault, so
//! it gets INVALID_ARGUMENT (with the offending field) instead of INTERNAL. The most common
//! case is a `string` field holding invalid UTF-8.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, Clone)]
pub struct CheckedCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for CheckedCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for CheckedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

#[derive(Debug)]
pub struct CheckedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(invalid_message)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

fn invalid_message(status: Status) -> Status {
    if status.code() != Code::Internal {
        return status;
    }
    let detail = status.message().to_string();
    let field = field_of(&detail);
    let message = if detail.contains("UTF-8") {
        format!("the request is not valid: field `{field}` is not valid UTF-8 ({detail})")
    } else {
        format!("the request is not a valid protobuf message ({detail})")
    };
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(field, detail),
    )
}

/// prost reports the path innermost first, `Inner.field: Outer.field: reason`; keep the
/// field names, outermost first.
fn field_of(detail: &str) -> String {
    let mut path: Vec<&str> = detail
        .split(": ")
        .filter(|p| p.contains('.') && !p.contains(char::is_whitespace))
        .filter_map(|p| p.rsplit('.').next())
        .collect();
    path.reverse();
    if path.is_empty() {
        "request".into()
    } else {
        path.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn field_path_from_prost_error() {
        let detail = "failed to decode Protobuf message: TextInput.text: TranslateRequest.texts: invalid string value: data is not UTF-8 encoded";
        assert_eq!(field_of(detail), "texts.text");
    }
}
