//! The deployment files (`Dockerfile`, `deploy/kubernetes/*.yaml`): every YAML document
//! parses and names itself, the objects fit together (selectors, ports, probes, the HPA's
//! target, the user id, the models volume), and every `--flag` and `TARJAMA_*` variable
//! they name exists on `tarjama serve` (checked against the real CLI through clap), with
//! values that the CLI accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use tarjama::config::{Cli, Command, LogFormat};
use yaml_rust2::{Yaml, YamlLoader};

const DEPLOY_DIR: &str = "deploy/kubernetes";
const DEPLOYMENT: &str = "tarjama";
const CONTAINER: &str = "tarjama";
const CONFIG_MAP: &str = "tarjama-config";
/// The gRPC service name the server reports health for (besides "").
const HEALTH_SERVICE: &str = "tarjama.v1.TranslationService";
/// Read by the logger (`EnvFilter::try_from_env`), not a flag; checked against main.rs.
const LOG_FILTER_VAR: &str = "TARJAMA_LOG";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Loading

struct Doc {
    file: String,
    yaml: Yaml,
}

impl Doc {
    fn kind(&self) -> &str {
        self.yaml["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.yaml["metadata"]["name"].as_str().unwrap_or("")
    }
}

fn yaml_files() -> Vec<PathBuf> {
    let dir = root().join(DEPLOY_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every non-empty YAML document of every file in deploy/kubernetes; panics on a parse error.
fn all_docs() -> Vec<Doc> {
    let mut docs = Vec::new();
    for path in yaml_files() {
        let file = file_name(&path);
        let parsed = YamlLoader::load_from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
        let before = docs.len();
        for yaml in parsed {
            // A `---` after a comment-only preamble yields an empty document.
            if !yaml.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    yaml,
                });
            }
        }
        assert!(docs.len() > before, "{file} holds no YAML document");
    }
    docs
}

/// The Kubernetes objects (everything but the kustomization).
fn objects() -> Vec<Doc> {
    all_docs()
        .into_iter()
        .filter(|d| d.kind() != "Kustomization")
        .collect()
}

fn one<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == kind && d.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} named {name}");
    found[0]
}

fn deployment(docs: &[Doc]) -> &Yaml {
    &one(docs, "Deployment", DEPLOYMENT).yaml
}

fn container(deployment: &Yaml) -> &Yaml {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .expect("Deployment has containers");
    containers
        .iter()
        .find(|c| c["name"].as_str() == Some(CONTAINER))
        .unwrap_or_else(|| panic!("no container named {CONTAINER}"))
}

/// The container's ports by name.
fn ports(container: &Yaml) -> BTreeMap<String, i64> {
    container["ports"]
        .as_vec()
        .expect("container ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named port").to_string(),
                p["containerPort"].as_i64().expect("numeric containerPort"),
            )
        })
        .collect()
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let k = k.as_str().expect("string key").to_string();
                    let v = v
                        .as_str()
                        .unwrap_or_else(|| panic!("value of {k} must be a string: {v:?}"))
                        .to_string();
                    (k, v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .map(|s| s.as_str().expect("string item").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

// ---------------------------------------------------------------------------------------
// The Dockerfile

struct Dockerfile {
    /// Logical lines (continuations joined, comments dropped) of the last stage.
    final_stage: Vec<String>,
    /// `FROM` lines, in order.
    froms: Vec<String>,
    text: String,
}

fn dockerfile() -> Dockerfile {
    let text = read(&root().join("Dockerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    assert!(
        current.is_empty(),
        "Dockerfile ends inside a continued line"
    );
    let froms: Vec<String> = logical
        .iter()
        .filter(|l| instruction(l) == "FROM")
        .cloned()
        .collect();
    let last_from = logical
        .iter()
        .rposition(|l| instruction(l) == "FROM")
        .expect("Dockerfile has a FROM");
    Dockerfile {
        final_stage: logical[last_from..].to_vec(),
        froms,
        text,
    }
}

fn instruction(line: &str) -> String {
    line.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

impl Dockerfile {
    fn lines(&self, instr: &str) -> Vec<&str> {
        self.final_stage
            .iter()
            .filter(|l| instruction(l) == instr)
            .map(|l| l[instr.len()..].trim())
            .collect()
    }

    /// `ENV K=V ...` of the final stage (values without spaces or quotes).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for rest in self.lines("ENV") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV {pair:?}: write ENV KEY=VALUE"));
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }

    /// An exec-form (JSON array) instruction of the final stage; the last one wins.
    fn exec_form(&self, instr: &str) -> Vec<String> {
        let rest = *self
            .lines(instr)
            .last()
            .unwrap_or_else(|| panic!("no {instr} in the final stage"));
        serde_json::from_str(rest)
            .unwrap_or_else(|e| panic!("{instr} must be a JSON array (exec form): {e}"))
    }
}

// ---------------------------------------------------------------------------------------
// The checker: names against the real CLI

/// What `tarjama serve` accepts, from clap's own description of it.
struct ServeCli {
    /// Long flag → whether it takes a value.
    longs: BTreeMap<String, bool>,
    /// Environment variable → its long flag.
    envs: BTreeMap<String, String>,
}

fn serve_cli() -> ServeCli {
    let mut cli = Cli::command();
    cli.build();
    let serve = cli
        .find_subcommand("serve")
        .expect("the CLI has a `serve` subcommand");
    let mut longs = BTreeMap::new();
    let mut envs = BTreeMap::new();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        longs.insert(long.to_string(), arg.get_action().takes_values());
        if let Some(env) = arg.get_env() {
            envs.insert(env.to_string_lossy().into_owned(), long.to_string());
        }
    }
    assert!(
        envs.contains_key("TARJAMA_LISTEN") && longs.contains_key("listen"),
        "clap introspection found no --listen/TARJAMA_LISTEN: {longs:?}"
    );
    ServeCli { longs, envs }
}

/// `TARJAMA_*` names in `text` (maximal runs of `[A-Z0-9_]`, not part of a longer word).
fn tarjama_vars(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "TARJAMA_";
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(PREFIX).map(|i| i + from) {
        let mut end = at + PREFIX.len();
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let standalone = at == 0 || !word(bytes[at - 1]);
        let name = text[at..end].trim_end_matches('_');
        if standalone && name.len() > PREFIX.len() {
            found.insert(name.to_string());
        }
        from = end;
    }
    found
}

/// `--flag` names (without `--` and `=value`) among command-line words.
fn long_flags<'a>(words: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    words
        .into_iter()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|f| f.split('=').next().unwrap_or(f).to_string())
        .collect()
}

/// The names `serve` does not know, each as it was written (`TARJAMA_X`, `--x`).
fn unknown_names(cli: &ServeCli, vars: &BTreeSet<String>, flags: &BTreeSet<String>) -> Vec<String> {
    let mut unknown: Vec<String> = vars
        .iter()
        .filter(|v| v.as_str() != LOG_FILTER_VAR && !cli.envs.contains_key(v.as_str()))
        .cloned()
        .collect();
    unknown.extend(
        flags
            .iter()
            .filter(|f| !cli.longs.contains_key(f.as_str()))
            .map(|f| format!("--{f}")),
    );
    unknown
}

/// A command line for `serve` equivalent to `env` (as clap would read the variables);
/// other variables are ignored.
fn env_as_flags(cli: &ServeCli, env: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut flags = Vec::new();
    for (name, value) in env {
        if name == LOG_FILTER_VAR || !name.starts_with("TARJAMA_") {
            continue;
        }
        let long = cli
            .envs
            .get(name)
            .ok_or_else(|| format!("{name} is not a variable of `tarjama serve`"))?;
        if cli.longs[long] {
            flags.push(format!("--{long}={value}"));
        } else {
            // A switch: its variable goes through clap's BoolishValueParser.
            match value.to_ascii_lowercase().as_str() {
                "y" | "yes" | "t" | "true" | "on" | "1" => flags.push(format!("--{long}")),
                "n" | "no" | "f" | "false" | "off" | "0" => {}
                other => return Err(format!("{name}={other:?} is not a boolean")),
            }
        }
    }
    Ok(flags)
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn every_yaml_document_parses_and_names_itself() {
    let docs = all_docs();
    for doc in &docs {
        let what = format!("a document in {}", doc.file);
        assert!(
            doc.yaml["apiVersion"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{what} has no apiVersion"
        );
        assert!(!doc.kind().is_empty(), "{what} has no kind");
        if doc.kind() == "Kustomization" {
            continue;
        }
        assert!(
            !doc.name().is_empty(),
            "{what} ({}) has no metadata.name",
            doc.kind()
        );
        assert!(
            doc.yaml["metadata"]["namespace"].is_badvalue(),
            "{what}: the manifests are namespace-agnostic; drop metadata.namespace"
        );
    }
    let mut seen = BTreeSet::new();
    for doc in objects() {
        assert!(
            seen.insert((doc.kind().to_string(), doc.name().to_string())),
            "{} {} is defined twice",
            doc.kind(),
            doc.name()
        );
    }
}

#[test]
fn expected_kinds_are_present() {
    let docs = objects();
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "ConfigMap",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {DEPLOY_DIR}: {kinds:?}");
    }
    one(&docs, "ConfigMap", CONFIG_MAP);
    assert_eq!(
        one(&docs, "HorizontalPodAutoscaler", DEPLOYMENT).yaml["apiVersion"].as_str(),
        Some("autoscaling/v2")
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let docs = all_docs();
    let kustomizations: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == "Kustomization")
        .collect();
    assert_eq!(kustomizations.len(), 1, "one kustomization.yaml");
    let listed: BTreeSet<String> = strings(&kustomizations[0].yaml["resources"])
        .into_iter()
        .collect();
    let files: BTreeSet<String> = yaml_files()
        .iter()
        .map(|p| file_name(p))
        .filter(|f| f != &kustomizations[0].file)
        .collect();
    assert_eq!(
        listed, files,
        "kustomization resources vs the files beside it"
    );
    // The image it rewrites is the one the Deployment uses.
    let image = container(deployment(&objects()))["image"]
        .as_str()
        .expect("image")
        .to_string();
    let images = kustomizations[0].yaml["images"].as_vec().expect("images");
    assert!(
        images
            .iter()
            .any(|i| Some(image.split(':').next().unwrap()) == i["name"].as_str()),
        "kustomization images do not name {image}"
    );
}

#[test]
fn service_and_budget_selectors_match_the_pod_labels() {
    let docs = objects();
    let deploy = deployment(&docs);
    let pod_labels = string_map(&deploy["spec"]["template"]["metadata"]["labels"]);
    let matches = |selector: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    let own_selector = string_map(&deploy["spec"]["selector"]["matchLabels"]);
    assert!(
        matches(&own_selector),
        "Deployment selector vs its pod labels"
    );

    let ports = ports(container(deploy));
    let services: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "Service").collect();
    assert!(!services.is_empty());
    for svc in services {
        let spec = &svc.yaml["spec"];
        let selector = string_map(&spec["selector"]);
        assert!(
            matches(&selector),
            "Service {} selects no Deployment pod",
            svc.name()
        );
        let svc_ports = spec["ports"].as_vec().expect("Service ports");
        for p in svc_ports {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert!(
                ports.contains_key(target),
                "Service {} targets port {target}, which the container lacks",
                svc.name()
            );
        }
        let grpc = svc_ports
            .iter()
            .find(|p| p["name"].as_str() == Some("grpc"))
            .unwrap_or_else(|| panic!("Service {} has no port named grpc", svc.name()));
        assert_eq!(grpc["appProtocol"].as_str(), Some("grpc"));
        assert_eq!(grpc["targetPort"].as_str(), Some("grpc"));
    }
    let main = one(&docs, "Service", DEPLOYMENT);
    assert_eq!(main.yaml["spec"]["type"].as_str(), Some("ClusterIP"));
    for doc in docs.iter().filter(|d| d.kind() == "PodDisruptionBudget") {
        let selector = string_map(&doc.yaml["spec"]["selector"]["matchLabels"]);
        assert!(
            matches(&selector),
            "PodDisruptionBudget {} selector",
            doc.name()
        );
    }
}

#[test]
fn hpa_scales_the_deployment() {
    let docs = objects();
    let hpa = &one(&docs, "HorizontalPodAutoscaler", DEPLOYMENT).yaml["spec"];
    let target = &hpa["scaleTargetRef"];
    assert_eq!(target["kind"].as_str(), Some("Deployment"));
    assert_eq!(target["apiVersion"].as_str(), Some("apps/v1"));
    assert_eq!(target["name"].as_str(), Some(DEPLOYMENT));
    let (min, max) = (
        hpa["minReplicas"].as_i64().unwrap(),
        hpa["maxReplicas"].as_i64().unwrap(),
    );
    assert_eq!((min, max), (2, 10));
    let replicas = deployment(&docs)["spec"]["replicas"].as_i64();
    assert!(replicas.is_none_or(|r| (min..=max).contains(&r)));
    let cpu = hpa["metrics"]
        .as_vec()
        .expect("metrics")
        .iter()
        .find(|m| m["resource"]["name"].as_str() == Some("cpu"))
        .expect("a CPU metric");
    assert_eq!(
        cpu["resource"]["target"]["type"].as_str(),
        Some("Utilization")
    );
    assert!(
        hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 300),
        "scale-down stabilisation of at least 5 minutes (pods take minutes to start)"
    );
    // Utilisation is relative to the request: the container must request CPU.
    let container = container(deployment(&docs));
    assert!(container["resources"]["requests"]["cpu"].as_str().is_some());
}

#[test]
fn probes_are_grpc_on_the_plaintext_health_port() {
    let docs = objects();
    let container = container(deployment(&docs));
    // The health port, not `grpc`: that one may serve TLS, which the kubelet cannot speak.
    let grpc_port = ports(container)["health"];
    let config = &one(&docs, "ConfigMap", CONFIG_MAP).yaml;
    let health_addr = config["data"]["TARJAMA_HEALTH_ADDR"].as_str().unwrap_or("");
    assert!(
        health_addr.ends_with(&format!(":{grpc_port}")),
        "TARJAMA_HEALTH_ADDR {health_addr:?} is not the health port {grpc_port}"
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let p = &container[probe];
        assert!(!p.is_badvalue(), "no {probe}");
        // The kubelet's gRPC probe takes a port number, not a name.
        assert_eq!(p["grpc"]["port"].as_i64(), Some(grpc_port), "{probe} port");
        let service = p["grpc"]["service"].as_str().unwrap_or("");
        assert!(
            ["", HEALTH_SERVICE].contains(&service),
            "{probe} asks for health of {service:?}, which the server does not report"
        );
    }
    assert_eq!(
        container["readinessProbe"]["grpc"]["service"].as_str(),
        Some(HEALTH_SERVICE)
    );
    // The first start downloads the models: give it minutes, not seconds.
    let startup = &container["startupProbe"];
    let budget = startup["periodSeconds"].as_i64().unwrap_or(10)
        * startup["failureThreshold"].as_i64().unwrap_or(3);
    assert!(
        budget >= 600,
        "startup budget of {budget}s is too short for the model download"
    );
    // The grace period covers the preStop pause.
    let spec = &deployment(&docs)["spec"]["template"]["spec"];
    assert!(spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30) >= 60);
}

#[test]
fn deployment_runs_as_the_image_user_with_models_in_a_volume() {
    let docs = objects();
    let deploy = deployment(&docs);
    let pod = &deploy["spec"]["template"]["spec"];
    let container = container(deploy);
    let docker = dockerfile();

    // The image's user.
    let user = docker.lines("USER").last().expect("USER").to_string();
    let uid: i64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert_eq!(uid, 10001);
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    assert_eq!(pod["securityContext"]["fsGroup"].as_i64(), Some(uid));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));

    // Arguments: the image's subcommand.
    assert_eq!(strings(&container["args"]), vec!["serve".to_string()]);
    assert!(
        container["command"].is_badvalue(),
        "keep the image's ENTRYPOINT"
    );

    // The flags come from the ConfigMap.
    let env_from = container["envFrom"].as_vec().expect("envFrom");
    assert!(env_from
        .iter()
        .any(|e| e["configMapRef"]["name"].as_str() == Some(CONFIG_MAP)));

    // HF_HOME is a writable volume, the same path as in the image.
    let hf_home = docker.env()["HF_HOME"].clone();
    let env = container["env"].as_vec().expect("env");
    let value_of = |name: &str| env.iter().find(|e| e["name"].as_str() == Some(name));
    assert_eq!(
        value_of("HF_HOME").and_then(|e| e["value"].as_str()),
        Some(hf_home.as_str())
    );
    let mounts = container["volumeMounts"].as_vec().expect("volumeMounts");
    let models = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(hf_home.as_str()))
        .expect("a volume mounted at HF_HOME");
    assert_ne!(models["readOnly"].as_bool(), Some(true));
    let volume_name = models["name"].as_str().unwrap();
    let volumes = pod["volumes"].as_vec().expect("volumes");
    assert!(volumes
        .iter()
        .any(|v| v["name"].as_str() == Some(volume_name)));
    assert!(docker
        .lines("VOLUME")
        .iter()
        .any(|v| v.contains(&format!("\"{hf_home}\""))));

    // Compute threads follow the CPU limit of this container.
    let threads = value_of("TARJAMA_THREADS").expect("TARJAMA_THREADS in env");
    let field = &threads["valueFrom"]["resourceFieldRef"];
    assert_eq!(field["resource"].as_str(), Some("limits.cpu"));
    assert_eq!(field["containerName"].as_str(), Some(CONTAINER));
    assert!(container["resources"]["limits"]["cpu"].as_str().is_some());
    assert!(container["resources"]["limits"]["memory"]
        .as_str()
        .is_some());

    // Prometheus scrapes the metrics port.
    let annotations = string_map(&deploy["spec"]["template"]["metadata"]["annotations"]);
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations
            .get("prometheus.io/port")
            .and_then(|p| p.parse::<i64>().ok()),
        Some(ports(container)["metrics"])
    );
}

#[test]
fn manifests_and_dockerfile_name_only_serve_flags_that_exist() {
    let cli = serve_cli();
    let docker = dockerfile();
    let main_rs = read(&root().join("src/main.rs"));
    assert!(
        main_rs.contains(&format!("\"{LOG_FILTER_VAR}\"")),
        "{LOG_FILTER_VAR} is no longer read by src/main.rs"
    );

    // Every TARJAMA_* name anywhere, comments included: a commented example must work too.
    let mut vars = tarjama_vars(&docker.text);
    let mut flags = BTreeSet::new();
    for path in yaml_files() {
        vars.extend(tarjama_vars(&read(&path)));
    }
    // Every --flag on a command line: the image's ENTRYPOINT/CMD and containers' command/args.
    let entrypoint = docker.exec_form("ENTRYPOINT");
    let cmd = docker.exec_form("CMD");
    flags.extend(long_flags(entrypoint.iter().chain(&cmd)));
    let docs = objects();
    for doc in &docs {
        let spec = &doc.yaml["spec"]["template"]["spec"];
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_vec().into_iter().flatten() {
                flags.extend(long_flags(&strings(&c["command"])));
                flags.extend(long_flags(&strings(&c["args"])));
            }
        }
    }
    let unknown = unknown_names(&cli, &vars, &flags);
    assert!(
        unknown.is_empty(),
        "not options of `tarjama serve`: {unknown:?} (it knows {:?})",
        cli.envs.keys().collect::<Vec<_>>()
    );
    assert!(
        vars.len() >= 10,
        "found only {vars:?}: is the scanner broken?"
    );

    // The subcommand itself.
    assert_eq!(entrypoint, vec!["tarjama".to_string()]);
    assert_eq!(cmd, vec!["serve".to_string()]);
    assert!(Cli::command().find_subcommand(&cmd[0]).is_some());
}

#[test]
fn effective_configuration_parses_as_serve() {
    let cli = serve_cli();
    let docker = dockerfile();
    let docs = objects();
    let deploy = deployment(&docs);
    let container = container(deploy);

    // What the pod's process sees: the image's ENV, then envFrom, then env (literal values).
    let mut env = docker.env();
    let config = string_map(&one(&docs, "ConfigMap", CONFIG_MAP).yaml["data"]);
    assert!(!config.is_empty());
    env.extend(config.clone());
    for e in container["env"].as_vec().into_iter().flatten() {
        if let Some(v) = e["value"].as_str() {
            env.insert(e["name"].as_str().unwrap().to_string(), v.to_string());
        }
    }
    // Every ConfigMap key is a serve variable (or the log filter): envFrom would silently
    // pass a misspelt key.
    for key in config.keys() {
        assert!(
            key == LOG_FILTER_VAR || cli.envs.contains_key(key),
            "ConfigMap key {key} is not a variable of `tarjama serve`"
        );
    }

    let mut argv = vec!["tarjama".to_string()];
    argv.extend(strings(&container["args"]));
    argv.extend(env_as_flags(&cli, &env).unwrap_or_else(|e| panic!("{e}")));
    let parsed = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the deployed configuration does not parse: {argv:?}\n{e}"));
    let Command::Serve(args) = parsed.command else {
        panic!("container args do not run `serve`");
    };

    let ports = ports(container);
    assert_eq!(
        i64::from(args.listen.port()),
        ports["grpc"],
        "TARJAMA_LISTEN vs port grpc"
    );
    assert!(
        args.listen.ip().is_unspecified(),
        "listen on all interfaces in a pod"
    );
    let metrics = args.metrics_addr.expect("metrics enabled");
    assert_eq!(
        i64::from(metrics.port()),
        ports["metrics"],
        "TARJAMA_METRICS_ADDR vs port metrics"
    );
    assert_eq!(args.log_format, LogFormat::Json);
    assert!(!args.hub.offline);

    // The image alone (docker run) agrees with its EXPOSE line.
    let exposed: BTreeSet<i64> = docker
        .lines("EXPOSE")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|p| p.split('/').next().unwrap().parse().expect("EXPOSE port"))
        .collect();
    let image_env = docker.env();
    for var in ["TARJAMA_LISTEN", "TARJAMA_METRICS_ADDR"] {
        let port = port_of(&image_env[var]);
        assert!(exposed.contains(&port), "{var} port {port} is not EXPOSEd");
    }
}

#[test]
fn dockerfile_is_multistage_nonroot_with_models_volume() {
    let docker = dockerfile();
    assert!(docker.froms.len() >= 2, "multi-stage build");
    assert!(
        docker.froms[0].contains("rust:1.95-bookworm") && docker.froms[0].contains(" AS builder"),
        "builder stage: {}",
        docker.froms[0]
    );
    assert_eq!(docker.froms.last().unwrap(), "FROM debian:bookworm-slim");
    assert!(docker.text.contains("cargo build --release --locked"));
    assert!(docker
        .final_stage
        .iter()
        .any(|l| l.contains("ca-certificates")));
    assert!(docker
        .lines("COPY")
        .iter()
        .any(|l| l.starts_with("--from=builder") && l.ends_with("/usr/local/bin/tarjama")));
    assert_eq!(
        docker.env().get("HF_HOME").map(String::as_str),
        Some("/models")
    );
    // Catalog model folders live in the same volume: /models/NAME/.
    assert_eq!(
        docker.env().get("TARJAMA_MODELS_DIR").map(String::as_str),
        Some("/models")
    );
    // The catalog is built into the binary, so the build stage needs it.
    assert!(read(&root().join("Dockerfile"))
        .lines()
        .any(|l| l.starts_with("COPY models/catalog.toml")));
    let user = docker.lines("USER");
    assert!(
        !user.is_empty()
            && !user.last().unwrap().starts_with('0')
            && !user.last().unwrap().starts_with("root"),
        "the final stage runs as a non-root USER"
    );
    // The build context leaves out the (huge) target directory.
    let ignore = read(&root().join(".dockerignore"));
    assert!(ignore
        .lines()
        .any(|l| matches!(l.trim(), "target" | "target/" | "/target" | "/target/")));
}

#[test]
fn checker_reports_made_up_names() {
    let cli = serve_cli();
    let text = "env: TARJAMA_LISTEN=1 TARJAMA_NOT_A_FLAG=x; $TARJAMA_THREADS; XTARJAMA_SKIPPED; \
                client-only: TARJAMA_ADDR; prose: TARJAMA_* variables; TARJAMA_LOG=debug";
    let vars = tarjama_vars(text);
    assert_eq!(
        vars,
        [
            "TARJAMA_ADDR",
            "TARJAMA_LISTEN",
            "TARJAMA_LOG",
            "TARJAMA_NOT_A_FLAG",
            "TARJAMA_THREADS"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let words: Vec<String> = [
        "serve",
        "--listen=0.0.0.0:1",
        "--not-a-flag",
        "--threads",
        "4",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let flags = long_flags(&words);
    assert_eq!(
        unknown_names(&cli, &vars, &flags),
        vec![
            "TARJAMA_ADDR".to_string(), // the client's, not the server's
            "TARJAMA_NOT_A_FLAG".to_string(),
            "--not-a-flag".to_string(),
        ]
    );
    // Values are checked too: a switch's variable takes true/false (1/0, yes/no, on/off).
    let bad = BTreeMap::from([("TARJAMA_OFFLINE".to_string(), "maybe".to_string())]);
    assert!(env_as_flags(&cli, &bad).is_err());
    let good = BTreeMap::from([("TARJAMA_OFFLINE".to_string(), "1".to_string())]);
    assert!(env_as_flags(&cli, &good).is_ok());
    let bad = BTreeMap::from([("TARJAMA_NOT_A_FLAG".to_string(), "x".to_string())]);
    assert!(env_as_flags(&cli, &bad).is_err());
    let bad = BTreeMap::from([("TARJAMA_LOG_FORMAT".to_string(), "yaml".to_string())]);
    let mut argv = vec!["tarjama".to_string(), "serve".to_string()];
    argv.extend(env_as_flags(&cli, &bad).unwrap());
    assert!(
        Cli::try_parse_from(&argv).is_err(),
        "{argv:?} should not parse"
    );
}
