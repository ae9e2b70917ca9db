//! A stand-in for the Hugging Face Hub on 127.0.0.1, for tests.
//!
//! Serves fixture folders at the hub's URL layout and answers like the real
//! hub does for what hf-hub asks:
//! - `GET /api/models/{repo}[/revision/{rev}]` → JSON with `id`, `sha`, `siblings[].rfilename`
//! - `HEAD|GET /{repo}/resolve/{rev}/{file}` → regular files: 200 with `ETag`
//!   (git-oid-like), `X-Repo-Commit`, `Content-Length`; LFS-like files
//!   (`*.safetensors`, `*.bin`, ...): 302 to an absolute CDN URL with
//!   `X-Linked-Etag` (sha256), `X-Linked-Size`, `X-Repo-Commit`; missing
//!   files: 404 with `X-Error-Code: EntryNotFound`
//! - `HEAD|GET /cdn-lfs/{repo}/{sha}/{file}` → the bytes; `Range: bytes=a-b` gives 206.
//!
//! `{rev}` is percent-decoded (`refs%2Fpr%2F13`) and matches a revision name or
//! a commit sha. Self-contained (std + sha2); plain HTTP/1.1 with keep-alive,
//! bounded in connections, requests and idle time; stops on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

const MAX_CONNECTIONS: usize = 256;
const MAX_REQUESTS_PER_CONNECTION: usize = 500;
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const LFS_EXTENSIONS: &[&str] = &[
    ".safetensors",
    ".bin",
    ".pt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".ot",
];

#[derive(Clone, Debug)]
pub struct StandinRepo {
    pub repo_id: String,
    pub revision: String,
    pub sha: String,
    pub dir: PathBuf,
}

struct Shared {
    repos: Vec<StandinRepo>,
    requests: Mutex<Vec<String>>,
    stop: AtomicBool,
    connections: AtomicUsize,
    base: String,
}

pub struct StandinHub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StandinHub {
    /// `repos`: `(repo_id, revision_name, commit_sha, dir)`; a repo may appear
    /// several times with different revisions.
    pub fn start<R, V, S, P>(repos: Vec<(R, V, S, P)>) -> StandinHub
    where
        R: Into<String>,
        V: Into<String>,
        S: Into<String>,
        P: Into<PathBuf>,
    {
        let repos = repos
            .into_iter()
            .map(|(r, v, s, p)| StandinRepo {
                repo_id: r.into(),
                revision: v.into(),
                sha: s.into(),
                dir: p.into(),
            })
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stand-in hub");
        let addr = listener.local_addr().expect("stand-in hub address");
        let shared = Arc::new(Shared {
            repos,
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            base: format!("http://{addr}"),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || accept_loop(listener, s));
        StandinHub {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        self.shared.base.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Requests seen so far, as `"METHOD /path"` (`"METHOD /path [range bytes=a-]"` with a
    /// Range header).
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for StandinHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the stop flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            continue; // dropped: bounded
        }
        let s = shared.clone();
        std::thread::spawn(move || serve_connection(stream, &s));
    }
}

struct Request {
    method: String,
    path: String,
    range: Option<String>,
    close: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or("").to_string();
    let (mut range, mut close, mut body_len) = (None, false, 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "range" => range = Some(value.to_string()),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "content-length" => body_len = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; body_len.min(1 << 20)];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        range,
        close,
    })
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        if let Ok(mut log) = shared.requests.lock() {
            log.push(match &req.range {
                Some(range) => format!("{} {} [range {range}]", req.method, req.path),
                None => format!("{} {}", req.method, req.path),
            });
        }
        let resp = route(shared, &req);
        if resp.write(&mut writer, req.method == "HEAD").is_err() || req.close {
            return;
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn write(&self, w: &mut impl Write, head_only: bool) -> std::io::Result<()> {
        let reason = match self.status {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            404 => "Not Found",
            405 => "Method Not Allowed",
            416 => "Range Not Satisfiable",
            _ => "Other",
        };
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        w.write_all(out.as_bytes())?;
        if !head_only {
            w.write_all(&self.body)?;
        }
        w.flush()
    }
}

fn not_found(code: &str, msg: &str) -> Response {
    Response::new(404, format!("{{\"error\":\"{msg}\"}}"))
        .header("Content-Type", "application/json")
        .header("X-Error-Code", code)
        .header("X-Error-Message", msg)
}

fn route(shared: &Shared, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::new(405, "");
    }
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "models", o, n] => api_info(shared, &format!("{o}/{n}"), "main"),
        ["api", "models", o, n, "revision", rev] => {
            api_info(shared, &format!("{o}/{n}"), &decode(rev))
        }
        ["cdn-lfs", o, n, sha, file @ ..] => {
            cdn(shared, &format!("{o}/{n}"), sha, &file.join("/"), req)
        }
        [o, n, "resolve", rev, file @ ..] if !file.is_empty() => resolve(
            shared,
            &format!("{o}/{n}"),
            &decode(rev),
            &decode(&file.join("/")),
            req,
        ),
        _ => not_found("NotFound", "no such route"),
    }
}

fn find<'a>(shared: &'a Shared, repo: &str, rev: &str) -> Result<&'a StandinRepo, Response> {
    let mut of_repo = shared.repos.iter().filter(|r| r.repo_id == repo).peekable();
    if of_repo.peek().is_none() {
        return Err(not_found("RepoNotFound", "Repository not found"));
    }
    of_repo
        .find(|r| r.revision == rev || r.sha == rev)
        .ok_or_else(|| not_found("RevisionNotFound", "Invalid rev id"))
}

fn api_info(shared: &Shared, repo: &str, rev: &str) -> Response {
    let entry = match find(shared, repo, rev) {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    let siblings: Vec<String> = list_files(&entry.dir)
        .iter()
        .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
        .collect();
    let body = format!(
        "{{\"_id\":\"standin\",\"id\":\"{repo}\",\"modelId\":\"{repo}\",\"sha\":\"{}\",\"private\":false,\"disabled\":false,\"gated\":false,\"tags\":[],\"siblings\":[{}]}}",
        entry.sha,
        siblings.join(",")
    );
    Response::new(200, body).header("Content-Type", "application/json")
}

fn resolve(shared: &Shared, repo: &str, rev: &str, file: &str, req: &Request) -> Response {
    let entry = match find(shared, repo, rev) {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    let Some(bytes) = read_file(&entry.dir, file) else {
        return not_found("EntryNotFound", "Entry not found")
            .header("X-Repo-Commit", entry.sha.clone());
    };
    let oid = git_like_oid(&bytes);
    if LFS_EXTENSIONS.iter().any(|e| file.ends_with(e)) {
        let location = format!("{}/cdn-lfs/{repo}/{}/{file}", shared.base, entry.sha);
        return Response::new(302, Vec::new())
            .header("Location", location)
            .header("ETag", format!("\"{oid}\""))
            .header("X-Linked-Etag", format!("\"{}\"", sha256_hex(&bytes)))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("X-Repo-Commit", entry.sha.clone());
    }
    ranged(bytes, req)
        .header("ETag", format!("\"{oid}\""))
        .header("X-Repo-Commit", entry.sha.clone())
}

fn cdn(shared: &Shared, repo: &str, sha: &str, file: &str, req: &Request) -> Response {
    let entry = shared
        .repos
        .iter()
        .find(|r| r.repo_id == repo && r.sha == sha);
    match entry.and_then(|e| read_file(&e.dir, file)) {
        Some(bytes) => {
            let etag = sha256_hex(&bytes);
            ranged(bytes, req).header("ETag", format!("\"{etag}\""))
        }
        None => not_found("NotFound", "no such object"),
    }
}

/// 200 with the whole body, or 206 for a single `bytes=a-b` / `bytes=a-` range.
fn ranged(bytes: Vec<u8>, req: &Request) -> Response {
    let total = bytes.len();
    let Some(spec) = req.range.as_deref().and_then(|r| r.strip_prefix("bytes=")) else {
        return Response::new(200, bytes)
            .header("Accept-Ranges", "bytes")
            .header("Content-Type", "application/octet-stream");
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start: usize = a.parse().unwrap_or(usize::MAX);
    let end: usize = if b.is_empty() {
        total.saturating_sub(1)
    } else {
        b.parse().unwrap_or(0)
    };
    if start >= total || end < start {
        return Response::new(416, Vec::new()).header("Content-Range", format!("bytes */{total}"));
    }
    let end = end.min(total - 1);
    Response::new(206, bytes[start..=end].to_vec())
        .header("Accept-Ranges", "bytes")
        .header("Content-Range", format!("bytes {start}-{end}/{total}"))
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn read_file(dir: &Path, file: &str) -> Option<Vec<u8>> {
    if file.split('/').any(|s| s == ".." || s.is_empty()) {
        return None;
    }
    std::fs::read(dir.join(file)).ok()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 40 hex chars like a git blob id (sha256-based: only uniqueness matters here).
fn git_like_oid(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    h.finalize()
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
