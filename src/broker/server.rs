//! The broker itself: rmqtt on a runtime of its own (see the module's documentation).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::{Builder, Listener};
use rmqtt::retain::DefaultRetainStorage;
use rmqtt::server::MqttServer;
use tokio::sync::oneshot;

use super::hooks::{CountMessages, MemoryRetain, MessageCounters, PasswordCheck};
use super::{BRIDGE_USER, BrokerError, BrokerSettings, BrokerStats, ListenerKind};

/// Worker threads of the broker's own runtime.
const WORKER_THREADS: usize = 2;
/// How long [`EmbeddedBroker::shutdown`] lets the broker's blocking tasks finish before leaving them behind.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// rmqtt keys listeners by an id (by default the port, which is 0 for every port-0 listener): ours are fixed.
const TCP_LISTENER_ID: u16 = 1;
const WS_LISTENER_ID: u16 = 2;
const BRIDGE_LISTENER_ID: u16 = 3;

/// A running embedded broker. Dropping it stops the broker too, without waiting; [`EmbeddedBroker::shutdown`] waits.
pub struct EmbeddedBroker {
    /// What the broker thread reported once it listened.
    ready: Ready,
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("tcp_addr", &self.ready.tcp_addr)
            .field("ws_addr", &self.ready.ws_addr)
            .finish()
    }
}

/// What the broker thread hands back once its listeners are bound.
struct Ready {
    bridge_addr: SocketAddr,
    bridge_password: Option<String>,
    tcp_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    scx: ServerContext,
    counters: Arc<MessageCounters>,
}

impl EmbeddedBroker {
    /// Starts the broker; when it returns, every listener is bound and accepting.
    pub async fn start(settings: BrokerSettings) -> Result<Self, BrokerError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || run(settings, ready_tx, stop_rx, stopped_tx))
            .map_err(|e| BrokerError::Runtime(format!("cannot start its thread: {e}")))?;
        let ready = ready_rx
            .await
            .map_err(|_| BrokerError::Runtime("its thread ended before its listeners were up".into()))??;
        Ok(Self { ready, stop, stopped })
    }

    /// Where the bridge connects: a plain MQTT listener of its own on 127.0.0.1 (a free port), whatever the public
    /// listeners are (TLS, WebSocket only, or none).
    pub fn bridge_addr(&self) -> SocketAddr {
        self.ready.bridge_addr
    }

    /// The bridge's user name and password when users are checked (`--broker-auth`): [`BRIDGE_USER`] and a
    /// random password made at start.
    pub fn bridge_credentials(&self) -> Option<(&'static str, &str)> {
        self.ready.bridge_password.as_deref().map(|p| (BRIDGE_USER, p))
    }

    /// The TCP (or TLS) listener's bound address, port 0 resolved; `None` when that listener is off.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.ready.tcp_addr
    }

    /// The WebSocket listener's bound address, port 0 resolved; `None` when that listener is off.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ready.ws_addr
    }

    /// The broker's counters now. Async because rmqtt keeps its subscription table behind an async lock.
    pub async fn stats(&self) -> BrokerStats {
        let subscriptions = self.ready.scx.extends.router().await.routes().count();
        let retained = self.ready.scx.extends.retain().await.count().await;
        BrokerStats {
            clients_connected: self.ready.scx.connections.count() as i64,
            sessions: self.ready.scx.sessions.count() as i64,
            subscriptions: subscriptions as i64,
            retained: retained as i64,
            messages_received: self.ready.counters.received.load(Ordering::Relaxed),
            messages_sent: self.ready.counters.sent.load(Ordering::Relaxed),
        }
    }

    /// Stops the broker: its runtime is dropped, which closes its listeners and client connections and ends its
    /// tasks. Returns when that is done (at most about [`SHUTDOWN_GRACE`] for blocking work left behind).
    pub async fn shutdown(self) {
        let Self { stop, stopped, .. } = self;
        let _ = stop.send(());
        let _ = stopped.await;
    }
}

/// The broker thread: builds the runtime, binds, reports, serves until told to stop (or until the
/// [`EmbeddedBroker`] is dropped), then drops the runtime.
fn run(
    settings: BrokerSettings,
    ready: oneshot::Sender<Result<Ready, BrokerError>>,
    stop: oneshot::Receiver<()>,
    stopped: oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("mqtt-broker-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(BrokerError::Runtime(format!("cannot build its runtime: {e}"))));
            return;
        }
    };
    match runtime.block_on(setup(settings)) {
        Ok((server, state)) => {
            if ready.send(Ok(state)).is_ok() {
                runtime.block_on(async {
                    tokio::select! {
                        result = server.run() => {
                            if let Err(e) = result {
                                tracing::error!(error = %e, "the embedded MQTT broker stopped");
                            }
                        }
                        _ = stop => {}
                    }
                });
            }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    let _ = stopped.send(());
}

/// Builds the server context, plugs in our hooks and binds the listeners (in the broker's runtime: rmqtt's
/// listeners register with the runtime they are created in).
async fn setup(settings: BrokerSettings) -> Result<(MqttServer, Ready), BrokerError> {
    // The busy check refuses CONNECTs while the host's CPU load is high: on a 2-core box running an LLM engine
    // that would refuse clients for reasons they cannot act on.
    let scx = ServerContext::new().busy_check_enable(false).build().await;
    *scx.extends.retain_mut().await = Box::new(MemoryRetain(DefaultRetainStorage::new()));

    let counters = Arc::new(MessageCounters::default());
    let register = scx.extends.hook_mgr().register();
    register
        .add(Type::MessagePublish, Box::new(CountMessages(counters.clone())))
        .await;
    register
        .add(Type::MessageDelivered, Box::new(CountMessages(counters.clone())))
        .await;
    let auth_on = settings.auth.is_some();
    let mut bridge_password = None;
    if let Some(credentials) = settings.auth {
        let password = format!("{:032x}", rand::random::<u128>());
        bridge_password = Some(password.clone());
        let check = PasswordCheck {
            users: Arc::new(credentials),
            bridge: (BRIDGE_USER.to_owned(), password),
        };
        register.add(Type::ClientAuthenticate, Box::new(check)).await;
    }
    register.start().await;

    let config = |name: &str, addr: SocketAddr| {
        Builder::new()
            .name(name)
            .laddr(addr)
            .nodelay(true)
            // As tokio's `TcpListener::bind` does on Unix: a restart can bind while old connections sit in
            // TIME_WAIT. Linux still refuses a second listener on the port (that needs SO_REUSEPORT).
            .reuseaddr(Some(true))
            .allow_anonymous(!auth_on)
            .max_packet_size(settings.max_packet_size)
    };
    let mut server = MqttServer::new(scx.clone());
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = bind(config("mqtt-llm/bridge", loopback), loopback, ListenerKind::Tcp)?;
    let bridge_addr = local_addr(&listener, loopback, ListenerKind::Tcp)?;
    server = server.listener_by_id(listener, BRIDGE_LISTENER_ID);
    let mut tcp_addr = None;
    if let Some(addr) = settings.tcp {
        let listener = match &settings.tls {
            Some(files) => {
                let config = config("mqtt-llm/tls", addr)
                    .tls_cert(Some(path_text(&files.cert)))
                    .tls_key(Some(path_text(&files.key)));
                bind(config, addr, ListenerKind::Tcp)?
                    .tls()
                    .map_err(|e| BrokerError::Tls {
                        cert: files.cert.clone(),
                        key: files.key.clone(),
                        reason: format!("{e:#}"),
                    })?
            }
            None => bind(config("mqtt-llm/tcp", addr), addr, ListenerKind::Tcp)?,
        };
        tcp_addr = Some(local_addr(&listener, addr, ListenerKind::Tcp)?);
        server = server.listener_by_id(listener, TCP_LISTENER_ID);
    }
    let mut ws_addr = None;
    if let Some(addr) = settings.ws {
        let listener = bind(config("mqtt-llm/ws", addr), addr, ListenerKind::Ws)?
            .ws()
            .map_err(|e| BrokerError::Runtime(format!("{e:#}")))?;
        ws_addr = Some(local_addr(&listener, addr, ListenerKind::Ws)?);
        server = server.listener_by_id(listener, WS_LISTENER_ID);
    }
    Ok((
        server.build(),
        Ready {
            bridge_addr,
            bridge_password,
            tcp_addr,
            ws_addr,
            scx,
            counters,
        },
    ))
}

/// Binds a plain TCP listener; a taken port becomes [`BrokerError::AddrInUse`].
fn bind(config: Builder, addr: SocketAddr, which: ListenerKind) -> Result<Listener, BrokerError> {
    config.bind().map_err(|e| match e.downcast::<std::io::Error>() {
        Ok(io) if io.kind() == std::io::ErrorKind::AddrInUse => BrokerError::AddrInUse { addr, which },
        Ok(source) => BrokerError::Bind { addr, which, source },
        Err(other) => BrokerError::Bind {
            addr,
            which,
            source: std::io::Error::other(format!("{other:#}")),
        },
    })
}

fn local_addr(listener: &Listener, addr: SocketAddr, which: ListenerKind) -> Result<SocketAddr, BrokerError> {
    listener.local_addr().map_err(|e| BrokerError::Bind {
        addr,
        which,
        source: std::io::Error::other(format!("{e:#}")),
    })
}

/// rmqtt takes file paths as strings.
fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}
