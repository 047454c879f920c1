//! `mqtt-llm bench`: a load generator speaking the real wire protocol (and, for comparison, the same workload
//! straight to an OpenAI-compatible endpoint, or idle and beside a flooded session). Prints a table to stdout and a
//! progress bar to stderr; exits 1 when the server broke the protocol.

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::direct::DirectLlm;
use mqtt_llm::llm::LlmClient;
use mqtt_llm_client::bench::engine::MetricsSource;
use mqtt_llm_client::bench::flood::run_isolation;
use mqtt_llm_client::bench::stats::{self, Record};
use mqtt_llm_client::bench::target::Target;
use mqtt_llm_client::bench::{BenchConfig, PhaseRun, Report, SETTLE, Workload, plot, run_measured_phase, table};
use mqtt_llm_client::{Client, Violation};

use crate::cli::BenchArgs;

impl BenchArgs {
    fn config(&self) -> BenchConfig {
        let workload = match (self.rate, self.duration) {
            (Some(rate), Some(d)) => Workload::Open {
                rate,
                duration_ms: d.as_millis() as u64,
            },
            _ => Workload::Closed {
                sessions: self.sessions,
                turns: self.turns,
                think_ms: self.think_ms,
                concurrency: self.concurrency,
            },
        };
        BenchConfig {
            broker: self.broker.url(),
            projects: self.projects.clone(),
            workload,
            prompt_tokens: self.prompt_tokens,
            system_prompt_tokens: self.system_prompt_tokens,
            max_tokens: self.sampling.max_tokens,
            temperature: self.sampling.temperature,
            stream: !self.no_stream,
            timeout_ms: self.timeout.as_millis() as u64,
            direct: self.direct.clone(),
            compare: self.compare.clone(),
            flood_rate: self.flood_rate,
            flood_max_tokens: self.flood_max_tokens,
            rounds: if self.compare.is_some() || self.flood_rate.is_some() {
                self.rounds
            } else {
                1
            },
            per_turn: self.per_turn,
            engine_metrics: self.engine_metrics.clone(),
        }
    }
}

pub async fn run(args: &BenchArgs) -> ExitCode {
    match bench(args).await {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn direct_client(url: &str, model: Option<&str>) -> anyhow::Result<Target> {
    let base = url::Url::parse(url)?;
    let model = match model {
        Some(m) => m.to_owned(),
        None => LlmClient::discover_model(&base, Duration::from_secs(5)).await?,
    };
    Ok(Target::Direct(Arc::new(DirectLlm(LlmClient::new(
        base,
        model,
        Duration::from_secs(5),
    )?))))
}

/// The engine's Prometheus endpoint, fetched with the service's HTTP client.
#[derive(Debug)]
struct EngineMetrics {
    http: reqwest::Client,
    url: url::Url,
}

impl EngineMetrics {
    fn new(url: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--engine-metrics {url:?}: {e}"))?;
        mqtt_llm_client::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self { http, url })
    }
}

impl MetricsSource for EngineMetrics {
    fn scrape(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let response = self
                .http
                .get(self.url.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let response = response.error_for_status().map_err(|e| e.to_string())?;
            response.text().await.map_err(|e| e.to_string())
        })
    }
}

/// Connect a protocol client of the bench (`prefix-<8 hex>` as client id).
async fn connect(args: &BenchArgs, prefix: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(&args.broker.client_config(prefix)).await?)
}

/// What a run measured: the report, each phase's records for the plot, and the protocol breaches seen.
struct Measured {
    report: Report,
    phases: Vec<(&'static str, Vec<Record>)>,
    violations: Vec<Violation>,
}

async fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let config = args.config();
    if config.projects.is_empty() || config.projects.iter().any(|p| p.is_empty()) {
        anyhow::bail!("--projects must name at least one project");
    }
    let metrics = match &config.engine_metrics {
        Some(url) => Some(EngineMetrics::new(url)?),
        None => None,
    };
    let metrics = metrics.as_ref().map(|m| m as &dyn MetricsSource);
    let measured = match config.flood_rate {
        Some(rate) => isolation(args, config, rate, metrics).await?,
        None => comparison(args, config, metrics).await?,
    };
    let report = &measured.report;
    print_report(report, &measured.violations);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let phases: Vec<(&str, &[Record])> = measured.phases.iter().map(|(n, r)| (*n, r.as_slice())).collect();
        std::fs::write(path, plot::render(&phases, report.per_turn.as_deref()))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    let violated = report.mqtt.as_ref().is_some_and(|m| m.violations > 0)
        || report.isolation.as_ref().is_some_and(|i| i.violations() > 0);
    Ok(if violated { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// MQTT only, direct only, or both interleaved (--compare).
async fn comparison(
    args: &BenchArgs,
    config: BenchConfig,
    metrics: Option<&dyn MetricsSource>,
) -> anyhow::Result<Measured> {
    let direct_url = args.direct.as_deref().or(args.compare.as_deref());
    let direct = match direct_url {
        Some(url) => Some(direct_client(url, args.model.as_deref()).await?),
        None => None,
    };
    let mqtt = if args.direct.is_none() {
        Some(connect(args, "mqtt-llm-bench").await?)
    } else {
        None
    };
    let phases_per_kind = u64::from(config.rounds);
    let kinds = u64::from(mqtt.is_some()) + u64::from(direct.is_some());
    let progress = progress_bar(config.workload.expected_requests() * phases_per_kind * kinds);

    let (mut mqtt_run, mut direct_run) = (PhaseRun::default(), PhaseRun::default());
    let mut violations = 0;
    for round in 0..config.rounds {
        if let Some(client) = &mqtt {
            let before = client.violations().len();
            let target = Target::Mqtt(client.clone());
            let run = run_measured_phase(&config, &target, round * 2, tick(&progress), metrics).await;
            tokio::time::sleep(SETTLE).await;
            violations += client.violations().len() - before;
            mqtt_run.merge(run);
        }
        if let Some(target) = &direct {
            direct_run.merge(run_measured_phase(&config, target, round * 2 + 1, tick(&progress), metrics).await);
        }
    }
    progress.finish_and_clear();
    let client_violations = mqtt.as_ref().map(Client::violations).unwrap_or_default();
    if let Some(client) = &mqtt {
        client.shutdown().await;
    }

    let mqtt_stats = mqtt.is_some().then(|| mqtt_run.stats(violations));
    let direct_stats = direct.is_some().then(|| direct_run.stats(0));
    let main_records = if mqtt.is_some() {
        &mqtt_run.records
    } else {
        &direct_run.records
    };
    let report = Report {
        overhead: match (&mqtt_stats, &direct_stats) {
            (Some(m), Some(d)) => Some(stats::Overhead::between(m, d)),
            _ => None,
        },
        per_turn: config.per_turn.then(|| stats::per_turn(main_records)),
        config,
        mqtt: mqtt_stats,
        direct: direct_stats,
        isolation: None,
    };
    let mut phases = Vec::new();
    if report.mqtt.is_some() {
        phases.push(("mqtt", mqtt_run.records));
    }
    if report.direct.is_some() {
        phases.push(("direct", direct_run.records));
    }
    Ok(Measured {
        report,
        phases,
        violations: client_violations,
    })
}

/// Flood mode (--flood-rate): the workload idle and beside a flooded session, through two clients.
async fn isolation(
    args: &BenchArgs,
    config: BenchConfig,
    rate: f64,
    metrics: Option<&dyn MetricsSource>,
) -> anyhow::Result<Measured> {
    let measured = connect(args, "mqtt-llm-bench").await?;
    let flooder = connect(args, "mqtt-llm-flood").await?;
    let progress = progress_bar(config.workload.expected_requests() * u64::from(config.rounds) * 2);
    let run = run_isolation(&config, rate, &measured, &flooder, tick(&progress), metrics).await;
    progress.finish_and_clear();
    let mut violations = measured.violations();
    violations.extend(flooder.violations());
    measured.shutdown().await;
    flooder.shutdown().await;
    let run = run?;
    let report = Report {
        per_turn: config.per_turn.then(|| stats::per_turn(&run.idle)),
        config,
        mqtt: None,
        direct: None,
        overhead: None,
        isolation: Some(run.stats),
    };
    Ok(Measured {
        report,
        phases: vec![("idle", run.idle), ("flooded", run.flooded)],
        violations,
    })
}

fn tick(progress: &ProgressBar) -> impl Fn(&Record) + Clone + Send + Sync + 'static {
    let progress = progress.clone();
    move |_| progress.inc(1)
}

// ---- printing (the only place `bench` prints) ----

/// A progress bar on stderr; indicatif draws nothing when stderr is not a terminal.
fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} requests") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_report(report: &Report, violations: &[Violation]) {
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{}", table::render(report));
    let _ = stdout.flush();
    let mut err = std::io::stderr().lock();
    for v in violations.iter().take(20) {
        let _ = writeln!(err, "protocol violation: {v}");
    }
}
