//! Flood mode (`--flood-rate`, figure P4): does one noisy session hurt the others? The measured workload runs
//! twice per round, once with no other load ("idle") and once while a second client, with its own MQTT connection
//! and client id as another device would have, floods one session of its own ("flooded").
//!
//! The flood is open loop: a single request every `1/rate` seconds, never waiting for a reply before the next,
//! yet each request is followed to its reply or timeout so it can be counted by outcome (the server should refuse
//! most with `session_queue_full`). The flood starts with the measured phase and stops sending when its last
//! request ends; the phase is over only when every flood request has ended too, so the next idle phase is idle.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::engine::MetricsSource;
use super::stats::{Added, FloodStats, Isolation, Record};
use super::target::{Target, TurnParams, mqtt_turn};
use super::{BenchConfig, PhaseRun, SETTLE, prompt, run_measured_phase};
use crate::{Client, ClientError, Session};

/// The conversation number flood prompts are drawn from (far from the measured ones).
const FLOOD_CONV: u64 = 1_000_000;

/// One session being flooded.
#[derive(Debug)]
pub struct Flood {
    session: Session,
    /// Requests per second.
    rate: f64,
    params: TurnParams,
    prompt_tokens: u32,
}

impl Flood {
    /// Subscribe the flooding client to `session`'s topics (SubAck awaited), ready to flood it.
    pub async fn open(
        client: &Client,
        project: &str,
        session: &str,
        rate: f64,
        params: TurnParams,
        prompt_tokens: u32,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            session: client.open_session(project, session).await?,
            rate,
            params,
            prompt_tokens,
        })
    }

    /// Flood while `measured` runs; then stop sending and wait for every flood request to end. Returns what
    /// `measured` returned and a record per flood request.
    pub async fn during<T>(self, measured: impl Future<Output = T>) -> (T, Vec<Record>) {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate.max(0.001)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut requests: JoinSet<Record> = JoinSet::new();
        let mut records = Vec::new();
        let mut sent = 0u32;
        tokio::pin!(measured);
        let out = loop {
            tokio::select! {
                out = &mut measured => break out,
                _ = ticks.tick() => {
                    let (session, params) = (self.session.clone(), self.params.clone());
                    let message = prompt(FLOOD_CONV, sent, self.prompt_tokens);
                    requests.spawn(async move { mqtt_turn(&session, 0, &message, &params).await });
                    sent += 1;
                }
                Some(done) = requests.join_next() => collect(&mut records, done),
            }
        };
        while let Some(done) = requests.join_next().await {
            collect(&mut records, done);
        }
        self.session.close();
        (out, records)
    }
}

fn collect(records: &mut Vec<Record>, done: Result<Record, tokio::task::JoinError>) {
    match done {
        Ok(r) => records.push(r),
        Err(e) => tracing::warn!(error = %e, "a flood request task failed"),
    }
}

/// What a flood-mode run measured: the figures, and each phase's records (for the plot and per-turn figures).
#[derive(Debug)]
pub struct IsolationRun {
    pub stats: Isolation,
    pub idle: Vec<Record>,
    pub flooded: Vec<Record>,
}

/// Run `config`'s workload idle and flooded, alternating `config.rounds` times, through `measured`, while
/// `flooder` floods a session `flood-<tag>r<round>` of the first project at `rate` requests per second. With
/// `metrics`, each phase's prefix-cache figures (the flooded ones include the flood's requests).
pub async fn run_isolation(
    config: &BenchConfig,
    rate: f64,
    measured: &Client,
    flooder: &Client,
    on_record: impl Fn(&Record) + Clone + Send + Sync + 'static,
    metrics: Option<&dyn MetricsSource>,
) -> Result<IsolationRun, ClientError> {
    let target = Target::Mqtt(measured.clone());
    let project = config.projects.first().map_or("general", String::as_str);
    let tag = format!("flood-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let (mut idle, mut flooded) = (PhaseRun::default(), PhaseRun::default());
    let (mut idle_violations, mut flooded_violations) = (0, 0);
    let mut flood_records = Vec::new();
    for round in 0..config.rounds {
        let before = measured.violations().len();
        idle.merge(run_measured_phase(config, &target, round * 2, on_record.clone(), metrics).await);
        tokio::time::sleep(SETTLE).await;
        idle_violations += measured.violations().len() - before;

        let flood = Flood::open(
            flooder,
            project,
            &format!("{tag}r{round}"),
            rate,
            config.flood_params(),
            config.prompt_tokens,
        )
        .await?;
        let before = measured.violations().len();
        let (run, records) = flood
            .during(run_measured_phase(
                config,
                &target,
                round * 2 + 1,
                on_record.clone(),
                metrics,
            ))
            .await;
        tokio::time::sleep(SETTLE).await;
        flooded_violations += measured.violations().len() - before;
        flooded.merge(run);
        flood_records.extend(records);
    }
    let idle_stats = idle.stats(idle_violations);
    let flooded_stats = flooded.stats(flooded_violations);
    let stats = Isolation {
        flood_rate: rate,
        flood: FloodStats::from_records(&flood_records, flooder.violations().len()),
        added: Added::between(&flooded_stats, &idle_stats),
        idle: idle_stats,
        flooded: flooded_stats,
    };
    Ok(IsolationRun {
        stats,
        idle: idle.records,
        flooded: flooded.records,
    })
}
