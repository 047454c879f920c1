//! The client's event-loop task and its connection settings.
//!
//! # Theory of operation
//! One task owns the `rumqttc` event loop. It only polls, routes each publish through the [`Registry`] and drives
//! the [`Link`] (under the `watch` channel's lock, so that waiters see each change): a ConnAck starts a clean
//! session, so it queues one SUBSCRIBE carrying every known project's filters; a written SUBSCRIBE gets its packet
//! id; a SubAck makes its projects ready. It never awaits a publish or a subscribe (`try_subscribe_many` only).
//!
//! A connection error marks the link down and empties the request queue (`EventLoop::clean`) in the same critical
//! section: whatever was queued before is dropped when the next clean session starts, and nothing is queued after
//! it, since subscriptions are queued only while connected and requests wait until their project is ready again.
//! The task then waits a capped exponential back-off (with jitter, reset by each ConnAck) and polls again, which
//! reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::link::{Link, LinkError};
use super::router::{Registry, filters};
use super::{ClientConfig, ClientError};
use mqtt_llm_protocol::broker::BrokerUrl;

/// The first reconnect delay; doubled after each failure up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Short enough that a client notices a restarted broker within seconds.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Capacity of the client's request queue (publishes and subscribes waiting for the event loop).
pub(super) const REQUEST_QUEUE: usize = 4096;

/// MQTT 5, clean start, TCP_NODELAY; TLS for `mqtts://`, trusting `--mqtt-ca` or the system's CA certificates and
/// presenting the client certificate, if any.
pub(super) fn mqtt_options(config: &ClientConfig) -> Result<MqttOptions, ClientError> {
    let BrokerUrl { host, port, tls } = BrokerUrl::parse(&config.broker)?;
    if config.ca_file.is_some() && !tls {
        return Err(ClientError::CaWithoutTls);
    }
    if config.client_cert.is_some() && !tls {
        return Err(ClientError::ClientCertWithoutTls);
    }
    let mut opts = MqttOptions::new(&config.client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true)
        .set_max_packet_size(Some(4 * 1024 * 1024))
        .set_network_options(crate::tls::network_options());
    if tls {
        let identity = match &config.client_cert {
            Some(files) => Some(crate::tls::ClientIdentity::from_pem_files(files)?),
            None => None,
        };
        let tls = crate::tls::client_config(config.ca_file.as_deref(), identity.as_ref())?;
        opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            tls,
        )));
    }
    Ok(opts)
}

/// Queue one SUBSCRIBE for the projects the link wants, if any and if connected. When the request queue is full
/// they stay wanted and the event loop tries again after its next event.
pub(super) fn subscribe_wanted(link: &mut Link, mqtt: &AsyncClient, client_id: &str) -> bool {
    let projects = link.to_subscribe();
    if projects.is_empty() {
        return false;
    }
    let all = projects
        .iter()
        .flat_map(|p| filters(p, client_id))
        .map(|f| Filter::new(f, QoS::AtLeastOnce));
    match mqtt.try_subscribe_many(all) {
        Ok(()) => {
            link.queued(projects);
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot queue the subscriptions yet");
            false
        }
    }
}

/// Everything the event-loop task owns or shares.
pub(super) struct EventLoopTask {
    pub eventloop: EventLoop,
    pub mqtt: AsyncClient,
    pub link: watch::Sender<Link>,
    pub registry: Arc<Registry>,
    pub client_id: String,
    pub cancel: CancellationToken,
}

impl EventLoopTask {
    /// Poll until cancelled or until our DISCONNECT went out.
    pub async fn run(mut self) {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(RECONNECT_MIN)
            .with_max_delay(RECONNECT_MAX)
            .with_jitter()
            .without_max_times();
        let mut delays = backoff.build();
        loop {
            let event = tokio::select! {
                () = self.cancel.cancelled() => return,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    delays = backoff.build();
                    let (mqtt, id) = (&self.mqtt, &self.client_id);
                    self.link.send_modify(|link| {
                        link.on_connack();
                        subscribe_wanted(link, mqtt, id);
                    });
                    tracing::debug!("MQTT connected");
                }
                Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                    // Bookkeeping only: no readiness changes, so no waiter is woken.
                    self.link.send_if_modified(|link| {
                        link.on_subscribe_written(pkid);
                        false
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refusals: Vec<Option<SubscribeReasonCode>> = ack
                        .return_codes
                        .iter()
                        .map(|c| match c {
                            SubscribeReasonCode::Success(_) => None,
                            refused => Some(*refused),
                        })
                        .collect();
                    self.link.send_if_modified(|link| link.on_suback(ack.pkid, &refusals));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic);
                    self.registry.route(&topic, &p.payload, &self.client_id, Instant::now());
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    let error = LinkError {
                        message: e.to_string(),
                        fatal: matches!(e, ConnectionError::Tls(_) | ConnectionError::ConnectionRefused(_)),
                    };
                    let eventloop = &mut self.eventloop;
                    self.link.send_modify(|link| {
                        link.on_error(error);
                        eventloop.clean();
                    });
                    let delay = delays.next().unwrap_or(RECONNECT_MAX);
                    tracing::debug!(error = %e, retry_in = ?delay, "MQTT connection error");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
            if self.link.borrow().wants_subscribe() {
                let (mqtt, id) = (&self.mqtt, &self.client_id);
                self.link.send_if_modified(|link| subscribe_wanted(link, mqtt, id));
            }
        }
    }
}
