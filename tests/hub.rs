mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::standin_hub::StandinHub;
use tarjama::hub::{resolve, HubError, HubOptions, ModelSource};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tiny-marian-ar-en"
);

/// The fixture as a hub repository serves it: without the reference outputs, and with
/// safetensors weights only (the .bin cases below build their own repositories).
fn hub_repo() -> &'static Path {
    static REPO_DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    REPO_DIR
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            for entry in std::fs::read_dir(FIXTURE).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                if name != "reference.json" && name != "pytorch_model.bin" {
                    std::fs::copy(&path, dir.path().join(name)).unwrap();
                }
            }
            dir
        })
        .path()
}
const REPO: &str = "Helsinki-NLP/opus-mt-ar-en";
const SHA_MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const SHA_PR: &str = "fedcba9876543210fedcba9876543210fedcba98";
/// Generous bound on requests for one download of the fixture (1 listing + HEAD/GET per file + redirects).
const MAX_REQUESTS: usize = 30;

fn hub_source(spec: &str) -> ModelSource {
    spec.parse().unwrap()
}

fn opts(cache: &Path, endpoint: &str) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        endpoint: Some(endpoint.to_string()),
        ..HubOptions::default()
    }
}

fn fixture_hub() -> StandinHub {
    StandinHub::start(vec![
        (REPO, "main", SHA_MAIN, hub_repo().to_path_buf()),
        (REPO, "refs/pr/13", SHA_PR, hub_repo().to_path_buf()),
    ])
}

fn assert_same_files(src: &Path, dst: &Path) {
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let got = std::fs::read(dst.join(&name)).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(
            got,
            std::fs::read(entry.path()).unwrap(),
            "{name:?} differs"
        );
    }
}

fn model_cache(cache: &Path) -> PathBuf {
    cache.join("models--Helsinki-NLP--opus-mt-ar-en")
}

#[test]
fn downloads_main_into_standard_cache_layout() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let m = resolve(&hub_source(REPO), &opts(cache.path(), &hub.endpoint())).unwrap();

    assert_eq!(m.id, REPO);
    assert_eq!(m.revision, SHA_MAIN);
    assert_eq!(
        m.dir,
        model_cache(cache.path()).join("snapshots").join(SHA_MAIN)
    );
    assert_same_files(hub_repo(), &m.dir);
    assert!(m.weights_path().unwrap().ends_with("model.safetensors"));
    let main_ref = std::fs::read_to_string(model_cache(cache.path()).join("refs/main")).unwrap();
    assert_eq!(main_ref, SHA_MAIN);
    // Snapshot entries are symlinks into blobs/, as Python and hf-hub lay them out.
    let link = std::fs::read_link(m.dir.join("config.json")).unwrap();
    assert!(link.to_string_lossy().contains("blobs"), "{link:?}");
    let reqs = hub.requests();
    assert!(reqs.contains(&"GET /api/models/Helsinki-NLP/opus-mt-ar-en/revision/main".to_string()));
    assert!(reqs.len() <= MAX_REQUESTS, "{reqs:#?}");
}

#[test]
fn downloads_pinned_commit_sha() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let m = resolve(
        &hub_source(&format!("{REPO}@{SHA_PR}")),
        &opts(cache.path(), &hub.endpoint()),
    )
    .unwrap();
    assert_eq!(m.revision, SHA_PR);
    assert_same_files(hub_repo(), &m.dir);
    assert!(
        !model_cache(cache.path()).join("refs").exists(),
        "a sha needs no ref"
    );
    assert!(hub.request_count() <= MAX_REQUESTS);
}

#[test]
fn downloads_pr_ref_with_encoded_revision() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let src = hub_source(&format!("{REPO}@refs/pr/13"));
    let m = resolve(&src, &opts(cache.path(), &hub.endpoint())).unwrap();
    assert_eq!(m.revision, SHA_PR);
    assert_same_files(hub_repo(), &m.dir);
    let pr_ref =
        std::fs::read_to_string(model_cache(cache.path()).join("refs/refs/pr/13")).unwrap();
    assert_eq!(pr_ref, SHA_PR);
    let reqs = hub.requests();
    assert!(
        reqs.contains(
            &"GET /api/models/Helsinki-NLP/opus-mt-ar-en/revision/refs%2Fpr%2F13".to_string()
        ),
        "{reqs:#?}"
    );
    // Files are fetched at the listed commit, so a moving ref cannot mix commits.
    assert!(
        reqs.iter()
            .filter(|r| r.contains("/resolve/"))
            .all(|r| r.contains(SHA_PR)),
        "{reqs:#?}"
    );

    let before = hub.request_count();
    resolve(&src, &opts(cache.path(), &hub.endpoint())).unwrap();
    assert_eq!(
        hub.request_count(),
        before,
        "cached ref must not hit the hub"
    );
}

#[test]
fn cached_second_resolve_makes_no_request() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let o = opts(cache.path(), &hub.endpoint());
    let first = resolve(&hub_source(REPO), &o).unwrap();
    let after_first = hub.request_count();
    assert!(after_first > 0 && after_first <= MAX_REQUESTS);

    let second = resolve(&hub_source(REPO), &o).unwrap();
    assert_eq!(second, first);
    assert_eq!(hub.request_count(), after_first, "{:#?}", hub.requests());
}

#[test]
fn prefers_safetensors_when_both_weights_are_listed() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(hub_repo(), repo.path());
    std::fs::write(repo.path().join("pytorch_model.bin"), b"fake torch weights").unwrap();
    let hub = StandinHub::start(vec![(REPO, "main", SHA_MAIN, repo.path())]);
    let cache = tempfile::tempdir().unwrap();
    let m = resolve(&hub_source(REPO), &opts(cache.path(), &hub.endpoint())).unwrap();
    assert!(m.dir.join("model.safetensors").is_file());
    assert!(!m.dir.join("pytorch_model.bin").exists());
    assert!(hub
        .requests()
        .iter()
        .all(|r| !r.contains("pytorch_model.bin")));
}

#[test]
fn falls_back_to_pytorch_bin_when_only_that_is_listed() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("config.json"),
        repo.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(repo.path().join("pytorch_model.bin"), b"fake torch weights").unwrap();
    let hub = StandinHub::start(vec![(REPO, "main", SHA_MAIN, repo.path())]);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(cache.path(), &hub.endpoint());
    let m = resolve(&hub_source(REPO), &o).unwrap();
    assert_same_files(repo.path(), &m.dir);
    assert!(m.weights_path().unwrap().ends_with("pytorch_model.bin"));
    assert!(hub
        .requests()
        .iter()
        .all(|r| !r.contains("model.safetensors")));

    // Absent files are remembered (.no_exist), so the cache counts as complete.
    let before = hub.request_count();
    resolve(&hub_source(REPO), &o).unwrap();
    assert_eq!(hub.request_count(), before);
}

#[test]
fn repo_without_weights_is_a_clear_error() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("config.json"),
        repo.path().join("config.json"),
    )
    .unwrap();
    let hub = StandinHub::start(vec![(REPO, "main", SHA_MAIN, repo.path())]);
    let cache = tempfile::tempdir().unwrap();
    let err = resolve(&hub_source(REPO), &opts(cache.path(), &hub.endpoint())).unwrap_err();
    assert!(matches!(err, HubError::MissingFiles { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn unknown_revision_is_not_found() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let err = resolve(
        &hub_source(&format!("{REPO}@nope")),
        &opts(cache.path(), &hub.endpoint()),
    )
    .unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains("nope") && msg.contains("local folder"),
        "{msg}"
    );
}

#[test]
fn unreachable_hub_is_one_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // Nothing listens on port 1.
    let err = resolve(&hub_source(REPO), &opts(cache.path(), "http://127.0.0.1:1")).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, HubError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(REPO) && msg.contains("main"), "{msg}");
    assert!(
        msg.contains("local folder") && msg.contains("/path/to/folder"),
        "{msg}"
    );
}

#[test]
fn offline_with_empty_cache_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts(cache.path(), "http://127.0.0.1:1");
    o.offline = true;
    let err = resolve(&hub_source(&format!("{REPO}@refs/pr/13")), &o).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains("refs/pr/13") && msg.contains("local folder"),
        "{msg}"
    );
}

#[test]
fn offline_with_warm_cache_makes_no_request() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let online = resolve(&hub_source(REPO), &opts(cache.path(), &hub.endpoint())).unwrap();
    let before = hub.request_count();
    let mut o = opts(cache.path(), &hub.endpoint());
    o.offline = true;
    assert_eq!(resolve(&hub_source(REPO), &o).unwrap(), online);
    assert_eq!(hub.request_count(), before);
    // Offline needs only config + weights: a lost optional file is tolerated.
    std::fs::remove_file(online.dir.join("vocab.json")).unwrap();
    assert_eq!(resolve(&hub_source(REPO), &o).unwrap().revision, SHA_MAIN);
    assert_eq!(hub.request_count(), before);
}

#[test]
fn incomplete_cache_is_completed_online() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let o = opts(cache.path(), &hub.endpoint());
    let m = resolve(&hub_source(REPO), &o).unwrap();
    std::fs::remove_file(m.dir.join("target.spm")).unwrap();
    let before = hub.request_count();
    let again = resolve(&hub_source(REPO), &o).unwrap();
    assert!(hub.request_count() > before);
    assert_same_files(hub_repo(), &again.dir);
}

#[test]
fn progress_bars_do_not_break_download() {
    let hub = fixture_hub();
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts(cache.path(), &hub.endpoint());
    o.progress = true;
    let m = resolve(&hub_source(REPO), &o).unwrap();
    assert_same_files(hub_repo(), &m.dir);
}

#[test]
fn local_folder_is_used_in_place() {
    let m = resolve(&ModelSource::Local(FIXTURE.into()), &HubOptions::default()).unwrap();
    assert_eq!(m.dir, PathBuf::from(FIXTURE));
    assert_eq!(m.revision, "local");
    assert_eq!(m.id, FIXTURE);
}

#[test]
fn local_folder_missing_files_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vocab.json"), "{}").unwrap();
    let err = resolve(
        &ModelSource::Local(dir.path().into()),
        &HubOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("model.safetensors"),
        "{msg}"
    );
    let err = resolve(
        &ModelSource::Local("/no/such/dir".into()),
        &HubOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not an existing folder"), "{err}");
}

#[test]
fn parses_model_sources() {
    let hub = |repo: &str, rev: Option<&str>| ModelSource::Hub {
        repo: repo.into(),
        revision: rev.map(Into::into),
    };
    assert_eq!(hub_source(REPO), hub(REPO, None));
    assert_eq!(
        hub_source("sshleifer/distilbart-cnn-12-6"),
        hub("sshleifer/distilbart-cnn-12-6", None)
    );
    assert_eq!(
        hub_source(&format!("{REPO}@{SHA_MAIN}")),
        hub(REPO, Some(SHA_MAIN))
    );
    assert_eq!(hub_source("a/b@refs/pr/13"), hub("a/b", Some("refs/pr/13")));
    assert_eq!(hub_source("a/b@v1.0"), hub("a/b", Some("v1.0")));
    // Paths: existing ones win, explicit relative/absolute forms always do.
    assert_eq!(hub_source(FIXTURE), ModelSource::Local(FIXTURE.into()));
    assert_eq!(
        hub_source("./models/x"),
        ModelSource::Local("./models/x".into())
    );
    assert_eq!(
        hub_source("/no/such/model"),
        ModelSource::Local("/no/such/model".into())
    );
    let here = std::env::current_dir().unwrap();
    let rel = Path::new(FIXTURE).strip_prefix(&here).unwrap();
    assert_eq!(
        hub_source(rel.to_str().unwrap()),
        ModelSource::Local(rel.into())
    );

    for bad in [
        "", "gpt2", "a/b/c", "a//b", "a/b@", "a b/c", "-a/b", "a/b.", "a--x/b", "a/b@x..y",
        "a/b@x y", "é/b",
    ] {
        let err = bad.parse::<ModelSource>();
        assert!(
            matches!(err, Err(HubError::InvalidSource { .. })),
            "{bad:?} -> {err:?}"
        );
    }
    let msg = "a/b/c".parse::<ModelSource>().unwrap_err().to_string();
    assert!(msg.contains("owner/name"), "{msg}");
}

fn copy_dir(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}
