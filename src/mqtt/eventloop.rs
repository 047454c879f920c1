//! The MQTT event-loop actor.
//!
//! # Theory of operation
//! One task owns the `rumqttc` event loop. It only polls, classifies and `try_send`s: it never awaits a publish
//! (awaiting the client from the task that drives it deadlocks once the request queue fills; rumqtt #1025, #263).
//! On every ConnAck it re-subscribes `{project}/user_input` (QoS 1) for each project, and it reports itself
//! ready (the `ready` watch) only once the broker has acknowledged those subscriptions, so that nothing published
//! after `/readyz` turns 200 can be missed. A connection error marks it not ready and waits a capped exponential
//! back-off (with jitter, reset after each ConnAck) before polling, and so reconnecting, again.
//!
//! Received publishes on a request topic go to the bridge over a bounded channel. When that channel is full the
//! message is handed to an `overflow` callback (which answers "overloaded" with a non-blocking publish), so the
//! loop never waits on the bridge either.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{MqttClient, MqttError};
use super::settings::{MqttSettings, MqttVersion};
use crate::metrics;
use mqtt_llm_protocol::topics::{ProjectName, request_topic};
use mqtt_llm_protocol::wire::V5Props;

/// Capacity of the client's request queue (publishes waiting for the event loop).
const REQUEST_QUEUE: usize = 4096;
/// QoS 1/2 publishes in flight to the broker at once.
const INFLIGHT: u16 = 1000;

/// A message received on one of our request topics.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub props: V5Props,
}

/// Called (from the event-loop task) with a message the bridge had no room for. Must not block.
pub type Overflow = Arc<dyn Fn(Inbound) + Send + Sync>;

/// Handle on the MQTT actor.
#[derive(Debug, Clone)]
pub struct MqttHandle {
    pub client: MqttClient,
    ready: watch::Receiver<bool>,
    stopped: CancellationToken,
}

impl MqttHandle {
    /// True while connected and subscribed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Send DISCONNECT after everything already queued (replies included) and wait, up to `timeout`, for the
    /// event loop to write it and stop.
    pub async fn shutdown(&self, timeout: Duration) {
        self.client.disconnect().await;
        if tokio::time::timeout(timeout, self.stopped.cancelled()).await.is_err() {
            tracing::warn!("MQTT event loop did not stop in time");
        }
    }
}

/// Connect (in the background) and run the event loop on `tracker` until [`MqttHandle::shutdown`] or `cancel`.
/// `ready` is set while connected and subscribed.
pub fn spawn_mqtt(
    cfg: &MqttSettings,
    inbound: mpsc::Sender<Inbound>,
    overflow: Overflow,
    ready: watch::Sender<bool>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<MqttHandle, MqttError> {
    let transport = if cfg.tls {
        Some(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            mqtt_llm_client::tls::client_config(cfg.ca_file.as_deref()).map_err(|e| MqttError::Tls(e.to_string()))?,
        )))
    } else {
        None
    };
    let ready_rx = ready.subscribe();
    let stopped = CancellationToken::new();
    let shared = LoopShared {
        projects: cfg.projects.clone(),
        inbound,
        overflow,
        ready,
        cancel,
        backoff: ExponentialBuilder::default()
            .with_min_delay(cfg.reconnect_min)
            .with_max_delay(cfg.reconnect_max)
            .with_jitter()
            .without_max_times(),
    };
    let client = match cfg.version {
        MqttVersion::V311 => {
            let mut opts = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            opts.set_keep_alive(cfg.keep_alive)
                .set_clean_session(true)
                .set_max_packet_size(cfg.max_packet_size as usize, cfg.max_packet_size as usize)
                .set_request_channel_capacity(REQUEST_QUEUE)
                .set_inflight(INFLIGHT);
            if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
                opts.set_credentials(u, p);
            } else if let Some(u) = &cfg.username {
                opts.set_credentials(u, "");
            }
            if let Some(t) = transport {
                opts.set_transport(t);
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, REQUEST_QUEUE);
            eventloop.set_network_options(mqtt_llm_client::tls::network_options());
            let conn = V3(eventloop, client.clone());
            let stopped = stopped.clone();
            tracker.spawn(async move {
                run(conn, shared).await;
                stopped.cancel();
            });
            MqttClient::V3(client)
        }
        MqttVersion::V5 => {
            let mut opts = rumqttc::v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            opts.set_keep_alive(cfg.keep_alive)
                .set_clean_start(true)
                .set_max_packet_size(Some(cfg.max_packet_size))
                .set_request_channel_capacity(REQUEST_QUEUE)
                .set_outgoing_inflight_upper_limit(INFLIGHT);
            if let Some(u) = &cfg.username {
                opts.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
            }
            if let Some(t) = transport {
                opts.set_transport(t);
            }
            opts.set_network_options(mqtt_llm_client::tls::network_options());
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, REQUEST_QUEUE);
            let conn = V5(eventloop, client.clone());
            let stopped = stopped.clone();
            tracker.spawn(async move {
                run(conn, shared).await;
                stopped.cancel();
            });
            MqttClient::V5(client)
        }
    };
    Ok(MqttHandle {
        client,
        ready: ready_rx,
        stopped,
    })
}

struct LoopShared {
    projects: Vec<ProjectName>,
    inbound: mpsc::Sender<Inbound>,
    overflow: Overflow,
    ready: watch::Sender<bool>,
    cancel: CancellationToken,
    backoff: ExponentialBuilder,
}

impl LoopShared {
    fn set_ready(&self, ready: bool) {
        self.ready.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
        metrics::mqtt_connected(ready);
    }

    fn deliver(&self, msg: Inbound) {
        match self.inbound.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => (self.overflow)(msg),
            Err(mpsc::error::TrySendError::Closed(msg)) => (self.overflow)(msg),
        }
    }

    /// After a connection error: not ready, then wait the next back-off delay (or until cancelled).
    /// Returns false when cancelled.
    async fn wait_before_reconnect(&self, backoff: &mut impl Iterator<Item = Duration>, error: String) -> bool {
        self.ready.send_replace(false);
        metrics::mqtt_connected(false);
        metrics::mqtt_connection_error();
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tracing::warn!(error, retry_in = ?delay, "MQTT connection error");
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}

/// One event of either protocol version's loop, classified.
enum LoopEvent {
    /// ConnAck: (re-)subscribe now.
    Connected,
    /// SubAck for our request topics; `refused` filters were not granted.
    Subscribed {
        refused: usize,
    },
    Message(Inbound),
    /// Our DISCONNECT went out: the loop is done.
    Disconnected,
    Other,
}

/// What the actor needs from a protocol version's event loop and client.
trait Connection: Send {
    /// Poll the next event; after an error the next call reconnects.
    fn next(&mut self) -> impl Future<Output = Result<LoopEvent, String>> + Send;
    /// Queue one SUBSCRIBE (QoS 1) for these filters without waiting.
    fn subscribe(&self, filters: Vec<String>) -> Result<(), String>;
}

struct V3(rumqttc::EventLoop, rumqttc::AsyncClient);
struct V5(rumqttc::v5::EventLoop, rumqttc::v5::AsyncClient);

impl Connection for V3 {
    async fn next(&mut self) -> Result<LoopEvent, String> {
        use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
        Ok(match self.0.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::ConnAck(_)) => LoopEvent::Connected,
            Event::Incoming(Packet::SubAck(ack)) => LoopEvent::Subscribed {
                refused: ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                    .count(),
            },
            Event::Incoming(Packet::Publish(p)) => LoopEvent::Message(Inbound {
                topic: p.topic,
                payload: p.payload,
                props: V5Props::default(),
            }),
            Event::Outgoing(Outgoing::Disconnect) => LoopEvent::Disconnected,
            _ => LoopEvent::Other,
        })
    }

    fn subscribe(&self, filters: Vec<String>) -> Result<(), String> {
        let filters = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, rumqttc::QoS::AtLeastOnce));
        self.1.try_subscribe_many(filters).map_err(|e| e.to_string())
    }
}

impl Connection for V5 {
    async fn next(&mut self) -> Result<LoopEvent, String> {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
        Ok(match self.0.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::ConnAck(_)) => LoopEvent::Connected,
            Event::Incoming(Packet::SubAck(ack)) => LoopEvent::Subscribed {
                refused: ack
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    .count(),
            },
            Event::Incoming(Packet::Publish(p)) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let props = p
                    .properties
                    .map(|pp| V5Props {
                        response_topic: pp.response_topic,
                        correlation_data: pp.correlation_data,
                    })
                    .unwrap_or_default();
                LoopEvent::Message(Inbound {
                    topic,
                    payload: p.payload,
                    props,
                })
            }
            Event::Outgoing(rumqttc::Outgoing::Disconnect) => LoopEvent::Disconnected,
            _ => LoopEvent::Other,
        })
    }

    fn subscribe(&self, filters: Vec<String>) -> Result<(), String> {
        use rumqttc::v5::mqttbytes::{QoS, v5::Filter};
        self.1
            .try_subscribe_many(filters.into_iter().map(|f| Filter::new(f, QoS::AtLeastOnce)))
            .map_err(|e| e.to_string())
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
                tracing::info!("MQTT connected");
                backoff = shared.backoff.build();
                if let Err(e) = conn.subscribe(shared.projects.iter().map(request_topic).collect()) {
                    tracing::error!(error = %e, "cannot queue the subscriptions");
                }
            }
            Ok(LoopEvent::Subscribed { refused }) => {
                if refused > 0 {
                    tracing::error!(refused, "broker refused request-topic subscriptions");
                }
                tracing::info!(projects = shared.projects.len(), "subscribed");
                shared.set_ready(true);
            }
            Ok(LoopEvent::Message(msg)) => shared.deliver(msg),
            Ok(LoopEvent::Disconnected) => {
                tracing::info!("MQTT disconnected");
                break;
            }
            Ok(LoopEvent::Other) => {}
            Err(e) => {
                if !shared.wait_before_reconnect(&mut backoff, e).await {
                    break;
                }
            }
        }
    }
    shared.set_ready(false);
}
