//! A client of the mqtt-llm wire protocol (`docs/protocol.md`), used by `chat` and `bench`: connect (MQTT 5,
//! `mqtt://` or `mqtts://`), open sessions, send requests and collect, per request, the stream frames, the final
//! reply, timings and protocol checks. It never prints.
//!
//! Theory of operation: the client subscribes once per project, not per session, to
//! `{p}/assistant_response/+/{clientId}/#` and `{p}/assistant_stream/+/{clientId}`: the first session of a project
//! queues the SUBSCRIBE and waits for its SubAck (concurrent first sessions wait for the same one); later sessions
//! cost nothing. One event-loop task (`eventloop`) owns the `rumqttc` event loop; it only polls, tracks the
//! connection and the subscriptions in the [`link::Link`], and routes each publish through the
//! [`router::Registry`] (request id from the reply topic or the frame) into an unbounded channel of the request
//! that waits for it. It never awaits a publish. Messages for no request of ours, a second reply, or frames after
//! the reply are [`Violation`]s kept by the registry.
//!
//! The client survives a broker restart: the event loop reconnects with a capped back-off and subscribes every
//! project again on each ConnAck (a clean start forgets them). A request waits, within its timeout, until its
//! project is subscribed on the current connection before it publishes, so that its reply cannot be missed;
//! requests in flight when the connection drops end as timeouts.

pub mod bench;
mod eventloop;
mod exchange;
pub mod link;
pub mod router;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use eventloop::{EventLoopTask, REQUEST_QUEUE, mqtt_options, subscribe_wanted};
use exchange::request_payload;
pub use exchange::{Exchange, Outcome, RequestSpec, Violation, error_code_of};
use link::{Link, LinkError, LinkStatus, Readiness};
use mqtt_llm_protocol::broker::BrokerUrlError;
use mqtt_llm_protocol::topics::{ProjectName, SessionId, TopicError};
use mqtt_llm_protocol::wire::StreamFrame;
use router::{Incoming, Registry};
use tls::TlsError;

/// How long connecting and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Client::shutdown`] lets the event loop write the DISCONNECT.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid broker URL: {0}")]
    Broker(#[from] BrokerUrlError),
    #[error("--mqtt-ca only applies to an mqtts:// broker")]
    CaWithoutTls,
    #[error("--mqtt-client-cert and --mqtt-client-key only apply to an mqtts:// broker")]
    ClientCertWithoutTls,
    #[error("TLS setup: {0}")]
    Tls(#[from] TlsError),
    /// The first connection failed in a way retrying cannot fix (TLS, CONNECT refused); the link's own words.
    #[error("could not connect to the broker: {}", .0.message)]
    Connect(LinkError),
    #[error("could not connect to the broker within {after:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    ConnectTimeout {
        after: Duration,
        last_error: Option<LinkError>,
    },
    #[error("the broker did not acknowledge the subscription within {0:?}")]
    SubscribeTimeout(Duration),
    #[error("the broker refused the subscriptions of project {project}: {reason:?}")]
    SubscribeRefused {
        project: String,
        reason: rumqttc::v5::mqttbytes::v5::SubscribeReasonCode,
    },
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// Boxed: rumqttc's error carries a whole request and would make every `Result` of this crate large.
    #[error("MQTT client: {0}")]
    Mqtt(#[source] Box<rumqttc::v5::ClientError>),
}

impl From<rumqttc::v5::ClientError> for ClientError {
    fn from(e: rumqttc::v5::ClientError) -> Self {
        Self::Mqtt(Box::new(e))
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` (default port 8883).
    pub broker: String,
    /// The MQTT client id, also the `clientId` of requests and a level of their topics.
    pub client_id: String,
    /// PEM file of the CA certificate(s) to trust for `mqtts://` (`--mqtt-ca`); the system's when `None`.
    pub ca_file: Option<PathBuf>,
    /// The certificate and key presented to a broker that asks for one (mutual TLS; `mqtts://` only).
    pub client_cert: Option<tls::ClientCertFiles>,
}

impl ClientConfig {
    pub fn new(broker: &str, prefix: &str) -> Self {
        Self {
            broker: broker.to_owned(),
            client_id: format!("{prefix}-{:08x}", rand::random::<u32>()),
            ca_file: None,
            client_cert: None,
        }
    }

    /// Trust the CA certificate(s) of this PEM file for `mqtts://`.
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// Present this client certificate and key (PEM files) to an `mqtts://` broker that asks for one.
    pub fn with_client_cert(mut self, client_cert: Option<tls::ClientCertFiles>) -> Self {
        self.client_cert = client_cert;
        self
    }
}

/// A connected protocol client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mqtt: AsyncClient,
    client_id: String,
    registry: Arc<Registry>,
    /// The connection and the per-project subscriptions; the event loop and `open_session` change it.
    link: watch::Sender<Link>,
    next_request: AtomicU64,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Client {
    /// Connect (MQTT 5, clean start) and wait for the ConnAck. Retries until `CONNECT_TIMEOUT` (10 s), except after an
    /// error that retrying cannot fix (an untrusted certificate, a refused CONNECT), which is returned at once.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let opts = mqtt_options(config)?;
        let (mqtt, eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
        let registry = Arc::new(Registry::default());
        let (link, mut link_rx) = watch::channel(Link::default());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(
            EventLoopTask {
                eventloop,
                mqtt: mqtt.clone(),
                link: link.clone(),
                registry: Arc::clone(&registry),
                client_id: config.client_id.clone(),
                cancel: cancel.clone(),
            }
            .run(),
        );
        tracker.close();
        let waited = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let link = link_rx
                .wait_for(|l| l.connection() > 0 || l.last_error().is_some_and(|e| e.fatal))
                .await
                .ok()?;
            Some((link.connection() > 0, link.last_error().cloned()))
        })
        .await;
        let failure = match waited {
            Ok(Some((true, _))) => None,
            Ok(Some((false, error))) => Some(ClientError::Connect(error.unwrap_or_else(LinkError::unknown))),
            Ok(None) | Err(_) => Some(ClientError::ConnectTimeout {
                after: CONNECT_TIMEOUT,
                last_error: link_rx.borrow().last_error().cloned(),
            }),
        };
        if let Some(e) = failure {
            cancel.cancel();
            tracker.wait().await;
            return Err(e);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                mqtt,
                client_id: config.client_id.clone(),
                registry,
                link,
                next_request: AtomicU64::new(0),
                cancel,
                tracker,
            }),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// Open a session of `project`. The first session of a project subscribes to the project's reply and stream
    /// filters and waits for the SubAck (sessions opened meanwhile wait for the same one); later ones cost nothing.
    pub async fn open_session(&self, project: &str, session: &str) -> Result<Session, ClientError> {
        let project = ProjectName::try_new(project)?;
        let session = SessionId::try_new(session)?;
        let (mqtt, id) = (&self.inner.mqtt, &self.inner.client_id);
        self.inner.link.send_if_modified(|link| {
            // Not connected: the ConnAck will subscribe it with the others.
            link.want(project.as_str()) && subscribe_wanted(link, mqtt, id)
        });
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        match self.ready(project.as_str(), deadline).await {
            Readiness::Ready => Ok(Session {
                client: self.clone(),
                project: project.as_str().to_owned(),
                session: session.as_str().to_owned(),
            }),
            Readiness::Pending => Err(ClientError::SubscribeTimeout(CONNECT_TIMEOUT)),
            Readiness::Refused { reason } => Err(ClientError::SubscribeRefused {
                project: project.as_str().to_owned(),
                reason,
            }),
        }
    }

    /// Wait until `project` is subscribed on the current connection (or refused), or until `deadline`.
    async fn ready(&self, project: &str, deadline: tokio::time::Instant) -> Readiness {
        let mut rx = self.inner.link.subscribe();
        let settled =
            tokio::time::timeout_at(deadline, rx.wait_for(|l| l.readiness(project) != Readiness::Pending)).await;
        match settled {
            Ok(Ok(link)) => link.readiness(project),
            Ok(Err(_)) | Err(_) => Readiness::Pending,
        }
    }

    /// Follow the connection's status (for a note when it is lost and when it is back).
    pub fn link_watch(&self) -> LinkWatch {
        let rx = self.inner.link.subscribe();
        let last = rx.borrow().status();
        LinkWatch { rx, last }
    }

    /// Violations seen outside any single request (foreign topics, duplicate replies, late frames).
    pub fn violations(&self) -> Vec<Violation> {
        self.inner.registry.violations()
    }

    /// Disconnect (when connected, giving the event loop a moment to write the DISCONNECT) and wait for the
    /// event-loop task to end.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let connected = inner.link.borrow().is_connected();
        if connected && inner.mqtt.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(DISCONNECT_GRACE, inner.tracker.wait()).await;
        }
        inner.cancel.cancel();
        inner.tracker.wait().await;
    }
}

/// Changes of the client's [`LinkStatus`].
#[derive(Debug)]
pub struct LinkWatch {
    rx: watch::Receiver<Link>,
    last: LinkStatus,
}

impl LinkWatch {
    /// The status when it differs from the one last returned (or seen at creation); `None` once the client and
    /// its event loop are gone. Cancel safe.
    pub async fn changed(&mut self) -> Option<LinkStatus> {
        loop {
            self.rx.changed().await.ok()?;
            let now = self.rx.borrow_and_update().status();
            if now != self.last {
                self.last = now.clone();
                return Some(now);
            }
        }
    }
}

/// One conversation (`sessionId`) of one project.
#[derive(Debug, Clone)]
pub struct Session {
    client: Client,
    pub project: String,
    pub session: String,
}

impl Session {
    /// End the session. Nothing to release: the subscriptions belong to the project (other sessions share them),
    /// and the registry keeps the session's requests so that a late second reply is still reported.
    pub fn close(&self) {}

    /// Send one request and wait up to `timeout` for its final reply; `on_frame` sees each frame as it arrives.
    /// While the project is not subscribed on the current connection (the broker restarted, say), the request
    /// waits for it before publishing; the wait counts towards `timeout` and the timings.
    pub async fn request(
        &self,
        spec: &RequestSpec,
        timeout: Duration,
        mut on_frame: impl FnMut(&StreamFrame),
    ) -> Result<Exchange, ClientError> {
        let inner = &self.client.inner;
        let n = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("r{n}");
        let (p, s, id) = (&self.project, &self.session, &inner.client_id);
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + timeout);
        let mut ex = Exchange {
            request_id: request_id.clone(),
            frames: Vec::new(),
            reply: None,
            ttft: None,
            e2e: None,
            outcome: Outcome::Timeout,
            violations: Vec::new(),
        };
        match self.client.ready(p, deadline).await {
            Readiness::Ready => {}
            Readiness::Pending => return Ok(ex),
            Readiness::Refused { reason } => {
                return Err(ClientError::SubscribeRefused {
                    project: p.clone(),
                    reason,
                });
            }
        }
        let payload = request_payload(p, s, id, &request_id, spec);
        let mut rx = inner.registry.register(&request_id, p, s);
        if let Err(e) = inner
            .mqtt
            .publish(format!("{p}/user_input"), QoS::AtLeastOnce, false, payload)
            .await
        {
            inner.registry.abandon(&request_id);
            return Err(e.into());
        }
        let mut error_frame = None;
        loop {
            let incoming = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(incoming)) => incoming,
                Ok(None) | Err(_) => {
                    inner.registry.abandon(&request_id);
                    return Ok(ex);
                }
            };
            match incoming {
                Incoming::Frame { at, frame } => {
                    let expected = ex.frames.len() as u64;
                    let ended = ex.frames.last().is_some_and(|(_, f)| f.is_last());
                    if frame.seq() != expected || ended {
                        ex.violations.push(Violation::FrameOutOfOrder {
                            request_id: request_id.clone(),
                            expected,
                            got: frame.seq(),
                        });
                    }
                    let elapsed = at.saturating_duration_since(start);
                    match &frame {
                        StreamFrame::Delta(_) if ex.ttft.is_none() => ex.ttft = Some(elapsed),
                        StreamFrame::Error(e) => error_frame = Some(e.error.code.clone()),
                        _ => {}
                    }
                    on_frame(&frame);
                    ex.frames.push((elapsed, frame));
                }
                Incoming::Reply { at, text } => {
                    ex.e2e = Some(at.saturating_duration_since(start));
                    ex.outcome = if text.starts_with("Error: ") {
                        Outcome::Error {
                            code: error_frame.unwrap_or_else(|| error_code_of(&text).to_owned()),
                            message: text.clone(),
                        }
                    } else {
                        Outcome::Ok
                    };
                    ex.reply = Some(text);
                    return Ok(ex);
                }
            }
        }
    }
}
