//! Parsing of `--*-model` arguments into a [`ModelSource`].

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::HubError;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder holding config.json, weights and tokenizer files.
    Local(PathBuf),
    /// A hub repository `owner/name`, at `revision` (default `main`).
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

impl FromStr for ModelSource {
    type Err = HubError;

    /// An existing path wins; `./x`, `../x`, `/x`, `~/x`, `.` and `..` are
    /// always paths; anything else must be `owner/name[@revision]`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let invalid = |reason: &str| HubError::InvalidSource {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if looks_like_path(s) || Path::new(s).exists() {
            return Ok(ModelSource::Local(PathBuf::from(s)));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (s, None),
        };
        validate_repo_id(repo).map_err(|r| invalid(&r))?;
        if let Some(rev) = revision {
            validate_revision(rev).map_err(|r| invalid(&r))?;
        }
        Ok(ModelSource::Hub {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
        })
    }
}

fn looks_like_path(s: &str) -> bool {
    s == "." || s == ".." || ["./", "../", "/", "~/"].iter().any(|p| s.starts_with(p))
}

/// Mirrors the hub's repo-id rules: `owner/name`, each part of
/// `[A-Za-z0-9._-]`, not starting or ending with `.`/`-`, no `--` or `..`.
pub(crate) fn validate_repo_id(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 {
        return Err(format!(
            "{repo:?} is not an existing folder and not of the form owner/name"
        ));
    }
    for part in parts {
        validate_part(part).map_err(|r| format!("repo id {repo:?}: {r}"))?;
    }
    Ok(())
}

fn validate_part(part: &str) -> Result<(), String> {
    if part.is_empty() || part.len() > 96 {
        return Err("owner and name must be 1 to 96 characters".into());
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err("parts may not start or end with '-' or '.'".into());
    }
    if part.contains("--") || part.contains("..") {
        return Err("'--' and '..' are not allowed".into());
    }
    Ok(())
}

pub(crate) fn validate_revision(rev: &str) -> Result<(), String> {
    if rev.is_empty() {
        return Err("the revision after '@' is empty".into());
    }
    let bad = rev.contains("..")
        || rev.starts_with('/')
        || rev.ends_with('/')
        || rev
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\@".contains(c));
    if bad {
        return Err(format!(
            "revision {rev:?} is not a valid branch, tag, ref or commit"
        ));
    }
    Ok(())
}
