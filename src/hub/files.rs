//! Which repository files a seq2seq model needs.

pub(crate) const CONFIG: &str = "config.json";
pub(crate) const SAFETENSORS: &str = "model.safetensors";
pub(crate) const PYTORCH_BIN: &str = "pytorch_model.bin";

/// Files fetched only when the repository has them.
pub(crate) const OPTIONAL: &[&str] = &[
    "generation_config.json",
    "source.spm",
    "target.spm",
    "vocab.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "merges.txt",
];

/// The files to download, chosen from a repository listing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Selection {
    pub wanted: Vec<&'static str>,
    /// Candidate files the repo lacks; recorded as `.no_exist` markers so a
    /// later start knows the cache is complete without asking the hub.
    pub absent: Vec<&'static str>,
}

/// Picks files from `listing`; `Err` names the required files that are missing.
pub(crate) fn select(listing: &[String]) -> Result<Selection, String> {
    let has = |f: &str| listing.iter().any(|l| l == f);
    let mut missing = Vec::new();
    if !has(CONFIG) {
        missing.push(CONFIG);
    }
    let weights = if has(SAFETENSORS) {
        Some(SAFETENSORS)
    } else if has(PYTORCH_BIN) {
        Some(PYTORCH_BIN)
    } else {
        missing.push("model.safetensors or pytorch_model.bin");
        None
    };
    if !missing.is_empty() {
        return Err(missing.join(", "));
    }
    let mut wanted = vec![CONFIG];
    wanted.extend(weights);
    let mut absent = Vec::new();
    if weights == Some(PYTORCH_BIN) {
        absent.push(SAFETENSORS);
    }
    for f in OPTIONAL {
        if has(f) {
            wanted.push(f);
        } else {
            absent.push(f);
        }
    }
    Ok(Selection { wanted, absent })
}

/// The weights file present in `dir`, preferring safetensors.
pub(crate) fn weights_in(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    [SAFETENSORS, PYTORCH_BIN]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}
