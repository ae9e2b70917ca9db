//! API keys: a wrapper around the TranslationService that refuses calls without a valid
//! `authorization: Bearer <key>`. Health and reflection are not wrapped, so probes and
//! grpcurl's discovery keep working without a key.
//!
//! A service wrapper rather than a tonic interceptor: interceptors do not see which method
//! was called, and refused calls are counted and logged per RPC like all others.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::server::NamedService;
use tonic::Status;

use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeysError {
    #[error("cannot read the API keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the API keys file {0} has no keys (one per line; `#` starts a comment)")]
    Empty(String),
}

/// The accepted keys, as SHA-256 digests: comparing fixed-size digests in constant time
/// says nothing about a key's bytes or its length.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<Vec<[u8; 32]>>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// One key per line; blank lines and lines starting with `#` are skipped.
    pub fn from_file(path: &Path) -> Result<Self, ApiKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiKeysError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let keys: Vec<[u8; 32]> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| digest(l.as_bytes()))
            .collect();
        if keys.is_empty() {
            return Err(ApiKeysError::Empty(path.display().to_string()));
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// Checks the request's `authorization` header.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), Status> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing API key: send the metadata `authorization: Bearer <key>`",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim().as_bytes())
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization: expected `Bearer <key>`")
            })?;
        // Every key is compared in full, so timing says nothing about which one matched.
        let presented = digest(presented);
        let matched = self
            .keys
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&presented)
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid API key"))
        }
    }
}

/// `inner` behind an API-key check (or open when `keys` is `None`).
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    keys: Option<ApiKeys>,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, keys: Option<ApiKeys>) -> Self {
        Self { inner, keys }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Authenticated<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let refused = self
            .keys
            .as_ref()
            .and_then(|keys| keys.check(request.headers()).err());
        match refused {
            None => futures::future::Either::Left(self.inner.call(request)),
            Some(status) => {
                refused_call(super::rpc_label(request.uri().path()), &status);
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

fn refused_call(rpc: &'static str, status: &Status) {
    let code = telemetry::code_name(status.code());
    metrics::counter!(telemetry::REQUESTS, "rpc" => rpc, "code" => code).increment(1);
    tracing::info!(rpc, code, error = status.message(), "request refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &str) -> ApiKeys {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), lines).unwrap();
        ApiKeys::from_file(file.path()).unwrap()
    }

    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_keys() {
        let k = keys("# team a\nalpha-123\n\n  beta-456  \n");
        assert!(k.check(&headers("Bearer alpha-123")).is_ok());
        assert!(k.check(&headers("bearer beta-456")).is_ok());
        for bad in [
            "Bearer alpha-12",
            "Bearer alpha-1234",
            "Basic alpha-123",
            "alpha-123",
            "Bearer # team a",
        ] {
            let err = k.check(&headers(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let err = k.check(&http::HeaderMap::new()).unwrap_err();
        assert!(err.message().contains("Bearer"), "{}", err.message());
    }

    #[test]
    fn empty_or_missing_file_is_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "# nothing\n\n").unwrap();
        assert!(matches!(
            ApiKeys::from_file(file.path()),
            Err(ApiKeysError::Empty(_))
        ));
        let missing = ApiKeys::from_file(Path::new("/nonexistent/keys"))
            .err()
            .unwrap();
        assert!(missing.to_string().contains("/nonexistent/keys"));
    }
}
