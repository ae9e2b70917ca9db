//! What to translate: a folder of `.txt` files or a JSONL file, as a list of items, each with
//! its id. A bad entry (unreadable line, no id, no text, duplicate id) becomes a failed item
//! with its place in the input, never an error of the whole run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ClientError;

/// One article to translate.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    /// Where it comes from, for messages: `file a.txt` or `line 7`.
    pub origin: String,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub enum Source {
    /// A `.txt` file, read only when its turn comes so that a big folder is never all in
    /// memory at once.
    File(PathBuf),
    /// Text already in hand (a JSONL line).
    Text(Article),
}

/// The Arabic article as the server gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub body: String,
    pub title_from_first_line: bool,
}

/// An input entry that cannot be translated; it counts as a failed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadItem {
    /// The item's id when the entry has one, else its place (`line 7`).
    pub id: String,
    pub message: String,
}

pub type Entry = Result<Item, BadItem>;

/// Reads the input: a folder (its `*.txt`, `*.html` and `*.htm` files, sorted by name) or a
/// `.jsonl`/`.ndjson` file.
pub async fn load(path: &Path, title_from_first_line: bool) -> Result<Vec<Entry>, ClientError> {
    let io_error = |source| ClientError::Input {
        path: path.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(io_error)?;
    let entries = if meta.is_dir() {
        folder(path).await?
    } else if is_jsonl(path) {
        let bytes = tokio::fs::read(path).await.map_err(io_error)?;
        jsonl(&bytes, title_from_first_line)
    } else {
        return Err(ClientError::InputKind(path.to_path_buf()));
    };
    Ok(reject_duplicates(entries))
}

fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"))
}

async fn folder(dir: &Path) -> Result<Vec<Entry>, ClientError> {
    let io_error = |source| ClientError::Input {
        path: dir.to_path_buf(),
        source,
    };
    let mut listing = tokio::fs::read_dir(dir).await.map_err(io_error)?;
    let mut files = Vec::new();
    while let Some(entry) = listing.next_entry().await.map_err(io_error)? {
        let path = entry.path();
        let is_txt = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["txt", "html", "htm"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        });
        if is_txt && entry.file_type().await.map_err(io_error)?.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files.into_iter().map(txt_item).collect())
}

fn txt_item(path: PathBuf) -> Entry {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let Some(id) = path
        .file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
    else {
        return Err(BadItem {
            message: format!("file {name}: the name is not UTF-8, so it cannot be an id"),
            id: name,
        });
    };
    Ok(Item {
        id,
        origin: format!("file {name}"),
        source: Source::File(path),
    })
}

/// The article of an item; for a file, reads it now (`title_from_first_line` is the flag's,
/// for files).
pub async fn read(item: &Item, title_from_first_line: bool) -> Result<Article, String> {
    let path = match &item.source {
        Source::Text(article) => return Ok(article.clone()),
        Source::File(path) => path,
    };
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let body =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    if body.trim().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Article {
        title: String::new(),
        body,
        title_from_first_line,
    })
}

/// Parses JSONL; lines are numbered from 1 and blank lines are skipped.
fn jsonl(bytes: &[u8], title_from_first_line: bool) -> Vec<Entry> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(i, line)| jsonl_line(i + 1, line, title_from_first_line))
        .collect()
}

fn jsonl_line(number: usize, line: &[u8], title_from_first_line: bool) -> Entry {
    let place = format!("line {number}");
    let bad = |id: Option<&str>, what: String| BadItem {
        id: id.map_or_else(|| place.clone(), str::to_string),
        message: format!("{place}: {what}"),
    };
    let value: Value =
        serde_json::from_slice(line).map_err(|e| bad(None, format!("invalid JSON ({e})")))?;
    let Value::Object(fields) = value else {
        return Err(bad(None, "not a JSON object".into()));
    };
    let id = match fields.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        // Numeric ids are common in exported datasets; they become their decimal text.
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(bad(
                None,
                "`id` must be a non-empty string or a number".into(),
            ))
        }
        None => return Err(bad(None, "no `id`".into())),
    };
    let article = article_fields(&fields, title_from_first_line).map_err(|m| bad(Some(&id), m))?;
    Ok(Item {
        id,
        origin: place.clone(),
        source: Source::Text(article),
    })
}

/// `text` (like a .txt file), or `title` and/or `body`.
fn article_fields(
    fields: &serde_json::Map<String, Value>,
    title_from_first_line: bool,
) -> Result<Article, String> {
    let text = string_field(fields, "text")?;
    let title = string_field(fields, "title")?;
    let body = string_field(fields, "body")?;
    let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
    match text {
        Some(_) if title.is_some() || body.is_some() => {
            Err("give either `text` or `title`/`body`, not both".into())
        }
        Some(text) if text.trim().is_empty() => Err("`text` is empty".into()),
        Some(text) => Ok(Article {
            title: String::new(),
            body: text,
            title_from_first_line,
        }),
        None if blank(&title) && blank(&body) => {
            Err("no text: needs a non-empty `text`, `title` or `body`".into())
        }
        None => Ok(Article {
            title: title.unwrap_or_default(),
            body: body.unwrap_or_default(),
            title_from_first_line: false,
        }),
    }
}

fn string_field(
    fields: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

/// The first entry with an id wins; later ones are failures that point at the first.
fn reject_duplicates(entries: Vec<Entry>) -> Vec<Entry> {
    let mut first: HashMap<String, String> = HashMap::new();
    entries
        .into_iter()
        .map(|entry| {
            let item = entry?;
            match first.get(&item.id) {
                Some(origin) => Err(BadItem {
                    message: format!(
                        "{}: duplicate id `{}` (first at {origin})",
                        item.origin, item.id
                    ),
                    id: item.id,
                }),
                None => {
                    first.insert(item.id.clone(), item.origin.clone());
                    Ok(item)
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(entries: &[Entry]) -> Vec<Result<&str, &str>> {
        entries
            .iter()
            .map(|e| match e {
                Ok(item) => Ok(item.id.as_str()),
                Err(bad) => Err(bad.message.as_str()),
            })
            .collect()
    }

    #[test]
    fn jsonl_lines_become_items_or_numbered_failures() {
        let input = br#"{"id": "a", "text": "x"}

{"id": 7, "title": "t", "body": "b"}
{"id": "b"}
not json
{"text": "no id"}
{"id": "a", "body": "again"}
{"id": "c", "text": "x", "body": "y"}
"#;
        let entries = reject_duplicates(jsonl(input, true));
        let got = ids(&entries);
        assert_eq!(got[0], Ok("a"));
        assert_eq!(got[1], Ok("7"));
        assert!(
            got[2].unwrap_err().starts_with("line 4: no text"),
            "{got:?}"
        );
        assert!(got[3].unwrap_err().starts_with("line 5: invalid JSON"));
        assert_eq!(got[4], Err("line 6: no `id`"));
        assert_eq!(got[5], Err("line 7: duplicate id `a` (first at line 1)"));
        assert!(got[6].unwrap_err().contains("not both"));
        assert_eq!(entries.len(), 7);
        let Ok(Item {
            source: Source::Text(a),
            ..
        }) = &entries[0]
        else {
            panic!("text item")
        };
        assert!(a.title_from_first_line);
    }

    #[test]
    fn a_bad_line_without_id_is_named_by_its_place() {
        let entries = jsonl(b"[1]\n", false);
        let Err(bad) = &entries[0] else { panic!() };
        assert_eq!(bad.id, "line 1");
    }
}
