//! The model catalog: catalog names resolved to `--models-dir/NAME/`, the opus-mt-tc-big-ar-en
//! stand-in served end to end, startup refusals of bad folders, and `models fetch` against a
//! stand-in hub on 127.0.0.1 (resume, checksums, the catalogued commit).

mod common;

use std::path::{Path, PathBuf};

use common::engine::{ids, reference, BART, SEED_ARTICLE, TC_BIG};
use common::server::{serve_args, start, start_with};
use common::standin_hub::StandinHub;
use tarjama::hub::{HubError, HubOptions};
use tarjama::loader::{self, LoadError};
use tarjama::model::{generate, Device, Seq2SeqModel};
use tarjama::proto::{ProcessArticleRequest, TranslationOptions};
use tarjama::tokenizer::Tokenizer;

const NAME: &str = "opus-mt-tc-big-ar-en";
const HUB_ID: &str = "Helsinki-NLP/opus-mt-tc-big-ar-en";

/// Copies the files of `from` into `to`, except `skip`.
fn copy_files(from: &str, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

/// A models folder holding the tc-big stand-in under its catalog name.
fn models_dir_with_tc_big(skip: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_files(TC_BIG, &dir.path().join(NAME), skip);
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn options(beam: u32, length_penalty: f32) -> Option<TranslationOptions> {
    Some(TranslationOptions {
        beam_size: Some(beam),
        max_output_tokens: Some(16),
        length_penalty,
    })
}

/// What the engine alone makes of `sentence` (greedy, 16 new tokens).
fn engine_greedy(model: &Seq2SeqModel, tokenizer: &Tokenizer, sentence: &str) -> String {
    let mut params = model.generation_defaults();
    params.num_beams = 1;
    params.max_new_tokens = Some(16);
    let input = tokenizer.encode(sentence).unwrap();
    let out = generate(model, &[input], &params, &|_| false).unwrap();
    tokenizer
        .decode(&out[0].as_ref().unwrap().ids, true)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tc_big_by_catalog_name_serves_translate_articles_and_list_models() {
    let models = models_dir_with_tc_big(&[]);
    let folder = models.path().join(NAME);
    let server = start(&[
        "--translation-model",
        NAME,
        "--models-dir",
        path_str(models.path()),
    ])
    .await;
    let mut client = server.client().await;

    let listed = common::server::list_models(&server).await;
    let m = &listed[0];
    assert_eq!(m.id, folder.display().to_string());
    assert_eq!(
        (
            m.catalog_name.as_str(),
            m.hub_id.as_str(),
            m.license.as_str()
        ),
        (NAME, HUB_ID, "cc-by-4.0")
    );
    assert_eq!(
        (m.revision.as_str(), m.family.as_str()),
        ("local", "marian")
    );
    assert_eq!(m.compute_type, "f32");
    assert_eq!(m.max_input_tokens, 1024);

    // Greedy and beam 4: exactly transformers' output wherever normalisation left the
    // sentence alone, it is one segment and it has no protected span.
    let r = reference(TC_BIG);
    let mut exact = 0;
    for (mode, opts) in [("greedy", options(1, 0.0)), ("beam4", options(4, 1.0))] {
        for case in r[mode].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let reply = client
                .translate(common::server::translate_request(&[("t", text)], opts))
                .await
                .unwrap()
                .into_inner();
            let t = &reply.translations[0];
            assert_eq!(t.model, m.id);
            // Protected spans (`G20`) are taken out of the model's input: not comparable.
            let protected = !tarjama::text::find_protected(text).is_empty();
            if t.segments.len() == 1 && t.segments[0].source == text && !protected {
                assert_eq!(
                    t.text,
                    case["translation"].as_str().unwrap(),
                    "{mode} {text}"
                );
                exact += 1;
            }
        }
    }
    assert!(exact >= 4, "only {exact} cases were compared exactly");

    // An article: every body segment is what the engine makes of it.
    let model = Seq2SeqModel::load(&folder, &Device::Cpu).unwrap();
    let tokenizer = Tokenizer::from_dir(&folder).unwrap();
    let article = client
        .process_article(ProcessArticleRequest {
            id: "seed".into(),
            body: std::fs::read_to_string(SEED_ARTICLE).unwrap(),
            source_language: "ar".into(),
            options: options(1, 0.0),
            title_from_first_line: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!article.title.is_empty() && !article.segments.is_empty());
    for s in &article.segments {
        assert_eq!(
            s.translation,
            engine_greedy(&model, &tokenizer, &s.source),
            "{}",
            s.source
        );
    }
    assert!(article.summary.is_some());

    // Segmentation budgets follow the model's 1024 positions: a sentence of more than 512
    // tokens (opus-mt-ar-en's limit) stays one segment.
    let long = "مرحبا بكم في الأخبار ".repeat(60);
    let tokens = tokenizer.encode(long.trim()).unwrap().len();
    assert!((513..1024).contains(&tokens), "{tokens} tokens");
    let reply = client
        .translate(common::server::translate_request(
            &[("long", long.trim())],
            options(1, 0.0),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.translations[0].segments.len(), 1);
    server.stop().await;
}

/// Starts a server with `flags` and returns its startup error.
async fn startup_error(flags: &[&str]) -> String {
    let server = start_with(serve_args(flags), None).await;
    server.ended().await.unwrap_err().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_catalog_names_and_folders_fail_at_startup_naming_the_problem() {
    let err = startup_error(&["--translation-model", "opus-mt-xx-en"]).await;
    assert!(
        err.contains("opus-mt-xx-en")
            && err.contains("opus-mt-ar-en, opus-mt-tc-big-ar-en, distilbart-cnn-12-6"),
        "{err}"
    );

    let incomplete = models_dir_with_tc_big(&["target.spm"]);
    let dir = path_str(incomplete.path());
    let err = startup_error(&["--translation-model", NAME, "--models-dir", dir]).await;
    assert!(err.contains("target.spm") && err.contains(NAME), "{err}");

    // A BART model (with SentencePiece files beside it) under a Marian catalog name.
    let wrong = tempfile::tempdir().unwrap();
    let folder = wrong.path().join(NAME);
    copy_files(BART, &folder, &[]);
    copy_files(
        TC_BIG,
        &folder,
        &[
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "vocab.json",
            "reference.json",
            "tokenizer_config.json",
            "generation_config.json",
        ],
    );
    let dir = path_str(wrong.path());
    let err = startup_error(&["--translation-model", NAME, "--models-dir", dir]).await;
    assert!(
        err.contains("bart") && err.contains("marian") && err.contains(NAME),
        "{err}"
    );
}

/// The tc-big stand-in as its hub repository's main is laid out: pytorch_model.bin (legacy
/// zip) and no safetensors.
fn tc_big_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_files(TC_BIG, dir.path(), &["reference.json", "model.safetensors"]);
    dir
}

/// A commit sha starting with the catalogued prefix of opus-mt-tc-big-ar-en's main.
fn catalogued_sha() -> String {
    let catalog = tarjama::catalog::Catalog::builtin().unwrap();
    let commit = catalog.get(NAME).unwrap().commit.clone().unwrap();
    format!("{commit}{}", "0".repeat(40 - commit.len()))
}

/// A stand-in hub serving [`tc_big_repo`] as main at the catalogued commit.
fn tc_big_hub() -> (tempfile::TempDir, String, StandinHub) {
    let repo = tc_big_repo();
    let sha = catalogued_sha();
    let hub = StandinHub::start(vec![(HUB_ID, "main", sha.as_str(), repo.path())]);
    (repo, sha, hub)
}

fn hub_options(hub: &StandinHub, cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        endpoint: Some(hub.endpoint()),
        ..HubOptions::default()
    }
}

fn assert_same_file(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        "{a:?} vs {b:?}"
    );
}

#[test]
fn fetch_downloads_into_the_models_folder_and_the_name_then_resolves_there() {
    let (repo, sha, hub) = tc_big_hub();
    let (models, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fetched =
        loader::fetch_catalog_model(NAME, models.path(), &hub_options(&hub, cache.path())).unwrap();
    let folder = models.path().join(NAME);
    assert_eq!(
        (fetched.commit.as_str(), fetched.dir.as_path()),
        (sha.as_str(), folder.as_path())
    );
    for f in [
        "config.json",
        "pytorch_model.bin",
        "source.spm",
        "target.spm",
        "vocab.json",
    ] {
        assert_same_file(&repo.path().join(f), &folder.join(f));
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("fetched.json")).unwrap())
            .unwrap();
    assert_eq!(
        (manifest["hub_id"].as_str(), manifest["commit"].as_str()),
        (Some(HUB_ID), Some(sha.as_str()))
    );
    assert!(!cache
        .path()
        .join("models--Helsinki-NLP--opus-mt-tc-big-ar-en")
        .exists());

    // The name now loads the folder, reporting the fetched commit, without the hub.
    drop(hub);
    let hub_args = tarjama::config::HubArgs {
        cache_dir: Some(cache.path().to_path_buf()),
        offline: true,
        models_dir: models.path().to_path_buf(),
    };
    let chosen = loader::resolve_model(NAME, &hub_args).unwrap();
    assert_eq!(
        (
            chosen.resolved.dir.as_path(),
            chosen.resolved.revision.as_str()
        ),
        (folder.as_path(), sha.as_str())
    );
    let (model, tokenizer) = loader::load_model(&chosen, tarjama::model::ComputeType::F32).unwrap();
    // The legacy-zip weights give transformers' greedy ids.
    let r = reference(TC_BIG);
    let case = &r["greedy"][0];
    let input = tokenizer.encode(case["text"].as_str().unwrap()).unwrap();
    let mut params = model.generation_defaults();
    params.num_beams = 1;
    params.max_new_tokens = Some(16);
    let out = generate(&model, &[input], &params, &|_| false).unwrap();
    assert_eq!(out[0].as_ref().unwrap().ids, ids(&case["ids"]));
}

/// A models folder with a partial `pytorch_model.bin.part` of `bytes`.
fn with_partial_weights(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let models = tempfile::tempdir().unwrap();
    let folder = models.path().join(NAME);
    std::fs::create_dir_all(&folder).unwrap();
    let part = folder.join("pytorch_model.bin.part");
    std::fs::write(&part, bytes).unwrap();
    (models, part)
}

#[test]
fn an_interrupted_download_resumes_from_its_partial_file() {
    let (repo, _sha, hub) = tc_big_hub();
    let weights = std::fs::read(repo.path().join("pytorch_model.bin")).unwrap();
    let half = weights.len() / 2;
    let (models, part) = with_partial_weights(&weights[..half]);
    let cache = tempfile::tempdir().unwrap();
    loader::fetch_catalog_model(NAME, models.path(), &hub_options(&hub, cache.path())).unwrap();
    assert_eq!(
        std::fs::read(models.path().join(NAME).join("pytorch_model.bin")).unwrap(),
        weights
    );
    assert!(!part.exists());
    let ranged = format!("[range bytes={half}-]");
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.contains("pytorch_model.bin") && r.ends_with(&ranged)),
        "no ranged request: {:#?}",
        hub.requests()
    );
}

#[test]
fn a_file_that_does_not_match_the_hubs_checksum_is_refused_then_fetched_again() {
    let (repo, _sha, hub) = tc_big_hub();
    let weights = std::fs::read(repo.path().join("pytorch_model.bin")).unwrap();
    // A partial file whose bytes are not the file's: completing it gives the right size
    // but the wrong sha256.
    let corrupt: Vec<u8> = weights[..weights.len() / 2]
        .iter()
        .map(|b| b ^ 0x5a)
        .collect();
    let (models, part) = with_partial_weights(&corrupt);
    let cache = tempfile::tempdir().unwrap();
    let opts = hub_options(&hub, cache.path());
    let err = loader::fetch_catalog_model(NAME, models.path(), &opts).unwrap_err();
    assert!(
        matches!(&err, LoadError::Hub(HubError::Checksum { file, .. }) if file == "pytorch_model.bin"),
        "{err}"
    );
    let weights_path = models.path().join(NAME).join("pytorch_model.bin");
    assert!(!part.exists() && !weights_path.exists());
    assert!(!models.path().join(NAME).join("fetched.json").exists());

    loader::fetch_catalog_model(NAME, models.path(), &opts).unwrap();
    assert_eq!(std::fs::read(weights_path).unwrap(), weights);
}

#[test]
fn fetch_refuses_a_revision_that_moved_from_the_catalogued_commit() {
    let repo = tc_big_repo();
    let moved = "2".repeat(40);
    let hub = StandinHub::start(vec![(HUB_ID, "main", moved.as_str(), repo.path())]);
    let (models, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let err = loader::fetch_catalog_model(NAME, models.path(), &hub_options(&hub, cache.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&moved) && err.contains("bcb4acd"), "{err}");
    assert!(!models.path().join(NAME).join("pytorch_model.bin").exists());
}

#[test]
fn models_fetch_and_list_on_the_command_line() {
    let (_repo, sha, hub) = tc_big_hub();
    let models = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarjama"))
            .args(args)
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HUB_CACHE", cache.path())
            .env("TARJAMA_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let dir = path_str(models.path());
    let before = run(&["models", "list", "--dir", dir]);
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with(NAME))
            .unwrap()
            .to_string()
    };
    assert!(line(&before).ends_with("absent"), "{before}");
    let fetched = run(&["models", "fetch", NAME, "--dir", dir, "--quiet"]);
    assert!(fetched.contains(&sha), "{fetched}");
    let after = run(&["models", "list", "--dir", dir]);
    assert!(
        line(&after).contains(&format!("present (commit {})", &sha[..12])),
        "{after}"
    );
    assert!(
        line(&after).contains("cc-by-4.0") && line(&after).contains("BLEU 42.8"),
        "{after}"
    );
}

#[test]
fn a_bare_word_is_a_catalog_name_first_then_an_existing_folder() {
    let empty = tempfile::tempdir().unwrap();
    let hub_args = tarjama::config::HubArgs {
        cache_dir: Some(empty.path().to_path_buf()),
        offline: true,
        models_dir: empty.path().to_path_buf(),
    };
    // `tests` (the working directory's folder) is no catalog name: read as a folder, which
    // is no model.
    let err = loader::resolve_model("tests", &hub_args).unwrap_err();
    assert!(
        matches!(err, LoadError::Hub(HubError::LocalFolder { .. })),
        "{err}"
    );
    // A catalog name absent from --models-dir goes to the hub (here: offline, not cached).
    let err = loader::resolve_model(NAME, &hub_args).unwrap_err();
    assert!(
        matches!(err, LoadError::Hub(HubError::NotCached { ref repo, .. }) if repo == HUB_ID),
        "{err}"
    );
}
