//! The JSONL results file: one line per finished article, appended and flushed as each one
//! finishes, so a killed run loses at most the line it was writing. A rerun reads the ids
//! already there and skips them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::ClientError;

/// One result line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// English title ("" when the article has none).
    pub title: String,
    /// English body; paragraphs separated by one blank line.
    pub translation: String,
    /// None with `--summary none` (or when the server made none).
    pub summary: Option<String>,
    /// "extractive" or "abstractive", with the summary.
    pub summary_method: Option<String>,
    pub detected_language: String,
    pub usage: RecordUsage,
    pub timings: RecordTimings,
    /// Calls made for this article (1 when the first one succeeded).
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordTimings {
    /// Server side, of the successful call.
    pub queue_ms: u32,
    pub inference_ms: u32,
    pub total_ms: u32,
    /// Client side: from the article's first call to its result, retries and waits included.
    pub client_ms: u64,
}

/// What resuming needs of a line: its id (other fields are ignored).
#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// The ids already in the output (none when it does not exist yet). A torn last line (the
/// run was killed while writing it) is cut off so that appending starts on a clean line;
/// any other line that is not a result is an error, because then the file is not ours.
pub async fn resume(path: &Path) -> Result<HashSet<String>, ClientError> {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(source) => return Err(output_error(path, source)),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut ids = HashSet::new();
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let record: IdOnly = serde_json::from_slice(line).map_err(|e| ClientError::OutputLine {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        ids.insert(record.id);
    }
    repair_tail(path, &bytes, complete, &mut ids).await?;
    Ok(ids)
}

/// Deals with bytes after the last newline: a whole record only lacks its newline (keep it),
/// anything else is a torn write (cut it).
async fn repair_tail(
    path: &Path,
    bytes: &[u8],
    complete: usize,
    ids: &mut HashSet<String>,
) -> Result<(), ClientError> {
    let tail = &bytes[complete..];
    if tail.trim_ascii().is_empty() {
        return Ok(());
    }
    // Append mode: the newline lands at the end; truncation works all the same.
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(|e| output_error(path, e))?;
    match serde_json::from_slice::<IdOnly>(tail) {
        Ok(record) => {
            ids.insert(record.id);
            file.write_all(b"\n").await
        }
        Err(_) => {
            tracing::warn!(
                path = %path.display(),
                bytes = tail.len(),
                "the last line of the output is incomplete (an interrupted run); it is dropped and that article redone"
            );
            file.set_len(complete as u64).await
        }
    }
    .map_err(|e| output_error(path, e))?;
    file.flush().await.map_err(|e| output_error(path, e))
}

fn output_error(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends result lines.
pub struct Writer {
    file: tokio::fs::File,
    path: PathBuf,
}

impl Writer {
    pub async fn open(path: &Path) -> Result<Self, ClientError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|e| output_error(path, e))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes one line in a single write and flushes it to the OS before returning, so that a
    /// line reported done survives a kill of this process.
    pub async fn append(&mut self, record: &Record) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(record).map_err(|e| ClientError::Output {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .await
            .map_err(|e| output_error(&self.path, e))?;
        self.file
            .flush()
            .await
            .map_err(|e| output_error(&self.path, e))
    }

    /// Asks the OS to put the file on disk (end of run).
    pub async fn sync(&mut self) -> Result<(), ClientError> {
        self.file
            .sync_data()
            .await
            .map_err(|e| output_error(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            title: String::new(),
            translation: "x".into(),
            summary: None,
            summary_method: None,
            detected_language: "ar".into(),
            usage: RecordUsage::default(),
            timings: RecordTimings::default(),
            attempts: 1,
        }
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_and_a_whole_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut w = Writer::open(&path).await.unwrap();
        w.append(&record("a")).await.unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"id":"b","tit"#);
        std::fs::write(&path, &bytes).unwrap();
        let ids = resume(&path).await.unwrap();
        assert_eq!(ids, HashSet::from(["a".to_string()]));
        let mut w = Writer::open(&path).await.unwrap();
        w.append(&record("b")).await.unwrap();
        drop(w);
        // A whole record without its newline is kept, and gets one.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"id":"c"}"#);
        std::fs::write(&path, &bytes).unwrap();
        let ids = resume(&path).await.unwrap();
        assert_eq!(ids.len(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with('\n'));
    }

    #[tokio::test]
    async fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello\nworld\n").unwrap();
        let err = resume(&path).await.unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
