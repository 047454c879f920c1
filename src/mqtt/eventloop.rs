//! The MQTT event-loop actor.
//!
//! # Theory of operation
//! One task owns the `rumqttc` event loop. It only polls, classifies and `try_send`s: it never awaits a publish
//! (awaiting the client from the task that drives it deadlocks once the request queue fills; rumqtt #1025, #263).
//! On every ConnAck it re-subscribes `{project}/user_input`, the project's control topics
//! (`{project}/template[/+]`, `clear_history[/+]`, `delete_session[/+]`) and, for each state project,
//! `{project}/state` (QoS 1), and it reports itself
//! ready (the `ready` watch) only once the broker has acknowledged those subscriptions, so that nothing published
//! after `/readyz` turns 200 can be missed. A connection error marks it not ready and waits a capped exponential
//! back-off (with jitter, reset after each ConnAck) before polling, and so reconnecting, again. The final replies
//! of a broken connection are held and published again after the next ConnAck, ahead of anything newer (see
//! `connection`); its stream frames are dropped.
//!
//! Received publishes on a request topic go to the bridge over a bounded channel. When that channel is full the
//! message is handed to an `overflow` callback together with the loop's [`Publisher`] (the callback answers
//! "overloaded" with [`Publisher::try_reply`], which never waits), so the loop never waits on the bridge either.
//!
//! Shutdown must not lose a reply: closing the socket while QoS 1 publishes are still unacknowledged loses them
//! (the broker sees the connection reset, not our DISCONNECT). So the loop keeps the [`Unacked`] count current
//! (down on each PUBACK, and by the frames and replies a broken connection drops; held replies still count), and
//! [`MqttHandle::shutdown`] waits on that `watch` for 0, up to a deadline, then publishes the retained offline
//! status, waits for its PUBACK too, and only then queues the DISCONNECT (which makes the broker discard our Last
//! Will: the Will, `offline` with reason `connection lost`, is for deaths without a DISCONNECT).
//!
//! Presence ([`Presence`]): every time the subscriptions are acknowledged the loop publishes the retained `online`
//! status (a Will may have turned it `offline` while we were away). Beside it, unless turned off, a heartbeat task
//! publishes the successor server's `online` on `{first project}/status` whenever the loop is ready, and
//! [`MqttHandle::shutdown`] stops that task first and queues its `offline` with the retained one
//! ([`legacy_status`](super::legacy_status), which has no Will of its own).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{ConnectionError, MqttClient, MqttError};
use super::connection::{Connection, LoopEvent, SetAside, V3, V5};
use super::legacy_status::{LegacyStatus, spawn_legacy_status};
use super::publisher::{FRAME_BACKLOG, Publisher, Unacked};
use super::settings::{MqttSettings, MqttVersion};
use super::status::{OfflineReason, Presence};
use crate::metrics;
use mqtt_llm_protocol::topics::{ProjectName, control_filters, request_topic, state_topic};

pub use super::connection::Inbound;

/// Capacity of the client's request queue (publishes waiting for the event loop).
const REQUEST_QUEUE: usize = 4096;
// Delta frames stop queueing at half of it, so a broker that is behind or away leaves room for final replies.
const _: () = assert!(FRAME_BACKLOG < REQUEST_QUEUE);
/// QoS 1/2 publishes in flight to the broker at once.
const INFLIGHT: u16 = 1000;

/// Called (from the event-loop task) with a message the bridge had no room for, and the publisher to answer it
/// with ([`Publisher::try_reply`] only). Must not block.
pub type Overflow = Arc<dyn Fn(&Publisher, Inbound) + Send + Sync>;

/// Handle on the MQTT actor.
#[derive(Debug, Clone)]
pub struct MqttHandle {
    client: MqttClient,
    ready: watch::Receiver<bool>,
    /// QoS 1 publishes queued or in flight, not yet acknowledged by the broker.
    unacked: watch::Receiver<usize>,
    stopped: CancellationToken,
    /// Publishes the offline status at shutdown.
    publisher: Publisher,
    presence: Arc<Presence>,
    /// The legacy status (`None` when turned off), whose `offline` is published at shutdown.
    legacy_status: Option<Arc<LegacyStatus>>,
    /// Stops the legacy heartbeat, so that no `online` follows the shutdown's `offline`.
    legacy_stop: CancellationToken,
}

impl MqttHandle {
    /// True while connected and subscribed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Wait until the broker has acknowledged every publish queued so far (replies included), but not past
    /// `ack_deadline`; then send DISCONNECT and wait, up to `timeout`, for the event loop to write it and stop.
    /// Publishes still unacknowledged at the deadline are logged (they may be lost).
    /// Wait until every publish queued so far is acknowledged, up to `deadline`; whether it was.
    async fn wait_acked(&self, deadline: tokio::time::Instant) -> bool {
        let mut unacked = self.unacked.clone();
        // (The `Ref` the wait returns must not live across an await.)
        tokio::time::timeout_at(deadline, unacked.wait_for(|n| *n == 0))
            .await
            .is_ok()
    }

    pub async fn shutdown(&self, ack_deadline: tokio::time::Instant, timeout: Duration) {
        self.legacy_stop.cancel();
        let acked = self.wait_acked(ack_deadline).await;
        if !acked {
            let unacked = *self.unacked.borrow();
            metrics::mqtt_unacked_at_shutdown(unacked);
            tracing::warn!(
                unacked,
                "publishes not acknowledged by the broker at the drain deadline"
            );
        }
        // The retained offline status (and the legacy one), acknowledged before the DISCONNECT (half of `timeout`
        // at most, so that the DISCONNECT itself keeps the other half).
        if self.is_ready() {
            let topic = &self.presence.topic;
            let mut queued = self
                .publisher
                .try_status(topic, self.presence.offline(OfflineReason::Shutdown));
            if let Some(legacy) = &self.legacy_status {
                queued |= self.publisher.try_notice(&legacy.topic, legacy.offline());
            }
            if queued {
                let status_deadline = tokio::time::Instant::now() + timeout / 2;
                if !self.wait_acked(status_deadline).await {
                    tracing::warn!(topic, "the offline status was not acknowledged before the DISCONNECT");
                }
            }
        }
        self.client.disconnect().await;
        if tokio::time::timeout(timeout, self.stopped.cancelled()).await.is_err() {
            tracing::warn!("MQTT event loop did not stop in time");
        }
    }
}

/// Connect (in the background) and run the event loop on `tracker` until [`MqttHandle::shutdown`] or `cancel`.
/// `ready` is set while connected and subscribed. Returns the actor's handle and the one [`Publisher`].
pub fn spawn_mqtt(
    cfg: &MqttSettings,
    presence: Presence,
    inbound: mpsc::Sender<Inbound>,
    overflow: Overflow,
    ready: watch::Sender<bool>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(MqttHandle, Publisher), MqttError> {
    let transport = if cfg.tls {
        let tls = mqtt_llm_client::tls::client_config(cfg.ca_file.as_deref(), cfg.client_identity.as_ref())?;
        Some(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            tls,
        )))
    } else {
        None
    };
    let (client, conn) = match cfg.version {
        MqttVersion::V311 => {
            let (client, eventloop) = connect_v3(cfg, transport, &presence);
            let conn = V3::new(eventloop, client.clone(), &cfg.projects);
            (MqttClient::V3(client), Either::V3(conn))
        }
        MqttVersion::V5 => {
            let (client, eventloop) = connect_v5(cfg, transport, &presence);
            let conn = V5::new(eventloop, client.clone(), &cfg.projects);
            (MqttClient::V5(client), Either::V5(conn))
        }
    };
    let unacked = Unacked::new();
    let unacked_rx = unacked.subscribe();
    let publisher = Publisher::new(client.clone(), unacked);
    let ready_rx = ready.subscribe();
    let stopped = CancellationToken::new();
    let presence = Arc::new(presence);
    let legacy_stop = cancel.child_token();
    let shared = LoopShared {
        presence: Arc::clone(&presence),
        projects: cfg.projects.clone(),
        state_projects: cfg.state_projects.clone(),
        inbound,
        overflow,
        publisher: publisher.clone(),
        ready,
        cancel,
        backoff: ExponentialBuilder::default()
            .with_min_delay(cfg.reconnect_min)
            .with_max_delay(cfg.reconnect_max)
            .with_jitter()
            .without_max_times(),
    };
    let legacy_status = cfg.legacy_status.as_ref().map(|settings| {
        let status = LegacyStatus {
            topic: settings.topic.clone(),
            service: cfg.client_id.clone(),
        };
        spawn_legacy_status(
            status.clone(),
            settings.interval,
            publisher.clone(),
            ready_rx.clone(),
            tracker,
            legacy_stop.clone(),
        );
        Arc::new(status)
    });
    let done = stopped.clone();
    tracker.spawn(async move {
        match conn {
            Either::V3(conn) => run(conn, shared).await,
            Either::V5(conn) => run(conn, shared).await,
        }
        done.cancel();
    });
    let handle = MqttHandle {
        client,
        ready: ready_rx,
        unacked: unacked_rx,
        stopped,
        publisher: publisher.clone(),
        presence,
        legacy_status,
        legacy_stop,
    };
    Ok((handle, publisher))
}

// Built once and moved straight into the actor's task: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Either {
    V3(V3),
    V5(V5),
}

fn connect_v3(
    cfg: &MqttSettings,
    transport: Option<rumqttc::Transport>,
    presence: &Presence,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut opts = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_last_will(rumqttc::LastWill::new(
        &presence.topic,
        presence.offline(OfflineReason::ConnectionLost),
        rumqttc::QoS::AtLeastOnce,
        true,
    ));
    opts.set_keep_alive(cfg.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(cfg.max_packet_size as usize, cfg.max_packet_size as usize)
        .set_request_channel_capacity(REQUEST_QUEUE)
        .set_inflight(INFLIGHT);
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u, p.expose());
    } else if let Some(u) = &cfg.username {
        opts.set_credentials(u, "");
    }
    if let Some(t) = transport {
        opts.set_transport(t);
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, REQUEST_QUEUE);
    eventloop.set_network_options(mqtt_llm_client::tls::network_options());
    (client, eventloop)
}

fn connect_v5(
    cfg: &MqttSettings,
    transport: Option<rumqttc::Transport>,
    presence: &Presence,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut opts = rumqttc::v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        &presence.topic,
        presence.offline(OfflineReason::ConnectionLost),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        None,
    ));
    opts.set_keep_alive(cfg.keep_alive)
        .set_clean_start(true)
        .set_max_packet_size(Some(cfg.max_packet_size))
        .set_request_channel_capacity(REQUEST_QUEUE)
        .set_outgoing_inflight_upper_limit(INFLIGHT);
    if let Some(u) = &cfg.username {
        opts.set_credentials(u, cfg.password.as_ref().map_or("", |p| p.expose()));
    }
    if let Some(t) = transport {
        opts.set_transport(t);
    }
    opts.set_network_options(mqtt_llm_client::tls::network_options());
    rumqttc::v5::AsyncClient::new(opts, REQUEST_QUEUE)
}

struct LoopShared {
    projects: Vec<ProjectName>,
    /// Their `{p}/state` is subscribed too.
    state_projects: Vec<ProjectName>,
    presence: Arc<Presence>,
    inbound: mpsc::Sender<Inbound>,
    overflow: Overflow,
    publisher: Publisher,
    ready: watch::Sender<bool>,
    cancel: CancellationToken,
    backoff: ExponentialBuilder,
}

impl LoopShared {
    fn set_ready(&self, ready: bool) {
        // The gauge first: whoever sees `/readyz` turn 200 also finds it in `/metrics`.
        metrics::mqtt_connected(ready);
        self.ready.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
    }

    fn deliver(&self, msg: Inbound) {
        match self.inbound.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg) | mpsc::error::TrySendError::Closed(msg)) => {
                (self.overflow)(&self.publisher, msg);
            }
        }
    }

    /// After a connection error: count what the broken connection dropped (its held replies still count as
    /// unacknowledged).
    fn set_aside(&self, aside: SetAside) {
        if aside.frames_dropped > 0 || aside.replies_dropped > 0 {
            tracing::warn!(
                frames = aside.frames_dropped,
                replies = aside.replies_dropped,
                "publishes dropped with the broken MQTT connection"
            );
        }
        metrics::mqtt_publishes_dropped("frame", aside.frames_dropped);
        metrics::mqtt_publishes_dropped("reply", aside.replies_dropped);
        self.publisher
            .unacked()
            .settled(aside.frames_dropped + aside.replies_dropped);
    }

    /// After a connection error: not ready, then wait the next back-off delay (or until cancelled).
    /// Returns false when cancelled.
    async fn wait_before_reconnect(
        &self,
        backoff: &mut impl Iterator<Item = Duration>,
        error: ConnectionError,
    ) -> bool {
        self.ready.send_replace(false);
        metrics::mqtt_connected(false);
        metrics::mqtt_connection_error();
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tracing::warn!(error = %error, retry_in = ?delay, "MQTT connection error");
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}

/// The actor's loop, the same for both protocol versions.
async fn run(mut conn: impl Connection, shared: LoopShared) {
    let mut backoff = shared.backoff.build();
    loop {
        let event = tokio::select! {
            ev = conn.next() => ev,
            _ = shared.cancel.cancelled() => break,
        };
        match event {
            Ok(LoopEvent::Connected) => {
                let held = conn.republish();
                tracing::info!(republished = held, "MQTT connected");
                backoff = shared.backoff.build();
                let requests = shared
                    .projects
                    .iter()
                    .flat_map(|p| std::iter::once(request_topic(p)).chain(control_filters(p)));
                let states = shared.state_projects.iter().map(state_topic);
                if let Err(e) = conn.subscribe(requests.chain(states).collect()) {
                    tracing::error!(error = %e, "cannot queue the subscriptions");
                }
            }
            Ok(LoopEvent::Subscribed { refused }) => {
                if refused > 0 {
                    tracing::error!(
                        refused,
                        "broker refused subscriptions (request or control topics: see its ACL)"
                    );
                }
                tracing::info!(projects = shared.projects.len(), "subscribed");
                let presence = &shared.presence;
                if !shared.publisher.try_status(&presence.topic, presence.online()) {
                    tracing::warn!(topic = presence.topic, "cannot queue the online status");
                }
                shared.set_ready(true);
            }
            Ok(LoopEvent::Message(msg)) => shared.deliver(msg),
            Ok(LoopEvent::Acked) => shared.publisher.unacked().settled(1),
            Ok(LoopEvent::Disconnected) => {
                tracing::info!("MQTT disconnected");
                break;
            }
            Ok(LoopEvent::Other) => {}
            Err(e) => {
                shared.set_aside(conn.set_aside());
                if !shared.wait_before_reconnect(&mut backoff, e).await {
                    break;
                }
            }
        }
    }
    shared.set_ready(false);
}
