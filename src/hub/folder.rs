//! A model's files downloaded into a plain folder (to be copied to servers without hub
//! access), not the cache. hf-hub's own folder download neither resumes nor checks what it
//! wrote, so files are fetched here: an interrupted file resumes from its `.part` with an
//! HTTP range, and a file the hub gives a sha256 for (LFS files: `X-Linked-Etag`) is
//! refused unless its bytes hash to it. Other files are checked by size.

use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, LOCATION, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::download::{on_private_runtime, Fetch};
use super::progress::{file_bar, Activity};
use super::HubError;

/// A fetched file: its name, size and sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What the hub says about a file before it is fetched.
struct Remote {
    /// Where the bytes are (the CDN for LFS files).
    url: reqwest::Url,
    size: Option<u64>,
    sha256: Option<String>,
}

/// Downloads the files of `req` at its revision into `dest`; returns the commit and files.
pub(crate) fn fetch_into(
    req: &Fetch<'_>,
    dest: &Path,
    expected_commit: Option<&str>,
) -> Result<(String, Vec<FetchedFile>), HubError> {
    on_private_runtime(req, run(req, dest, expected_commit))
}

async fn run(
    req: &Fetch<'_>,
    dest: &Path,
    expected_commit: Option<&str>,
) -> Result<(String, Vec<FetchedFile>), HubError> {
    let (sha, selection) = req.listing(&req.client()?, &Activity::new()).await?;
    if let Some(expected) = expected_commit.filter(|e| !sha.starts_with(e)) {
        return Err(HubError::UnexpectedCommit {
            repo: req.repo.to_string(),
            revision: req.revision.to_string(),
            expected: expected.to_string(),
            got: sha,
        });
    }
    std::fs::create_dir_all(dest).map_err(|e| HubError::io(dest, e))?;
    let head = req.http(0)?;
    let get = req.http(10)?;
    let mut fetched = Vec::new();
    for file in &selection.wanted {
        let remote = probe(req, &head, &sha, file).await?;
        fetched.push(fetch_file(req, &get, &remote, dest, file).await?);
        tracing::debug!(repo = req.repo, file, "fetched");
    }
    Ok((sha, fetched))
}

fn auth(req: &Fetch<'_>, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &req.token {
        Some(token) => builder.bearer_auth(token),
        None => builder,
    }
}

/// Most redirects within the hub itself (renamed repositories, its resolve cache) followed
/// while probing a file.
const MAX_HUB_REDIRECTS: usize = 5;

/// HEAD without following redirects to the CDN: the hub's own headers carry the LFS sha256
/// and size. Relative redirects stay on the hub and are followed, as huggingface_hub does.
async fn probe(
    req: &Fetch<'_>,
    http: &reqwest::Client,
    sha: &str,
    file: &str,
) -> Result<Remote, HubError> {
    let url = format!("{}/{}/resolve/{sha}/{file}", req.endpoint, req.repo);
    let mut url = reqwest::Url::parse(&url).map_err(|e| req.fail(format!("bad URL {url}: {e}")))?;
    let (mut size, mut sha256) = (None, None);
    for _ in 0..=MAX_HUB_REDIRECTS {
        let resp = auth(req, http.head(url.clone()))
            .send()
            .await
            .map_err(|e| req.unreachable(e.to_string()))?;
        let status = resp.status();
        if !(status.is_success() || status.is_redirection()) {
            return Err(req.fail(format!("HEAD {file}: HTTP {status}")));
        }
        let text = |name: &str| header(resp.headers(), name);
        size = size.or_else(|| text("x-linked-size").and_then(|s| s.parse().ok()));
        sha256 = sha256.or_else(|| text("x-linked-etag").filter(|e| e.len() == 64 && is_hex(e)));
        let Some(to) = text(LOCATION.as_str()).filter(|_| status.is_redirection()) else {
            // A redirect's Content-Length is its own body's, not the file's.
            let size = size.or_else(|| text(CONTENT_LENGTH.as_str()).and_then(|s| s.parse().ok()));
            return Ok(Remote { url, size, sha256 });
        };
        let next = url
            .join(&to)
            .map_err(|e| req.fail(format!("bad redirect {to}: {e}")))?;
        if reqwest::Url::parse(&to).is_ok() {
            // Absolute: the CDN, where the bytes are.
            return Ok(Remote {
                url: next,
                size,
                sha256,
            });
        }
        url = next;
    }
    Err(req.fail(format!(
        "HEAD {file}: more than {MAX_HUB_REDIRECTS} redirects"
    )))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    Some(
        value
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string(),
    )
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn fetch_file(
    req: &Fetch<'_>,
    http: &reqwest::Client,
    remote: &Remote,
    dest: &Path,
    file: &str,
) -> Result<FetchedFile, HubError> {
    let target = dest.join(file);
    if target.is_file() {
        if let Ok(done) = verify(req, &target, file, remote) {
            return Ok(done);
        }
        std::fs::remove_file(&target).map_err(|e| HubError::io(&target, e))?;
    }
    let part = dest.join(format!("{file}.part"));
    let bar = req.progress.then(|| file_bar(file));
    download(req, http, remote, &part, bar.as_ref()).await?;
    if let Some(bar) = &bar {
        bar.finish();
    }
    let done = verify(req, &part, file, remote).inspect_err(|_| {
        // A corrupt partial file must not be resumed again.
        let _ = std::fs::remove_file(&part);
    })?;
    std::fs::rename(&part, &target).map_err(|e| HubError::io(&target, e))?;
    Ok(done)
}

/// Appends the missing bytes of `remote` to `part` (from its start if the server ignores
/// the range).
async fn download(
    req: &Fetch<'_>,
    http: &reqwest::Client,
    remote: &Remote,
    part: &Path,
    bar: Option<&ProgressBar>,
) -> Result<(), HubError> {
    let mut have = std::fs::metadata(part).map_or(0, |m| m.len());
    if remote.size.is_some_and(|size| have > size) {
        have = 0;
    }
    if remote.size == Some(have) && have > 0 {
        return Ok(());
    }
    let mut get = auth(req, http.get(remote.url.clone()));
    if have > 0 {
        get = get.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = get
        .send()
        .await
        .map_err(|e| req.unreachable(e.to_string()))?;
    let resumed = resp.status() == StatusCode::PARTIAL_CONTENT;
    if !resp.status().is_success() {
        return Err(req.fail(format!("GET {}: HTTP {}", remote.url, resp.status())));
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .map_err(|e| HubError::io(part, e))?;
    let start = if resumed { have } else { 0 };
    if let Some(bar) = bar {
        bar.set_length(remote.size.unwrap_or(0));
        bar.set_position(start);
    }
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| req.unreachable(e.to_string()))?
    {
        out.write_all(&chunk).map_err(|e| HubError::io(part, e))?;
        if let Some(bar) = bar {
            bar.inc(chunk.len() as u64);
        }
    }
    out.flush().map_err(|e| HubError::io(part, e))
}

/// The file's size and sha256 against what the hub announced.
fn verify(
    req: &Fetch<'_>,
    path: &Path,
    file: &str,
    remote: &Remote,
) -> Result<FetchedFile, HubError> {
    let (bytes, sha256) = hash_file(path)?;
    if let Some(size) = remote.size.filter(|&s| s != bytes) {
        return Err(req.fail(format!(
            "{file}: got {bytes} bytes, the hub announced {size}"
        )));
    }
    if let Some(expected) = remote.sha256.as_ref().filter(|e| **e != sha256) {
        return Err(HubError::Checksum {
            repo: req.repo.to_string(),
            file: file.to_string(),
            expected: expected.clone(),
            got: sha256,
        });
    }
    Ok(FetchedFile {
        name: file.to_string(),
        bytes,
        sha256,
    })
}

fn hash_file(path: &Path) -> Result<(u64, String), HubError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| HubError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes, hex))
}

/// The folder a model was fetched into, with where it came from.
#[derive(Debug, Clone)]
pub struct FetchedFolder {
    pub dir: PathBuf,
    pub repo: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<FetchedFile>,
}
