//! `serve` with a hub model id, against a stand-in hub on 127.0.0.1 selected by HF_ENDPOINT:
//! the pinned revision is downloaded on the first start, the second start makes no request,
//! and an unreachable hub stops the start with one clear error.
//! (One test in this binary: it sets process-wide environment variables.)

mod common;

use common::server::{serve_args, start, start_with, MARIAN};
use common::standin_hub::StandinHub;
use tarjama::proto::{ListModelsRequest, TextInput, TranslateRequest};

const REPO: &str = "Helsinki-NLP/opus-mt-ar-en";
const SHA: &str = "0a22ca0fe7fd0e314f4913e606ddc07d1ff9d718";

fn hub_repo_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(MARIAN).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name != "reference.json" && name != "pytorch_model.bin" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_downloads_a_pinned_revision_once_then_starts_from_the_cache() {
    let repo = hub_repo_dir();
    let hub = StandinHub::start(vec![(REPO, SHA, SHA, repo.path())]);
    std::env::set_var("HF_ENDPOINT", hub.endpoint());
    std::env::remove_var("HF_HUB_OFFLINE");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let model = format!("{REPO}@{SHA}");
    let flags = ["--translation-model", &model, "--cache-dir", &cache_dir];

    let server = start(&flags).await;
    let mut client = server.client().await;
    let models = client
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            models.models[0].id.as_str(),
            models.models[0].revision.as_str()
        ),
        (REPO, SHA)
    );
    let request = TranslateRequest {
        texts: vec![TextInput {
            id: "1".into(),
            text: "مرحبا".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let first = client
        .translate(request.clone())
        .await
        .unwrap()
        .into_inner();
    server.stop().await;
    let after_first = hub.request_count();
    assert!(after_first > 0, "nothing was downloaded");

    let server = start(&flags).await;
    let mut client = server.client().await;
    let second = client.translate(request).await.unwrap().into_inner();
    assert_eq!(second.translations[0].text, first.translations[0].text);
    server.stop().await;
    assert_eq!(
        hub.request_count(),
        after_first,
        "the cached start asked the hub: {:#?}",
        hub.requests()
    );

    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:1");
    let empty = tempfile::tempdir().unwrap();
    let empty_dir = empty.path().to_str().unwrap().to_string();
    let args = serve_args(&["--translation-model", &model, "--cache-dir", &empty_dir]);
    let err = start_with(args, None)
        .await
        .ended()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(REPO) && err.contains(SHA) && err.contains("local folder"),
        "{err}"
    );

    default_summarizer_is_served_only_at_its_commit().await;
}

/// The default summarizer is a catalog name for a movable pull-request ref: with no folder of
/// that name under --models-dir, it is downloaded and served when the ref resolves to the
/// catalogued commit, refused (with the commit it moved to) otherwise.
async fn default_summarizer_is_served_only_at_its_commit() {
    const BART: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny-bart-summarizer"
    );
    let catalog = tarjama::catalog::Catalog::builtin().unwrap();
    let entry = catalog
        .lookup(tarjama::config::DEFAULT_SUMMARIZATION_MODEL)
        .unwrap();
    let commit = entry.commit.clone().unwrap();
    let chosen = format!("{commit}{}", "0".repeat(40 - commit.len()));
    let moved = "1".repeat(40);
    let models_dir = tempfile::tempdir().unwrap();
    let models_dir = models_dir.path().to_str().unwrap().to_string();
    for (sha, served) in [(chosen.as_str(), true), (moved.as_str(), false)] {
        let hub = StandinHub::start(vec![(
            entry.hub_id.as_str(),
            entry.revision.as_str(),
            sha,
            BART,
        )]);
        std::env::set_var("HF_ENDPOINT", hub.endpoint());
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().to_str().unwrap().to_string();
        let args = serve_args(&[
            "--summarization-model",
            tarjama::config::DEFAULT_SUMMARIZATION_MODEL,
            "--cache-dir",
            &cache_dir,
            "--models-dir",
            &models_dir,
        ]);
        let server = start_with(args, None).await;
        if served {
            common::server::wait_serving(&server).await;
            let models = server
                .client()
                .await
                .list_models(ListModelsRequest {})
                .await
                .unwrap()
                .into_inner();
            let m = &models.models[1];
            assert_eq!(
                (m.revision.as_str(), m.catalog_name.as_str()),
                (sha, "distilbart-cnn-12-6")
            );
            assert_eq!(
                (m.hub_id.as_str(), m.license.as_str()),
                (entry.hub_id.as_str(), "apache-2.0")
            );
            server.stop().await;
        } else {
            let err = server.ended().await.unwrap_err().to_string();
            assert!(err.contains(&moved) && err.contains(&commit), "{err}");
        }
    }
}
