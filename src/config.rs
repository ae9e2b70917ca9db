//! Command line and environment: every knob is a flag with a `TARJAMA_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::ComputeType;
use crate::pipeline::TextFormat;
use crate::scheduler::SchedulerConfig;

/// A catalog name (models/catalog.toml pins its revision, so that every replica serves the
/// same weights). The cheapest model to run; opus-mt-tc-big-ar-en translates better at
/// about three times the CPU (models/README.md).
pub const DEFAULT_TRANSLATION_MODEL: &str = "opus-mt-ar-en";
/// Arithmetic of the linear layers when not given: int8 is 1.3–3× faster than f32 here and
/// closer to f32 than CTranslate2's int8 is to its float32 (README, "int8").
pub const DEFAULT_COMPUTE_TYPE: &str = "int8";

/// A catalog name: the hub's safetensors conversion of distilbart-cnn-12-6, a pull-request
/// ref that can move, so startup checks the commit it resolves to against the catalog's.
pub const DEFAULT_SUMMARIZATION_MODEL: &str = "distilbart-cnn-12-6";
/// Where catalog models are looked for (`DIR/NAME/`) and fetched to.
pub const DEFAULT_MODELS_DIR: &str = "models";

#[derive(Parser, Debug)]
#[command(
    name = "tarjama",
    version,
    about = "Arabic → English news translation and summaries over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC server (downloads the default models on first start).
    Serve(Box<ServeArgs>),
    /// Translate one text locally, without a server.
    Translate(TranslateArgs),
    /// Summarise one English text locally, without a server.
    Summarize(SummarizeArgs),
    /// Measure engine speed on a catalog model's shape with random weights.
    Bench(BenchArgs),
    /// The model catalog: list it, or fetch a model into the models folder.
    Models(ModelsArgs),
    /// Concurrent clients over loopback for a fixed time; reports throughput and latency.
    Loadtest(LoadtestArgs),
    /// Translate (and summarise) a folder of .txt files or a JSONL file through a server.
    Client(ClientArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where models come from.
#[derive(Args, Debug, Clone)]
pub struct HubArgs {
    /// Hugging Face cache folder (default: the standard cache, honouring HF_HOME / HF_HUB_CACHE).
    #[arg(long, env = "TARJAMA_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Never contact the hub: use local folders and the cache only.
    #[arg(long, env = "TARJAMA_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: bool,
    /// Folder of catalog models: a catalog name given as a model loads DIR/NAME/ when it
    /// exists, else downloads the catalogued revision through the hub cache.
    #[arg(long, env = "TARJAMA_MODELS_DIR", default_value = DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// The catalog (models/catalog.toml, built in) and which models DIR holds.
    List {
        /// Folder of catalog models.
        #[arg(long, alias = "models-dir", env = "TARJAMA_MODELS_DIR", default_value = DEFAULT_MODELS_DIR)]
        dir: PathBuf,
    },
    /// Download a catalog model into DIR/NAME/ (resumable; sha256-checked where the hub
    /// gives one), to load it from there or copy it to servers without hub access.
    Fetch {
        /// Catalog name (see `tarjama models list`).
        name: String,
        /// Folder of catalog models.
        #[arg(long, alias = "models-dir", env = "TARJAMA_MODELS_DIR", default_value = DEFAULT_MODELS_DIR)]
        dir: PathBuf,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TARJAMA_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Translation model: a catalog name (`tarjama models list`), a local folder or
    /// `owner/name[@revision]` on the hub.
    #[arg(long, env = "TARJAMA_TRANSLATION_MODEL", default_value = DEFAULT_TRANSLATION_MODEL)]
    pub translation_model: String,
    /// Summarization model (catalog name, folder or hub id), or `none`.
    #[arg(long, env = "TARJAMA_SUMMARIZATION_MODEL", default_value = DEFAULT_SUMMARIZATION_MODEL)]
    pub summarization_model: String,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Log format.
    #[arg(long, env = "TARJAMA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics (off when unset).
    #[arg(long, env = "TARJAMA_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Also answer gRPC health checks, in plaintext, on this address (for probes that cannot
    /// speak TLS, such as the kubelet's); off when unset.
    #[arg(long, env = "TARJAMA_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// Close client connections after this many seconds (gracefully) so that clients
    /// re-resolve and spread over new replicas; 0 = never.
    #[arg(long, env = "TARJAMA_MAX_CONNECTION_AGE_SECS", default_value_t = 0)]
    pub max_connection_age_secs: u64,
    /// On SIGTERM, how long calls in flight may take to finish before their connections are
    /// closed (a client holding an idle stream open must not keep the process alive).
    #[arg(long, env = "TARJAMA_SHUTDOWN_TIMEOUT_SECS", default_value_t = 60)]
    pub shutdown_timeout_secs: u64,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Arithmetic of the summarization model's linear layers, when it differs from
    /// --compute-type.
    #[arg(long, env = "TARJAMA_SUMMARIZATION_COMPUTE_TYPE", value_enum)]
    pub summarization_compute_type: Option<ComputeType>,
}

impl ServeArgs {
    /// (translation model, summarization model) compute types.
    pub fn compute_types(&self) -> (ComputeType, ComputeType) {
        let t = self.engine.compute_type;
        (t, self.summarization_compute_type.unwrap_or(t))
    }
}

/// HTTP/2 limits of the gRPC port.
#[derive(Args, Debug, Clone)]
pub struct TransportArgs {
    /// Most calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS);
    /// a client opens more by opening more connections.
    #[arg(long, env = "TARJAMA_MAX_CONCURRENT_STREAMS", default_value_t = 200)]
    pub max_concurrent_streams: u32,
    /// Seconds between HTTP/2 pings on a connection (and TCP keepalive probes), so that a
    /// peer that vanished is found and its calls cancelled; 0 = off.
    #[arg(
        long,
        env = "TARJAMA_HTTP2_KEEPALIVE_INTERVAL_SECS",
        default_value_t = 30
    )]
    pub http2_keepalive_interval_secs: u64,
    /// Seconds a ping may go unanswered before the connection is closed.
    #[arg(
        long,
        env = "TARJAMA_HTTP2_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub http2_keepalive_timeout_secs: u64,
}

/// Encryption and authentication of the gRPC port.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key).
    #[arg(long, env = "TARJAMA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TARJAMA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File of API keys, one per line (`#` comments): the TranslationService then needs
    /// `authorization: Bearer <key>`; health and reflection stay open.
    #[arg(long, env = "TARJAMA_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Compute threads for the model (0 = all cores).
    #[arg(long, env = "TARJAMA_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Arithmetic of the linear layers: f32, or int8 (weights quantised at load).
    #[arg(long, env = "TARJAMA_COMPUTE_TYPE", value_enum, default_value = DEFAULT_COMPUTE_TYPE)]
    pub compute_type: ComputeType,
    /// Budget of one batch: padded source tokens × beams.
    #[arg(long, env = "TARJAMA_MAX_BATCH_TOKENS", default_value_t = 4096)]
    pub max_batch_tokens: usize,
    /// Most sentences in one batch.
    #[arg(long, env = "TARJAMA_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,
    /// Budget of all queued work (source tokens × beams); past it requests get RESOURCE_EXHAUSTED.
    #[arg(long, env = "TARJAMA_MAX_QUEUED_TOKENS", default_value_t = 262_144)]
    pub max_queued_tokens: usize,
    /// Most sentences one request puts into a batch while other requests wait (fairness).
    #[arg(long, env = "TARJAMA_MAX_SHARE_PER_REQUEST", default_value_t = 8)]
    pub max_share_per_request: usize,
    /// Budget of one call (source tokens × beams; a stream's texts in flight together): a
    /// call over it is refused at once with INVALID_ARGUMENT. At most --max-queued-tokens.
    #[arg(long, env = "TARJAMA_MAX_REQUEST_TOKENS", default_value_t = 65_536)]
    pub max_request_tokens: usize,
    /// Worst-case memory of one batch in MiB (encoder states, attention caches and logits
    /// at the longest generation allowed); batches are cut to fit.
    #[arg(long, env = "TARJAMA_MAX_BATCH_MEMORY_MB", default_value_t = 2048)]
    pub max_batch_memory_mb: usize,
}

impl EngineArgs {
    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            max_batch_tokens: self.max_batch_tokens.max(1),
            max_batch_size: self.max_batch_size.max(1),
            max_queued_tokens: self.max_queued_tokens.max(1),
            max_share_per_request: self.max_share_per_request.max(1),
            max_request_tokens: self
                .max_request_tokens
                .clamp(1, self.max_queued_tokens.max(1)),
            max_batch_bytes: self.max_batch_memory_mb.max(1).saturating_mul(1 << 20),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Longest text accepted, in characters.
    #[arg(long, env = "TARJAMA_MAX_INPUT_CHARS", default_value_t = 100_000)]
    pub max_input_chars: usize,
    /// Most texts in one Translate request.
    #[arg(long, env = "TARJAMA_MAX_TEXTS_PER_REQUEST", default_value_t = 64)]
    pub max_texts_per_request: usize,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "TARJAMA_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest response, in bytes: a call whose response could be larger (every sentence
    /// generating its maximum of tokens) is refused before any work, with INVALID_ARGUMENT.
    #[arg(long, env = "TARJAMA_MAX_RESPONSE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_response_bytes: usize,
    /// Deadline of a call whose client sets none (of each text, in TranslateStream), in
    /// seconds; 0 = none.
    #[arg(long, env = "TARJAMA_DEFAULT_TIMEOUT_SECS", default_value_t = 300)]
    pub default_timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// Translation model: a catalog name, a local folder or `owner/name[@revision]`.
    #[arg(long, env = "TARJAMA_TRANSLATION_MODEL", default_value = DEFAULT_TRANSLATION_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Feed the text to the model as one input: no normalisation, no sentence splitting.
    #[arg(long)]
    pub raw: bool,
    /// Beam size (1 = greedy; default: the model's).
    #[arg(long)]
    pub beam_size: Option<usize>,
    /// Most generated tokens per sentence (default: the model's).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Print `{"translation": …, "token_ids": […], "score": …}`.
    #[arg(long)]
    pub json: bool,
    /// Arithmetic of the linear layers: f32, or int8 (weights quantised at load).
    #[arg(long, env = "TARJAMA_COMPUTE_TYPE", value_enum, default_value = DEFAULT_COMPUTE_TYPE)]
    pub compute_type: ComputeType,
    /// One input per line of standard input, one JSON object per line out (`--json`'s
    /// shape), translated in batches.
    #[arg(long, conflicts_with = "text")]
    pub lines: bool,
    /// What the text is: plain, or html (markup kept, the text translated).
    #[arg(long, value_enum, default_value = "plain", conflicts_with = "raw")]
    pub format: TextFormat,
    /// Compute threads (0 = all cores).
    #[arg(long, env = "TARJAMA_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// The text; read from standard input when absent.
    pub text: Option<String>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The catalog model whose real configuration gives the shapes benchmarked (random
    /// weights): a translator for the engine bench (built in from bench/NAME.config.json), a
    /// summarizer for --summary (default there: distilbart-cnn-12-6).
    #[arg(long, value_enum, default_value = "opus-mt-ar-en")]
    pub shape: BenchShape,
    /// Instead of --shape: a model configuration (config.json) whose shapes are benchmarked.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Sentence lengths and modes; default: bench/workload.json, built in.
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// Run only these modes (comma-separated names from the workload).
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Arithmetic of the linear layers: f32, or int8 (weights quantised at load).
    #[arg(long, env = "TARJAMA_COMPUTE_TYPE", value_enum, default_value = DEFAULT_COMPUTE_TYPE)]
    pub compute_type: ComputeType,
    /// Compute threads (the CTranslate2 baseline in bench/ uses 2).
    #[arg(long, env = "TARJAMA_THREADS", default_value_t = 2)]
    pub threads: usize,
    /// Batch sentences of similar length together (as the server's scheduler does) instead
    /// of in workload order (as the CTranslate2 baseline runs them).
    #[arg(long)]
    pub sorted: bool,
    /// Also run each mode recording every sentence's source alignment (reported as
    /// `<mode>+align`, right after the mode), to measure what recording costs.
    #[arg(long)]
    pub alignment: bool,
    /// Instead: summary latency (600-token article → 60 tokens, beam 4, random model of a
    /// summarizer's shape, see --shape) and extractive latency.
    #[arg(long)]
    pub summary: bool,
}

/// Catalog models `bench` has the configuration of.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchShape {
    /// d_model 512, 8 heads, ffn 2048, 6+6 layers, vocabulary 62834, swish.
    OpusMtArEn,
    /// d_model 1024, 16 heads, ffn 4096, 6+6 layers, vocabulary 61109, relu.
    OpusMtTcBigArEn,
    /// BART-large shapes (d_model 1024, 16 heads, ffn 4096, vocabulary 50264, gelu) with
    /// 12 encoder and 6 decoder layers.
    #[value(name = "distilbart-cnn-12-6")]
    DistilbartCnn126,
    /// The same with 6 encoder and 6 decoder layers.
    #[value(name = "distilbart-cnn-6-6")]
    DistilbartCnn66,
    /// The same with 12 encoder and 12 decoder layers.
    BartLargeCnn,
}

impl BenchShape {
    /// Encoder and decoder layers of a summarizer shape; `None` for a translator.
    pub fn summarizer_layers(self) -> Option<(usize, usize)> {
        match self {
            Self::OpusMtArEn | Self::OpusMtTcBigArEn => None,
            Self::DistilbartCnn126 => Some((12, 6)),
            Self::DistilbartCnn66 => Some((6, 6)),
            Self::BartLargeCnn => Some((12, 12)),
        }
    }
}

#[derive(Args, Debug)]
pub struct LoadtestArgs {
    /// A running server to load; without it, an in-process server is started with random
    /// weights shaped by --random-model-config (they cost what real weights cost).
    #[arg(long)]
    pub addr: Option<String>,
    /// Model configuration for the in-process server; default: the real opus-mt-ar-en
    /// configuration, built in.
    #[arg(long)]
    pub random_model_config: Option<PathBuf>,
    /// Tokenizer folder for the in-process server (in a checkout: the fixture's; elsewhere,
    /// pass a Marian model folder).
    #[arg(long, default_value = "tests/fixtures/tiny-marian-ar-en")]
    pub tokenizer: PathBuf,
    /// Arabic article the requests are cut from (sentences, paragraphs, the whole); in a
    /// checkout, the seed article; elsewhere, pass a file.
    #[arg(long, default_value = "tests/fixtures/seed-article-ar.txt")]
    pub text: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Generated tokens per sentence (random weights rarely stop early).
    #[arg(long, default_value_t = 40)]
    pub max_output_tokens: u32,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl LoadtestArgs {
    /// Server settings for the in-process server: the defaults, with this run's engine knobs.
    pub fn serve_args(&self) -> ServeArgs {
        let mut args =
            match Cli::parse_from(["tarjama", "serve", "--summarization-model", "none"]).command {
                Command::Serve(args) => *args,
                _ => unreachable!("parsed a serve command"),
            };
        args.engine = self.engine.clone();
        args
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SummaryMethodArg {
    Extractive,
    Abstractive,
}

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// Summarization model (abstractive): a catalog name, a local folder or
    /// `owner/name[@revision]`.
    #[arg(long, env = "TARJAMA_SUMMARIZATION_MODEL", default_value = DEFAULT_SUMMARIZATION_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Extractive needs no model.
    #[arg(long, value_enum, default_value = "abstractive")]
    pub method: SummaryMethodArg,
    /// Extractive: most sentences (default 3).
    #[arg(long)]
    pub max_sentences: Option<usize>,
    /// Extractive: most words.
    #[arg(long)]
    pub max_words: Option<usize>,
    /// Print `{"summary": …, "method": …}`.
    #[arg(long)]
    pub json: bool,
    /// Arithmetic of the linear layers: f32, or int8 (weights quantised at load).
    #[arg(long, env = "TARJAMA_COMPUTE_TYPE", value_enum, default_value = DEFAULT_COMPUTE_TYPE)]
    pub compute_type: ComputeType,
    /// Compute threads (0 = all cores).
    #[arg(long, env = "TARJAMA_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// English text; read from standard input when absent.
    pub text: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientSummary {
    /// Abstractive when the server has a summarization model, extractive otherwise.
    Auto,
    Extractive,
    Abstractive,
    /// No summary (translation only).
    None,
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// A folder of .txt files (one article each; the id is the file name) or a JSONL file
    /// (one object per line: `id`, and `text` or `title`/`body`).
    pub input: PathBuf,
    /// JSONL results file; created, or appended to: ids already in it are skipped (resume).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Server address: http://host:port, or https://host:port for TLS.
    #[arg(long, env = "TARJAMA_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Articles in flight at once.
    #[arg(long, env = "TARJAMA_CLIENT_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Summary to ask for with each article.
    #[arg(long, value_enum, default_value = "auto")]
    pub summary: ClientSummary,
    /// Beam size (default: the server's model default).
    #[arg(long)]
    pub beam_size: Option<u32>,
    /// Attempts per article after the first when the server answers RESOURCE_EXHAUSTED or
    /// UNAVAILABLE (exponential backoff, honouring the server's retry delay).
    #[arg(long, env = "TARJAMA_CLIENT_RETRIES", default_value_t = 5)]
    pub retries: u32,
    /// Deadline of one article, in seconds.
    #[arg(long, env = "TARJAMA_CLIENT_TIMEOUT_SECS", default_value_t = 600)]
    pub timeout_secs: u64,
    /// .txt files: the first line is the title.
    #[arg(long)]
    pub title_from_first_line: bool,
    /// What the articles are: plain text, or html (folders: their .html/.htm files; the
    /// English comes back as HTML).
    #[arg(long, value_enum, default_value = "plain")]
    pub format: TextFormat,
    /// API key sent as `authorization: Bearer <key>`.
    #[arg(long, env = "TARJAMA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM CA certificate to trust for https:// (default: the system's roots).
    #[arg(long, env = "TARJAMA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// TLS server name to verify, when it differs from the address' host.
    #[arg(long, env = "TARJAMA_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// No progress bar (a line per item is logged instead).
    #[arg(long)]
    pub quiet: bool,
}
