//! The load generator against an in-process server with a tiny random model.

use clap::Parser;
use tarjama::config::{Cli, Command};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_runs_and_reports() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let config = format!("{fixtures}/tiny-marian-ar-en/config.json");
    let tokenizer = format!("{fixtures}/tiny-marian-ar-en");
    let text = format!("{fixtures}/seed-article-ar.txt");
    let argv = [
        "tarjama",
        "loadtest",
        "--clients",
        "4",
        "--seconds",
        "2",
        "--max-output-tokens",
        "8",
        "--random-model-config",
        &config,
        "--tokenizer",
        &tokenizer,
        "--text",
        &text,
    ];
    let Command::Loadtest(args) = Cli::parse_from(argv).command else {
        panic!("not a loadtest command")
    };
    let report = tarjama::loadtest::run(args).await.unwrap();
    assert!(report.requests_ok > 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.output_tokens > 0);
    assert_eq!(report.latencies_ms.len(), report.requests_ok);
    assert!(report.percentile(0.5) <= report.percentile(0.99));
    assert!(report.peak_rss_kib.is_some());
}
