//! Model resolution: a local folder, or a hub repository fetched into the
//! standard Hugging Face cache (shared with Python and hf-hub).
//!
//! `resolve` is blocking (it runs its own short-lived runtime on a private
//! thread); call it from `spawn_blocking` in async code.

mod cache;
mod download;
mod error;
mod files;
mod folder;
mod progress;
mod source;

use std::path::{Path, PathBuf};

pub use error::HubError;
pub use folder::{FetchedFile, FetchedFolder};
pub use source::ModelSource;

pub(crate) use files::weights_in;

use cache::{Coverage, RepoCache};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";

/// How hub models are fetched. `Default` reads nothing from the environment;
/// `resolve` applies `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_TOKEN` and the
/// cache variables (`HF_HUB_CACHE`, `HF_HOME`) for unset fields.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Hub cache root (the folder holding `models--*`); default: hf-hub's standard cache.
    pub cache_dir: Option<PathBuf>,
    /// Use the cache only, never the network (also on with `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Hub base URL; default: `HF_ENDPOINT` or <https://huggingface.co>.
    pub endpoint: Option<String>,
    /// Draw progress bars on stderr while downloading.
    pub progress: bool,
    /// Access token; default: `HF_TOKEN` / the stored token file.
    pub token: Option<String>,
}

/// A model ready to load from `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Folder holding the files (the snapshot folder for hub models).
    pub dir: PathBuf,
    /// Repo id, or the folder path as given.
    pub id: String,
    /// Commit sha for hub models, `"local"` for folders.
    pub revision: String,
}

impl ResolvedModel {
    /// The weights file, `model.safetensors` preferred over `pytorch_model.bin`.
    pub fn weights_path(&self) -> Option<PathBuf> {
        files::weights_in(&self.dir)
    }
}

/// Finds (and if needed downloads) the model. Blocking.
pub fn resolve(source: &ModelSource, opts: &HubOptions) -> Result<ResolvedModel, HubError> {
    match source {
        ModelSource::Local(path) => resolve_local(path),
        ModelSource::Hub { repo, revision } => {
            let revision = revision.as_deref().unwrap_or(DEFAULT_REVISION);
            resolve_hub(repo, revision, opts)
        }
    }
}

fn resolve_local(path: &Path) -> Result<ResolvedModel, HubError> {
    let unusable = |reason: String| HubError::LocalFolder {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_dir() {
        return Err(unusable("it is not an existing folder".into()));
    }
    let mut missing = Vec::new();
    if !path.join(files::CONFIG).is_file() {
        missing.push(files::CONFIG);
    }
    if files::weights_in(path).is_none() {
        missing.push("model.safetensors (or pytorch_model.bin)");
    }
    if !missing.is_empty() {
        return Err(unusable(format!("missing {}", missing.join(" and "))));
    }
    Ok(ResolvedModel {
        dir: path.to_path_buf(),
        id: path.display().to_string(),
        revision: "local".into(),
    })
}

fn resolve_hub(repo: &str, revision: &str, opts: &HubOptions) -> Result<ResolvedModel, HubError> {
    validate(repo, revision)?;
    // hf-hub's own (public, doc-hidden) resolution: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE,
    // HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
    let cache_dir = opts
        .cache_dir
        .clone()
        .unwrap_or_else(hf_hub::resolve_cache_dir);
    let offline = opts.offline || env_offline();
    if let Some(hit) = cached(&cache_dir, repo, revision, offline) {
        tracing::info!(repo, revision, sha = %hit.revision, "using cached model");
        return Ok(hit);
    }
    if offline {
        return Err(HubError::NotCached {
            repo: repo.into(),
            revision: revision.into(),
            cache: cache_dir,
        });
    }
    let endpoint = endpoint(opts);
    tracing::info!(repo, revision, %endpoint, "downloading model");
    let (dir, sha) = download::fetch(&download::Fetch {
        repo,
        revision,
        endpoint: &endpoint,
        cache_dir,
        token: opts.token.clone(),
        progress: opts.progress,
    })?;
    Ok(ResolvedModel {
        dir,
        id: repo.into(),
        revision: sha,
    })
}

/// Re-validates: the id becomes a cache or URL path and the revision a refs/ path.
fn validate(repo: &str, revision: &str) -> Result<(), HubError> {
    source::validate_repo_id(repo)
        .and_then(|()| source::validate_revision(revision))
        .map_err(|reason| HubError::InvalidSource {
            input: format!("{repo}@{revision}"),
            reason,
        })
}

/// The hub base URL: the option, else `HF_ENDPOINT`, else the public hub.
fn endpoint(opts: &HubOptions) -> String {
    opts.endpoint
        .clone()
        .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Downloads `repo` at `revision` into the plain folder `dest` (not the cache): resumes
/// partial files, checks sha256 where the hub gives one. With `expected_commit` (a sha or
/// its prefix), nothing is downloaded if the revision resolves to another commit. Blocking.
pub fn fetch_folder(
    repo: &str,
    revision: &str,
    dest: &Path,
    expected_commit: Option<&str>,
    opts: &HubOptions,
) -> Result<FetchedFolder, HubError> {
    validate(repo, revision)?;
    let endpoint = endpoint(opts);
    tracing::info!(repo, revision, %endpoint, dir = %dest.display(), "fetching model into a folder");
    let token = opts
        .token
        .clone()
        .or_else(|| std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()));
    let req = download::Fetch {
        repo,
        revision,
        endpoint: &endpoint,
        cache_dir: opts
            .cache_dir
            .clone()
            .unwrap_or_else(hf_hub::resolve_cache_dir),
        token,
        progress: opts.progress,
    };
    let (commit, files) = folder::fetch_into(&req, dest, expected_commit)?;
    Ok(FetchedFolder {
        dir: dest.to_path_buf(),
        repo: repo.into(),
        revision: revision.into(),
        commit,
        files,
    })
}

/// A cached snapshot good enough to skip the network: complete when online,
/// merely usable (config + weights) when offline.
fn cached(cache_dir: &Path, repo: &str, revision: &str, offline: bool) -> Option<ResolvedModel> {
    let cache = RepoCache::new(cache_dir, repo);
    let sha = cache.commit_for(revision)?;
    let ok = match cache.coverage(&sha) {
        Coverage::Complete => true,
        Coverage::Usable => offline,
        Coverage::Missing => false,
    };
    ok.then(|| ResolvedModel {
        dir: cache.snapshot(&sha),
        id: repo.into(),
        revision: sha,
    })
}

fn env_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| is_truthy(&v))
}

/// huggingface_hub's reading of boolean env vars.
fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn offline_env_values() {
        for v in ["1", "true", "YES", " on "] {
            assert!(super::is_truthy(v), "{v}");
        }
        for v in ["", "0", "false", "no", "off"] {
            assert!(!super::is_truthy(v), "{v}");
        }
    }
}
