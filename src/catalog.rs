//! The catalog of supported models (`models/catalog.toml`, built into the binary) and the
//! local folders `tarjama models fetch` fills: `--models-dir/NAME/`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hub::ModelSource;

const CATALOG_TOML: &str = include_str!("../models/catalog.toml");

/// Written by `models fetch` into a model's folder: where its files came from.
pub const FETCH_MANIFEST: &str = "fetched.json";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the built-in model catalog is malformed: {0}")]
    Malformed(String),
    #[error("{name:?} is not a model of the catalog (known: {known}), not an existing folder and not a hub id owner/name[@revision]")]
    Unknown { name: String, known: String },
    #[error("model folder {} for catalog model {name} lacks {file}; run `tarjama models fetch {name}` again or copy the file there", dir.display())]
    MissingFile {
        dir: PathBuf,
        name: String,
        file: &'static str,
    },
    #[error("model folder {} holds a {found} model (config.json model_type), but catalog model {name} is a {expected} model", dir.display())]
    WrongFamily {
        dir: PathBuf,
        name: String,
        expected: String,
        found: String,
    },
    #[error("cannot read {}: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
    #[error("catalog model {name} ({hub_id}@{revision}) now resolves to commit {got}, not {expected}…, the commit it was catalogued at: pass --translation-model/--summarization-model {hub_id}@COMMIT to choose a revision")]
    MovedRevision {
        name: String,
        hub_id: String,
        revision: String,
        expected: String,
        got: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogTask {
    Translation,
    Summarization,
}

impl CatalogTask {
    pub fn name(self) -> &'static str {
        match self {
            CatalogTask::Translation => "translation",
            CatalogTask::Summarization => "summarization",
        }
    }
}

/// One published quality figure.
#[derive(Debug, Clone, Deserialize)]
pub struct Quality {
    pub test_set: String,
    pub metric: String,
    pub value: f64,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub name: String,
    pub hub_id: String,
    /// What is fetched: a commit sha, or a branch/ref when no sha is known.
    pub revision: String,
    /// The commit (or prefix) `revision` resolved to when catalogued; `None` when it could
    /// not be known from here (then only the log and ListModels say which was loaded).
    #[serde(default)]
    pub commit: Option<String>,
    /// Why this revision, or why its commit is unknown.
    #[serde(default)]
    pub revision_note: Option<String>,
    pub task: CatalogTask,
    /// config.json's `model_type`: a folder of another family is refused.
    pub family: String,
    /// As the hub's model card gives it (SPDX-like: `apache-2.0`, `cc-by-4.0`, `mit`).
    pub license: String,
    pub parameters: u64,
    /// Size of the weights file fetched, in MB (10^6 bytes).
    pub download_mb: u64,
    #[serde(default)]
    pub download_note: Option<String>,
    /// The model `serve` uses for its task when none is given.
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub quality: Vec<Quality>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(rename = "model")]
    pub models: Vec<CatalogEntry>,
}

impl Catalog {
    /// The catalog built into this binary (`models/catalog.toml`).
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Self::parse(CATALOG_TOML)
    }

    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        toml::from_str(text).map_err(|e| CatalogError::Malformed(e.to_string()))
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The entry whose hub repository is `repo` (a hub id given instead of a name).
    pub fn by_hub_id(&self, repo: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.hub_id == repo)
    }

    /// The entry named `name`, or an error listing the known names.
    pub fn lookup(&self, name: &str) -> Result<&CatalogEntry, CatalogError> {
        self.get(name).ok_or_else(|| self.unknown(name))
    }

    /// The error for a name not in the catalog: it lists the known names.
    pub fn unknown(&self, name: &str) -> CatalogError {
        CatalogError::Unknown {
            name: name.to_string(),
            known: self.names().join(", "),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

/// `spec` read as a catalog name: a bare word (hub ids contain a `/`; a folder named like a
/// catalog model is given as `./NAME`).
pub fn as_catalog_name(spec: &str) -> Option<&str> {
    let s = spec.trim();
    let bare = !s.is_empty() && !s.contains(['/', '@', '\\']) && s != "." && s != "..";
    bare.then_some(s)
}

impl CatalogEntry {
    pub fn hub_source(&self) -> ModelSource {
        ModelSource::Hub {
            repo: self.hub_id.clone(),
            revision: Some(self.revision.clone()),
        }
    }

    /// The model's folder under `models_dir`.
    pub fn folder(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(&self.name)
    }

    /// Files a folder of this model must hold (a weights file is checked apart).
    fn required_files(&self) -> &'static [&'static str] {
        match self.family.as_str() {
            "marian" => &["config.json", "source.spm", "target.spm", "vocab.json"],
            // BART; tokenizer.json alone would also do, but the hub repositories have these.
            _ => &["config.json", "vocab.json", "merges.txt"],
        }
    }

    /// A folder standing for this model: its files are there and its config.json is of this
    /// family (sizes are not compared: a small stand-in may take a catalog name).
    pub fn check_folder(&self, dir: &Path) -> Result<(), CatalogError> {
        let missing = |file| CatalogError::MissingFile {
            dir: dir.to_path_buf(),
            name: self.name.clone(),
            file,
        };
        if let Some(file) = self
            .required_files()
            .iter()
            .find(|f| !dir.join(f).is_file())
        {
            return Err(missing(file));
        }
        if crate::hub::weights_in(dir).is_none() {
            return Err(missing("model.safetensors (or pytorch_model.bin)"));
        }
        let found = model_type(&dir.join("config.json"))?;
        if found != self.family {
            return Err(CatalogError::WrongFamily {
                dir: dir.to_path_buf(),
                name: self.name.clone(),
                expected: self.family.clone(),
                found,
            });
        }
        Ok(())
    }

    /// Refuses a hub download whose commit is not the one catalogued (when one is known).
    pub fn check_commit(&self, resolved: &str) -> Result<(), CatalogError> {
        match &self.commit {
            Some(expected) if !resolved.starts_with(expected.as_str()) => {
                Err(CatalogError::MovedRevision {
                    name: self.name.clone(),
                    hub_id: self.hub_id.clone(),
                    revision: self.revision.clone(),
                    expected: expected.clone(),
                    got: resolved.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The best-known published figure, as `METRIC VALUE (TEST SET)`.
    pub fn headline_quality(&self) -> String {
        self.quality.first().map_or_else(
            || "none catalogued".to_string(),
            |q| format!("{} {} ({})", q.metric, q.value, q.test_set),
        )
    }
}

fn model_type(config: &Path) -> Result<String, CatalogError> {
    let bad = |reason: String| CatalogError::BadConfig {
        path: config.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(config).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    value["model_type"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| bad("no model_type".into()))
}

/// The commit recorded by `models fetch` in a folder, if it was fetched.
pub fn fetched_commit(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(FETCH_MANIFEST)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["commit"].as_str().map(str::to_string)
}

/// What `models_dir` holds of `entry`, in a few words.
pub fn local_status(entry: &CatalogEntry, models_dir: &Path) -> String {
    let dir = entry.folder(models_dir);
    if !dir.exists() {
        return "absent".into();
    }
    match entry.check_folder(&dir) {
        Ok(()) => match fetched_commit(&dir) {
            Some(commit) => format!("present (commit {})", short(&commit)),
            None => "present (not fetched: no fetched.json)".into(),
        },
        Err(CatalogError::MissingFile { file, .. }) => format!("incomplete: lacks {file}"),
        Err(CatalogError::WrongFamily { found, .. }) => format!("unusable: a {found} model"),
        Err(e) => format!("unusable: {e}"),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// `tarjama models list`: one line per catalog model, defaults marked `*`.
pub fn listing(catalog: &Catalog, models_dir: &Path) -> String {
    let mut out = format!(
        "{:<22} {:<13} {:<10} {:>7} {:>9}  {:<40} {}\n",
        "NAME", "TASK", "LICENCE", "PARAMS", "DOWNLOAD", "PUBLISHED QUALITY", "LOCAL"
    );
    for m in &catalog.models {
        let name = format!("{}{}", m.name, if m.default { " *" } else { "" });
        out += &format!(
            "{:<22} {:<13} {:<10} {:>6}M {:>7}MB  {:<40} {}\n",
            name,
            m.task.name(),
            m.license,
            (m.parameters + 500_000) / 1_000_000,
            m.download_mb,
            m.headline_quality(),
            local_status(m, models_dir)
        );
    }
    out += &format!(
        "* default; local folders: {}/NAME/ (`tarjama models fetch NAME`)\n",
        models_dir.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_with_one_default_per_task() {
        let c = Catalog::builtin().unwrap();
        for task in [CatalogTask::Translation, CatalogTask::Summarization] {
            let defaults: Vec<_> = c
                .models
                .iter()
                .filter(|m| m.task == task && m.default)
                .collect();
            assert_eq!(defaults.len(), 1, "{task:?}");
        }
        assert!(c.get("opus-mt-tc-big-ar-en").is_some());
    }

    #[test]
    fn names_are_bare_words_only() {
        assert_eq!(as_catalog_name("opus-mt-ar-en"), Some("opus-mt-ar-en"));
        for s in ["owner/name", "./opus-mt-ar-en", "/tmp", "a@b", "", "."] {
            assert_eq!(as_catalog_name(s), None, "{s}");
        }
    }

    #[test]
    fn commit_prefix_is_checked() {
        let c = Catalog::builtin().unwrap();
        let e = c.get("distilbart-cnn-12-6").unwrap();
        assert!(e.check_commit("7535a1ac00").is_ok());
        let err = e.check_commit("1111").unwrap_err().to_string();
        assert!(err.contains("1111") && err.contains("7535a1ac"), "{err}");
        assert!(c.get("bart-large-cnn").unwrap().check_commit("x").is_ok());
    }
}
