//! Errors of model resolution. Messages are meant for operators: they name the
//! model, the revision and what to do instead.

use std::path::PathBuf;

/// Hint ending every "could not get the model" error: how to supply a folder instead.
fn hint(repo: &str, revision: &str) -> String {
    format!(
        "download it elsewhere (e.g. `hf download {repo} --revision {revision} --local-dir /path/to/folder`) \
         and pass the local folder as the model instead (e.g. --translation-model /path/to/folder)"
    )
}

#[derive(thiserror::Error, Debug)]
pub enum HubError {
    #[error("invalid model source {input:?}: {reason}; expected a local folder path or a hub id `owner/name[@revision]`")]
    InvalidSource { input: String, reason: String },

    #[error("model folder {} is not usable: {reason}", path.display())]
    LocalFolder { path: PathBuf, reason: String },

    #[error("model {repo}@{revision} is not in the local cache {} and offline mode is on (HF_HUB_OFFLINE); {}", cache.display(), hint(repo, revision))]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
    },

    #[error("could not reach the model hub at {endpoint} to fetch {repo}@{revision}: {detail}; check network access, or {}", hint(repo, revision))]
    Unreachable {
        repo: String,
        revision: String,
        endpoint: String,
        detail: String,
    },

    #[error("model {repo}@{revision} was not found on {endpoint}: {detail}; check the id and revision, or {}", hint(repo, revision))]
    NotFound {
        repo: String,
        revision: String,
        endpoint: String,
        detail: String,
    },

    #[error("model {repo}@{revision} on {endpoint} is private, gated or missing ({detail}); check the id, set HF_TOKEN, or {}", hint(repo, revision))]
    Unauthorized {
        repo: String,
        revision: String,
        endpoint: String,
        detail: String,
    },

    #[error("model {repo}@{revision} lacks required file(s): {missing}")]
    MissingFiles {
        repo: String,
        revision: String,
        missing: String,
    },

    #[error(
        "downloading model {repo}@{revision} from {endpoint} failed: {detail}; {}",
        hint(repo, revision)
    )]
    Download {
        repo: String,
        revision: String,
        endpoint: String,
        detail: String,
    },

    #[error("{file} of model {repo} does not match the hub's checksum (sha256 {got}, expected {expected}); the partial file was removed: fetch again")]
    Checksum {
        repo: String,
        file: String,
        expected: String,
        got: String,
    },

    #[error("model {repo}@{revision} now resolves to commit {got}, not {expected}…, the commit it was catalogued at; nothing was downloaded")]
    UnexpectedCommit {
        repo: String,
        revision: String,
        expected: String,
        got: String,
    },

    #[error("cache I/O error at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}
