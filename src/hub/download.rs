//! Fetching a model from the hub into the standard cache with hf-hub's async
//! API, on a private runtime so `resolve` stays a plain blocking call.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hf_hub::{HFClient, HFError, HFResult};

use super::cache::{is_commit_sha, RepoCache};
use super::files;
use super::progress::{Activity, FileProgressHandler};
use super::HubError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// hf-hub's internal no-redirect client (used for HEAD) has no timeouts, so a
/// watchdog aborts any step that sees no transfer activity for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Fetch<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub endpoint: &'a str,
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub progress: bool,
}

/// Downloads the model's files; returns the snapshot folder and commit sha.
pub(crate) fn fetch(req: &Fetch<'_>) -> Result<(PathBuf, String), HubError> {
    on_private_runtime(req, req.run())
}

/// Runs `job` to completion on a dedicated thread with its own current-thread runtime: safe
/// to call from inside another tokio runtime (block_on there would panic).
pub(crate) fn on_private_runtime<T: Send>(
    req: &Fetch<'_>,
    job: impl Future<Output = Result<T, HubError>> + Send,
) -> Result<T, HubError> {
    std::thread::scope(|scope| {
        let job = scope.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| req.fail(format!("cannot start runtime: {e}")))?;
            rt.block_on(job)
        });
        job.join()
            .unwrap_or_else(|_| Err(req.fail("download thread panicked".into())))
    })
}

impl Fetch<'_> {
    async fn run(&self) -> Result<(PathBuf, String), HubError> {
        let client = self.client()?;
        let (owner, name) = hf_hub::split_id(self.repo);
        let model = client.model(owner, name);
        let activity = Activity::new();
        let (sha, selection) = self.listing(&client, &activity).await?;
        for file in &selection.wanted {
            let handler = FileProgressHandler::new(file, self.progress, activity.clone());
            let send = model
                .download_file()
                .filename(*file)
                .revision(sha.clone())
                .progress(handler)
                .send();
            self.guard(&activity, send).await?;
            tracing::debug!(repo = self.repo, file, "fetched");
        }
        let cache = RepoCache::new(&self.cache_dir, self.repo);
        cache.mark_absent(&sha, &selection.absent)?;
        cache.write_ref(self.revision, &sha)?;
        Ok((cache.snapshot(&sha), sha))
    }

    /// The commit the revision points at, and the files to fetch at that commit.
    pub(crate) async fn listing(
        &self,
        client: &HFClient,
        activity: &Activity,
    ) -> Result<(String, files::Selection), HubError> {
        let (owner, name) = hf_hub::split_id(self.repo);
        let info = self
            .guard(
                activity,
                client
                    .model(owner, name)
                    .info()
                    .revision(self.revision.to_string())
                    .send(),
            )
            .await?;
        // The listing's sha pins every file to one commit even if the branch moves.
        let sha = info
            .sha
            .filter(|s| is_commit_sha(s))
            .ok_or_else(|| self.fail("the hub's repository listing has no commit sha".into()))?;
        let listing: Vec<String> = info
            .siblings
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.rfilename)
            .collect();
        let selection = files::select(&listing).map_err(|missing| HubError::MissingFiles {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            missing,
        })?;
        Ok((sha, selection))
    }

    /// An HTTP client with our timeouts, following redirects up to `redirects`.
    pub(crate) fn http(&self, redirects: usize) -> Result<reqwest::Client, HubError> {
        let policy = match redirects {
            0 => reqwest::redirect::Policy::none(),
            n => reqwest::redirect::Policy::limited(n),
        };
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(policy)
            .user_agent(concat!("tarjama/", env!("CARGO_PKG_VERSION"), "; hf-hub/1"))
            .build()
            .map_err(|e| self.fail(format!("cannot build HTTP client: {e}")))
    }

    pub(crate) fn client(&self) -> Result<HFClient, HubError> {
        let http = self.http(10)?;
        let mut builder = HFClient::builder()
            .endpoint(self.endpoint)
            .cache_dir(self.cache_dir.clone())
            .client(http)
            // Few, short retries: a dead hub should fail startup fast.
            .retry_max_attempts(2)
            .retry_base_delay(Duration::from_millis(100));
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        builder.build().map_err(|e| self.classify(e))
    }

    /// Awaits `fut`, failing if it errors or stalls past [`STALL_TIMEOUT`].
    async fn guard<T>(
        &self,
        activity: &Activity,
        fut: impl Future<Output = HFResult<T>>,
    ) -> Result<T, HubError> {
        activity.touch();
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return out.map_err(|e| self.classify(e)),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if activity.idle() > STALL_TIMEOUT {
                        return Err(self.unreachable(format!(
                            "no response for {}s", STALL_TIMEOUT.as_secs()
                        )));
                    }
                }
            }
        }
    }

    fn classify(&self, err: HFError) -> HubError {
        let (repo, revision, endpoint) = self.names();
        match err {
            // hf-hub's message hides the cause ("connection refused", "timed out").
            HFError::Request { ref source, .. } => self.unreachable(cause_chain(source)),
            HFError::RepoNotFound { .. }
            | HFError::RevisionNotFound { .. }
            | HFError::EntryNotFound { .. } => {
                let detail = err.to_string();
                HubError::NotFound {
                    repo,
                    revision,
                    endpoint,
                    detail,
                }
            }
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => {
                let detail = err.to_string();
                HubError::Unauthorized {
                    repo,
                    revision,
                    endpoint,
                    detail,
                }
            }
            _ => self.fail(err.to_string()),
        }
    }

    fn names(&self) -> (String, String, String) {
        (self.repo.into(), self.revision.into(), self.endpoint.into())
    }

    pub(crate) fn unreachable(&self, detail: String) -> HubError {
        let (repo, revision, endpoint) = self.names();
        HubError::Unreachable {
            repo,
            revision,
            endpoint,
            detail,
        }
    }

    pub(crate) fn fail(&self, detail: String) -> HubError {
        let (repo, revision, endpoint) = self.names();
        HubError::Download {
            repo,
            revision,
            endpoint,
            detail,
        }
    }
}

/// `outer: inner: innermost` for an error and its sources.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}
