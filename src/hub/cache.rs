//! The standard hub cache layout (shared with Python `huggingface_hub` and
//! hf-hub): `<cache>/models--owner--name/{blobs, snapshots/<sha>, refs/<rev>,
//! .no_exist/<sha>}`. Only lookups and ref/marker writes live here; hf-hub
//! writes blobs and snapshot symlinks.

use std::path::{Path, PathBuf};

use super::files::{self, CONFIG, PYTORCH_BIN, SAFETENSORS};
use super::HubError;

pub(crate) struct RepoCache {
    root: PathBuf,
}

/// How much of a model a cached snapshot holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Every candidate file is either present or known absent: no request needed.
    Complete,
    /// config.json and weights are present; some optional files are unknown.
    Usable,
    Missing,
}

pub(crate) fn is_commit_sha(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RepoCache {
    pub(crate) fn new(cache_dir: &Path, repo: &str) -> Self {
        let folder = format!("models--{}", repo.replace('/', "--"));
        RepoCache {
            root: cache_dir.join(folder),
        }
    }

    pub(crate) fn snapshot(&self, sha: &str) -> PathBuf {
        self.root.join("snapshots").join(sha)
    }

    fn no_exist(&self, sha: &str, file: &str) -> PathBuf {
        self.root.join(".no_exist").join(sha).join(file)
    }

    /// The commit a revision points at locally: itself if a sha, else `refs/<rev>`.
    pub(crate) fn commit_for(&self, revision: &str) -> Option<String> {
        if is_commit_sha(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let sha = text.trim();
        is_commit_sha(sha).then(|| sha.to_string())
    }

    pub(crate) fn coverage(&self, sha: &str) -> Coverage {
        let snap = self.snapshot(sha);
        let present = |f: &str| snap.join(f).is_file();
        let known = |f: &str| present(f) || self.no_exist(sha, f).is_file();
        if !present(CONFIG) || files::weights_in(&snap).is_none() {
            return Coverage::Missing;
        }
        let weights_settled = present(SAFETENSORS) || (present(PYTORCH_BIN) && known(SAFETENSORS));
        if weights_settled && files::OPTIONAL.iter().all(|f| known(f)) {
            Coverage::Complete
        } else {
            Coverage::Usable
        }
    }

    pub(crate) fn write_ref(&self, revision: &str, sha: &str) -> Result<(), HubError> {
        if is_commit_sha(revision) {
            return Ok(());
        }
        write_file(&self.root.join("refs").join(revision), sha.as_bytes())
    }

    pub(crate) fn mark_absent(&self, sha: &str, files: &[&str]) -> Result<(), HubError> {
        files
            .iter()
            .try_for_each(|f| write_file(&self.no_exist(sha, f), b""))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| HubError::io(path, e))
}
