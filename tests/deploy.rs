//! The deployment files under `deploy/` checked without a network or a Docker daemon: the compose file's shape
//! (services, profiles, GPU reservation, health check, restart policy, volumes, bind mounts, build), the
//! Dockerfile, the Prometheus configuration and alert rules, the Grafana dashboard's metric names (against the
//! README's metric table and the `vllm:*` names vllm-sim exports), and the systemd unit. `docker compose config`
//! and `systemd-analyze verify` run when they are installed, and are skipped with a note when not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    let mut v: Value =
        serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{}: cannot apply the merge keys: {e}", path.display()));
    v
}

fn compose() -> Value {
    yaml(&deploy_dir().join("docker-compose.yml"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|seq| seq.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn profiles(compose: &Value, name: &str) -> Vec<String> {
    strings(service(compose, name).get("profiles"))
}

/// `30m`, `75s`, `1m30s`, `1h`, `500ms`, `30min` (compose and systemd spellings) as a duration.
fn duration(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    assert!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|e| panic!("bad duration {text:?}: {e}"));
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" | "" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(60 * n),
            "h" => Duration::from_secs(3600 * n),
            other => panic!("bad duration unit {other:?} in {text:?}"),
        };
    }
    total
}

/// The value of `--flag=VALUE` (or `--flag VALUE`) in a command list.
fn flag_value(command: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    command.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&eq) {
            Some(v.to_owned())
        } else if a == flag {
            command.get(i + 1).cloned()
        } else {
            None
        }
    })
}

/// The container path of each volume entry (short `SRC:DST[:MODE]` or long form) with its source.
fn volumes(svc: &Value) -> Vec<(String, String)> {
    let Some(seq) = svc.get("volumes").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    seq.iter()
        .map(|v| match v {
            Value::String(s) => {
                let mut parts = s.split(':');
                let src = parts.next().unwrap_or_default().to_owned();
                let dst = parts.next().unwrap_or_default().to_owned();
                (src, dst)
            }
            other => (
                other
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                other
                    .get("target")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
        })
        .collect()
}

fn is_bind_source(src: &str) -> bool {
    src.starts_with('.') || src.starts_with('/') || src.starts_with('~')
}

fn env_var(svc: &Value, name: &str) -> Option<String> {
    let env = svc.get("environment")?;
    match env {
        Value::Mapping(_) => env.get(name).map(|v| match v {
            Value::String(s) => s.clone(),
            other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_owned(),
        }),
        Value::Sequence(seq) => seq.iter().filter_map(Value::as_str).find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        }),
        _ => None,
    }
}

const MQTT_LLM_SERVICES: [&str; 2] = ["mqtt-llm", "mqtt-llm-external"];

#[test]
fn compose_has_the_services_in_their_profiles() {
    let c = compose();
    assert!(
        profiles(&c, "mqtt-llm").is_empty(),
        "mqtt-llm (embedded broker) must start without a profile"
    );
    for (name, profile) in [
        ("mqtt-llm-external", "external-broker"),
        ("mosquitto", "external-broker"),
        ("prometheus", "monitoring"),
        ("grafana", "monitoring"),
    ] {
        assert_eq!(
            profiles(&c, name),
            vec![profile.to_owned()],
            "{name} must be in the {profile} profile only"
        );
    }
    let mosquitto = service(&c, "mosquitto");
    assert!(
        mosquitto
            .get("image")
            .and_then(Value::as_str)
            .is_some_and(|i| i.starts_with("eclipse-mosquitto:2")),
        "mosquitto must run eclipse-mosquitto:2"
    );
}

#[test]
fn compose_mqtt_llm_services_reserve_a_gpu_check_readyz_and_keep_state() {
    let c = compose();
    let declared: BTreeSet<String> = c
        .get("volumes")
        .and_then(Value::as_mapping)
        .expect("top-level volumes")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    for name in MQTT_LLM_SERVICES {
        let svc = service(&c, name);
        let devices = svc
            .get("deploy")
            .and_then(|d| d.get("resources"))
            .and_then(|r| r.get("reservations"))
            .and_then(|r| r.get("devices"))
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("{name}: no deploy.resources.reservations.devices"));
        assert!(
            devices
                .iter()
                .any(|d| d.get("driver").and_then(Value::as_str) == Some("nvidia")
                    && strings(d.get("capabilities")).iter().any(|c| c == "gpu")),
            "{name}: no nvidia device with the gpu capability reserved"
        );

        let health = svc
            .get("healthcheck")
            .unwrap_or_else(|| panic!("{name}: no healthcheck"));
        let test = strings(health.get("test")).join(" ");
        assert!(
            test.contains("/readyz"),
            "{name}: the healthcheck does not probe /readyz: {test}"
        );
        let start = health
            .get("start_period")
            .and_then(Value::as_str)
            .map(duration)
            .unwrap_or_default();
        assert!(
            start >= Duration::from_secs(20 * 60),
            "{name}: start_period {start:?} is shorter than --engine-start-timeout (20m)"
        );

        let restart = svc.get("restart").and_then(Value::as_str);
        assert!(
            matches!(restart, Some("unless-stopped" | "always")),
            "{name}: restart is {restart:?}"
        );
        let grace = svc
            .get("stop_grace_period")
            .and_then(Value::as_str)
            .map(duration)
            .unwrap_or_default();
        // --drain-timeout 30s + up to 5 s of MQTT + --engine-grace 10s.
        assert!(
            grace >= Duration::from_secs(45),
            "{name}: stop_grace_period {grace:?} < 45s"
        );

        let command = strings(svc.get("command"));
        assert_eq!(
            command.first().map(String::as_str),
            Some("up"),
            "{name}: command must be `up ...`"
        );
        let state_dir = flag_value(&command, "--state-dir").unwrap_or_else(|| panic!("{name}: no --state-dir"));
        let http = flag_value(&command, "--http").unwrap_or_else(|| panic!("{name}: no --http"));
        assert!(
            http.starts_with("0.0.0.0:"),
            "{name}: --http {http} is not reachable from Prometheus"
        );
        let vols = volumes(svc);
        let named_at = |target: &str| {
            vols.iter()
                .any(|(src, dst)| dst == target && declared.contains(src) && !is_bind_source(src))
        };
        assert!(
            named_at(&state_dir),
            "{name}: no named volume on --state-dir {state_dir}"
        );
        let hf_home = env_var(svc, "HF_HOME").unwrap_or_else(|| {
            // Not set in compose: the image's (deploy/Dockerfile).
            let dockerfile = read(&deploy_dir().join("Dockerfile"));
            dockerfile
                .split_whitespace()
                .find_map(|w| w.strip_prefix("HF_HOME=").map(str::to_owned))
                .unwrap_or_else(|| "/root/.cache/huggingface".to_owned())
        });
        assert!(
            named_at(&hf_home),
            "{name}: no named volume on the Hugging Face cache {hf_home}"
        );
        assert!(
            env_var(svc, "HF_TOKEN").is_some_and(|v| v.contains("${HF_TOKEN")),
            "{name}: HF_TOKEN is not passed from the environment"
        );
        assert!(
            svc.get("ports")
                .is_some_and(|p| strings(Some(p)).iter().any(|p| p.ends_with(":9090"))),
            "{name}: 9090 not published"
        );

        // vLLM's port: fixed, bound beyond loopback, exposed on the compose network only, scraped by Prometheus.
        let engine_port = flag_value(&command, "--engine-port").unwrap_or_else(|| panic!("{name}: no --engine-port"));
        assert!(
            command.iter().any(|a| a == "--engine-arg=--host=0.0.0.0"),
            "{name}: vLLM binds 127.0.0.1 unless told otherwise"
        );
        assert!(
            strings(svc.get("expose")).contains(&engine_port),
            "{name}: engine port {engine_port} not exposed"
        );
        assert!(
            !strings(svc.get("ports"))
                .iter()
                .any(|p| p.ends_with(&format!(":{engine_port}"))),
            "{name}: the engine port must not be published on the host"
        );
        let scrape = read(&deploy_dir().join("prometheus/prometheus.yml"));
        assert!(
            scrape.contains(&format!("mqtt-llm:{engine_port}")),
            "prometheus.yml does not scrape the engine on {engine_port}"
        );
    }

    let embedded = strings(service(&c, "mqtt-llm").get("command"));
    assert!(
        flag_value(&embedded, "--broker").is_none(),
        "mqtt-llm must use its embedded broker"
    );
    let ports = strings(service(&c, "mqtt-llm").get("ports"));
    for port in ["1883", "9001"] {
        assert!(
            ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "mqtt-llm: {port} not published"
        );
    }
    let external = service(&c, "mqtt-llm-external");
    assert_eq!(
        flag_value(&strings(external.get("command")), "--broker").as_deref(),
        Some("mqtt://mosquitto:1883")
    );
    assert!(
        env_var(external, "MQTT_LLM_MQTT_USERNAME").is_some(),
        "mqtt-llm-external: no username"
    );
    assert!(
        env_var(external, "MQTT_LLM_MQTT_PASSWORD").is_some(),
        "mqtt-llm-external: no password"
    );
    let aliases = strings(
        external
            .get("networks")
            .and_then(|n| n.get("default"))
            .and_then(|d| d.get("aliases")),
    );
    assert!(
        aliases.iter().any(|a| a == "mqtt-llm"),
        "mqtt-llm-external must answer to mqtt-llm (Prometheus's target)"
    );
}

#[test]
fn compose_build_and_bind_mounts_point_at_files_in_deploy() {
    let c = compose();
    let deploy = deploy_dir();
    for name in MQTT_LLM_SERVICES {
        let build = service(&c, name)
            .get("build")
            .unwrap_or_else(|| panic!("{name}: no build"));
        let context = deploy.join(build.get("context").and_then(Value::as_str).expect("build.context"));
        let dockerfile = build
            .get("dockerfile")
            .and_then(Value::as_str)
            .expect("build.dockerfile");
        assert!(
            context.join(dockerfile).is_file(),
            "{name}: {dockerfile} not found under the build context {}",
            context.display()
        );
        assert!(
            context.join("Cargo.lock").is_file(),
            "{name}: the build context is not the repository root"
        );
    }
    let deploy_real = deploy.canonicalize().expect("deploy/ exists");
    let services = c.get("services").and_then(Value::as_mapping).expect("services");
    let mut binds = 0;
    for (name, svc) in services {
        for (src, dst) in volumes(svc) {
            if !is_bind_source(&src) {
                continue;
            }
            binds += 1;
            let host = deploy.join(&src);
            let real = host
                .canonicalize()
                .unwrap_or_else(|e| panic!("{name:?}: bind mount {src} -> {dst}: {}: {e}", host.display()));
            assert!(
                real.starts_with(&deploy_real),
                "{name:?}: bind mount {src} is outside deploy/"
            );
        }
    }
    assert!(
        binds >= 5,
        "expected the mosquitto, Prometheus and Grafana bind mounts, found {binds}"
    );
}

#[test]
fn compose_config_is_valid_when_docker_compose_is_installed() {
    let file = deploy_dir().join("docker-compose.yml");
    let version = Command::new("docker").args(["compose", "version"]).output();
    match version {
        Ok(out) if out.status.success() => {}
        _ => {
            eprintln!("note: `docker compose` is not installed here; skipping `docker compose config -q`");
            return;
        }
    }
    let out = Command::new("docker")
        .args(["compose", "-f"])
        .arg(&file)
        .args([
            "--profile",
            "external-broker",
            "--profile",
            "monitoring",
            "config",
            "-q",
        ])
        .output()
        .expect("run docker compose config");
    assert!(
        out.status.success(),
        "docker compose config -q failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfile_builds_mqtt_llm_onto_the_pinned_vllm_image() {
    let text = read(&deploy_dir().join("Dockerfile"));
    assert!(
        text.contains("cargo build --release --locked --bin mqtt-llm"),
        "no locked release build of mqtt-llm"
    );
    assert!(
        text.contains("--mount=type=cache"),
        "no cache mounts in the build stage"
    );
    // The image's vLLM is the one python-req.txt pins for bare hosts.
    let pin = read(&repo().join("python-req.txt"))
        .lines()
        .find_map(|l| l.trim().strip_prefix("vllm==").map(str::to_owned))
        .expect("python-req.txt pins vllm");
    assert!(
        text.contains(&format!("vllm/vllm-openai:v{pin}")),
        "the Dockerfile's vLLM image is not vllm/vllm-openai:v{pin} (python-req.txt)"
    );
    assert!(
        text.contains(r#"ENTRYPOINT ["/usr/local/bin/mqtt-llm"]"#),
        "the vLLM entrypoint is not overridden"
    );
    let healthcheck = text
        .split("HEALTHCHECK")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains("/readyz"),
        "the HEALTHCHECK does not probe /readyz"
    );
    let expose: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    for port in ["1883", "9001", "9090"] {
        assert!(expose.contains(port), "EXPOSE lacks {port}");
    }
    let cmd = text.lines().find(|l| l.starts_with("CMD ")).expect("a CMD");
    for part in [
        r#""up""#,
        r#""--http", "0.0.0.0:9090""#,
        r#""--state-dir", "/var/lib/mqtt-llm""#,
    ] {
        assert!(cmd.contains(part), "CMD lacks {part}: {cmd}");
    }
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER");
    assert!(!matches!(user.trim(), "root" | "0"), "the image runs as root");
}

#[test]
fn prometheus_loads_the_alert_rules_and_scrapes_mqtt_llm() {
    let prom = yaml(&deploy_dir().join("prometheus/prometheus.yml"));
    let rule_files = strings(prom.get("rule_files"));
    let c = compose();
    let mounted: Vec<(String, String)> = volumes(service(&c, "prometheus"));
    for rule_file in &rule_files {
        let (src, _) = mounted
            .iter()
            .find(|(_, dst)| dst == rule_file)
            .unwrap_or_else(|| panic!("rule file {rule_file} is not mounted into the prometheus service"));
        assert!(deploy_dir().join(src).is_file(), "{src} does not exist");
    }
    assert!(!rule_files.is_empty(), "prometheus.yml loads no rule file");
    let targets: Vec<String> = prom
        .get("scrape_configs")
        .and_then(Value::as_sequence)
        .expect("scrape_configs")
        .iter()
        .flat_map(|job| {
            job.get("static_configs")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .flat_map(|s| strings(s.get("targets")))
        })
        .collect();
    assert!(
        targets.iter().any(|t| t == "mqtt-llm:9090"),
        "no mqtt-llm:9090 target: {targets:?}"
    );
}

struct Rule {
    alert: String,
    expr: String,
    for_: Duration,
}

fn alert_rules() -> Vec<Rule> {
    let doc = yaml(&deploy_dir().join("prometheus/alerts.yml"));
    let groups = doc
        .get("groups")
        .and_then(Value::as_sequence)
        .expect("alerts.yml: groups");
    assert!(!groups.is_empty(), "alerts.yml: no group");
    let mut rules = Vec::new();
    for group in groups {
        let gname = group
            .get("name")
            .and_then(Value::as_str)
            .expect("alerts.yml: a group without a name");
        let list = group
            .get("rules")
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("alerts.yml: group {gname} has no rules"));
        for rule in list {
            let field = |k: &str| {
                rule.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| panic!("alerts.yml: a rule of {gname} has no string {k}"))
            };
            let alert = field("alert");
            let expr = field("expr");
            let for_ = duration(&field("for"));
            let labels = rule.get("labels").and_then(Value::as_mapping);
            assert!(
                labels.is_some_and(|l| l.get("severity").is_some()),
                "{alert}: no labels.severity"
            );
            let annotations = rule.get("annotations").and_then(Value::as_mapping);
            assert!(
                annotations.is_some_and(|a| a.get("summary").is_some()),
                "{alert}: no annotations.summary"
            );
            rules.push(Rule { alert, expr, for_ });
        }
    }
    rules
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

#[test]
fn alert_rules_have_their_shape_and_thresholds() {
    let rules = alert_rules();
    let find = |needle: &str| {
        rules
            .iter()
            .find(|r| squash(&r.expr).contains(&squash(needle)))
            .unwrap_or_else(|| panic!("no alert rule with {needle:?}"))
    };
    assert!(find("mqtt_llm_engine_ready == 0").for_ >= Duration::from_secs(300));
    find("increase(mqtt_llm_engine_restarts_total[15m]) > 3");
    find(r#"rate(mqtt_llm_replies_total{outcome="error"}[5m]))"#);
    assert!(squash(&find("mqtt_llm_replies_total{outcome=").expr).contains(">0.05"));
    find("mqtt_llm_gpu_memory_free_bytes / mqtt_llm_gpu_memory_total_bytes < 0.05");

    // The queue alert divides by --max-queued: the README's default.
    let queue = find("mqtt_llm_requests_queued /");
    let readme = read(&repo().join("README.md"));
    let max_queued = readme
        .lines()
        .find(|l| l.starts_with("| `--max-queued N`"))
        .and_then(|l| l.split('|').nth(3))
        .map(|cell| cell.trim().trim_matches('`').to_owned())
        .expect("README documents --max-queued's default");
    assert!(
        squash(&queue.expr).contains(&format!("mqtt_llm_requests_queued/{max_queued}>0.7")),
        "{}: expected mqtt_llm_requests_queued / {max_queued} > 0.7, got {}",
        queue.alert,
        queue.expr
    );
    let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(names.len(), rules.len(), "duplicate alert names");
}

/// Metric names (`mqtt_llm_*`, `vllm:*`) in a PromQL expression, read roughly: every identifier
/// `[a-zA-Z_:][a-zA-Z0-9_:]*` with one of those prefixes (outside quoted strings).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            if current.is_empty() && c.is_ascii_digit() {
                continue;
            }
            current.push(c);
            continue;
        }
        if current.starts_with("mqtt_llm_") || current.starts_with("vllm:") {
            names.push(std::mem::take(&mut current));
        }
        current.clear();
        if c == '"' || c == '\'' || c == '`' {
            quote = Some(c);
        }
    }
    names
}

/// mqtt-llm's metric names from the README's table (`| metric | type | ...`): the backticked names of each row's
/// first cell; `_free_bytes` after `mqtt_llm_gpu_memory_used_bytes` replaces as many trailing `_word`s of the
/// first name as it has (`mqtt_llm_gpu_memory_free_bytes`).
fn readme_metrics() -> BTreeSet<String> {
    let readme = read(&repo().join("README.md"));
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("| metric | type |"));
    assert!(lines.next().is_some(), "README.md has no `| metric | type |` table");
    let mut names = BTreeSet::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        let ticked: Vec<&str> = first_cell.split('`').skip(1).step_by(2).collect();
        let Some(first) = ticked.first() else { continue };
        names.insert((*first).to_owned());
        for suffix in &ticked[1..] {
            assert!(
                suffix.starts_with('_'),
                "README metric row {line:?}: {suffix} is neither a name nor a suffix"
            );
            let words = suffix.matches('_').count();
            let stem: Vec<&str> = first.split('_').collect();
            let prefix = stem[..stem.len().saturating_sub(words)].join("_");
            names.insert(format!("{prefix}{suffix}"));
        }
    }
    assert!(names.len() > 20, "README's metric table looks cut short: {names:?}");
    names
}

/// The `vllm:*` family names vllm-sim registers (its exposition is vLLM's, name for name).
fn vllm_sim_metrics() -> BTreeSet<String> {
    let dir = repo().join("crates/vllm-sim/src/metrics");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            for piece in read(&path).split('"').skip(1).step_by(2) {
                if piece.starts_with("vllm:") && piece.chars().skip(5).all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    names.insert(piece.to_owned());
                }
            }
        }
    }
    assert!(
        names.contains("vllm:num_requests_running"),
        "vllm-sim's names not found in {}",
        dir.display()
    );
    names
}

/// Whether `name` is a known family, or a sample of one (`_bucket`, `_sum`, `_count` of a histogram; for vLLM's
/// prometheus_client counters also `_total` and `_created`).
fn known(name: &str, families: &BTreeSet<String>, suffixes: &[&str]) -> bool {
    families.contains(name)
        || suffixes
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|base| families.contains(base)))
}

fn dashboard_exprs() -> Vec<String> {
    let path = deploy_dir().join("grafana/dashboards/mqtt-llm.json");
    let dash: serde_json::Value =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dash, &mut exprs);
    exprs
}

#[test]
fn metric_names_in_the_dashboard_and_alerts_exist() {
    let mqtt_llm = readme_metrics();
    let vllm = vllm_sim_metrics();
    let dashboard = dashboard_exprs();
    let alerts: Vec<String> = alert_rules().into_iter().map(|r| r.expr).collect();
    let mut used = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for expr in dashboard.iter().chain(&alerts) {
        for name in metric_names(expr) {
            let ok = if name.starts_with("vllm:") {
                known(&name, &vllm, &["_bucket", "_sum", "_count", "_total", "_created"])
            } else {
                known(&name, &mqtt_llm, &["_bucket", "_sum", "_count"])
            };
            if !ok {
                unknown.insert(name.clone());
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "metric names neither in README.md's metric table nor exported by vllm-sim: {unknown:?}"
    );
    // The panels the dashboard must have.
    let dashboard_names: BTreeSet<String> = dashboard.iter().flat_map(|e| metric_names(e)).collect();
    for required in [
        "mqtt_llm_replies_total",
        "mqtt_llm_requests_queued",
        "mqtt_llm_requests_inflight",
        "mqtt_llm_request_duration_seconds_bucket",
        "mqtt_llm_time_to_first_token_seconds_bucket",
        "mqtt_llm_inter_token_latency_seconds_bucket",
        "mqtt_llm_queue_wait_seconds_bucket",
        "mqtt_llm_tokens_total",
        "mqtt_llm_engine_state",
        "mqtt_llm_engine_restarts_total",
        "mqtt_llm_gpu_memory_used_bytes",
        "mqtt_llm_broker_clients",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:generation_tokens_total",
    ] {
        assert!(
            dashboard_names.contains(required),
            "the dashboard does not use {required}"
        );
    }
    assert!(used.len() >= dashboard_names.len());
}

#[test]
fn promql_names_are_extracted_roughly_but_right() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{model_name="x_mqtt_llm_y"}[5m]))) / mqtt_llm_a"#,
    );
    assert_eq!(names, ["vllm:time_to_first_token_seconds_bucket", "mqtt_llm_a"]);
    let families: BTreeSet<String> = ["mqtt_llm_x_seconds".to_owned()].into();
    assert!(known("mqtt_llm_x_seconds_bucket", &families, &["_bucket"]));
    assert!(!known("mqtt_llm_x_second_bucket", &families, &["_bucket"]));
    assert!(readme_metrics().contains("mqtt_llm_gpu_memory_free_bytes"));
}

#[test]
fn systemd_unit_drains_and_verifies() {
    let path = deploy_dir().join("mqtt-llm.service");
    let unit = read(&path);
    // Continuation lines joined, comments dropped.
    let joined = unit.replace("\\\n", " ");
    let directives: Vec<(&str, &str)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
            .collect()
    };
    for (key, want) in [
        ("KillMode", "mixed"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("StateDirectory", "mqtt-llm"),
        ("User", "mqtt-llm"),
        ("EnvironmentFile", "-/etc/mqtt-llm/env"),
    ] {
        assert_eq!(get(key), [want], "{key}");
    }
    let stop = duration(get("TimeoutStopSec").first().expect("TimeoutStopSec"));
    assert!(
        stop > Duration::from_secs(45),
        "TimeoutStopSec {stop:?} must exceed drain + MQTT + engine grace"
    );
    let exec = get("ExecStart");
    assert!(
        exec.first()
            .is_some_and(|e| e.contains(" up ") && e.contains("--state-dir /var/lib/mqtt-llm")),
        "ExecStart: {exec:?}"
    );
    // Readiness through sd_notify (READY=1 when /readyz would say 200; tests/systemd_notify.rs).
    assert_eq!(get("Type"), ["notify"], "Type");
    assert_eq!(get("NotifyAccess"), ["main"], "NotifyAccess");
    for banned in [
        "PrivateDevices",
        "DevicePolicy",
        "DeviceAllow",
        "ProtectClock",
        "MemoryDenyWriteExecute",
    ] {
        assert!(get(banned).is_empty(), "{banned} would break CUDA");
    }

    let Some(analyze) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("systemd-analyze"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("note: systemd-analyze is not installed here; skipping `systemd-analyze verify`");
        return;
    };
    // The binaries need not exist on a build machine: each Exec line's program that is missing here becomes
    // /bin/true, the rest of the unit is verified as written.
    let dir = tempfile::tempdir().expect("tempdir");
    let rewritten: String = unit
        .lines()
        .map(|line| {
            let Some((key, value)) = line.split_once('=').filter(|(k, _)| k.starts_with("Exec")) else {
                return format!("{line}\n");
            };
            let program = value.split_whitespace().next().unwrap_or_default();
            if Path::new(program).exists() {
                format!("{line}\n")
            } else {
                format!("{key}={}\n", value.replacen(program, "/bin/true", 1))
            }
        })
        .collect();
    let copy = dir.path().join("mqtt-llm.service");
    std::fs::write(&copy, rewritten).expect("write the unit copy");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {} {said}",
        out.status
    );
}
