//! The service in-process: [`InProcess`] binds its HTTP listener on `127.0.0.1:0` and keeps it, runs
//! [`app::run_on`] on the test's runtime (launching `vllm-sim` in echo mode against a test broker), and waits for
//! the [`AppEvent::MqttReady`] milestone. No port is chosen and released, nothing sleeps, nothing is killed by
//! hand: shutdown goes through the app's own shutdown future, which stops the engine.

use std::net::SocketAddr;
use std::time::Duration;

use mqtt_llm::app::{self, AppError, AppEvent};
use mqtt_llm::config::{Config, RawEngine, RawGpu, RawMqtt, RawRequests, RawSettings};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{WAIT, sim_bin};

/// Settings like [`super::sim_up_args`]: `vllm-sim` in echo mode as the engine (model `demo`), `broker`, no GPU
/// check, no engine log file. The HTTP address is unused ([`InProcess`] holds its own listener).
pub fn sim_settings(broker: &str) -> RawSettings {
    RawSettings {
        engine: RawEngine {
            model: Some("demo".to_owned()),
            vllm_bin: Some(sim_bin()),
            no_engine_log: true,
            engine_grace: Duration::from_secs(5),
            engine_args: vec!["--sim-reply=echo".to_owned()],
            ..RawEngine::default()
        },
        mqtt: RawMqtt {
            broker: Some(broker.to_owned()),
            ..RawMqtt::default()
        },
        gpu: RawGpu {
            skip_gpu_check: true,
            ..RawGpu::default()
        },
        // In-process services of parallel tests would share the default state directory.
        requests: RawRequests {
            no_persist: true,
            ..RawRequests::default()
        },
        ..RawSettings::default()
    }
}

/// A running in-process service.
pub struct InProcess {
    /// The address of the listener the fixture bound and handed to the app.
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    app: JoinSet<Result<(), AppError>>,
    events: mpsc::UnboundedReceiver<AppEvent>,
    /// Every event received so far, in order.
    pub seen: Vec<AppEvent>,
}

impl InProcess {
    /// Start the service with `raw` and wait (at most [`WAIT`]) until it is connected and subscribed to MQTT.
    pub async fn start(raw: RawSettings) -> Self {
        let config = Config::from_raw(raw).expect("valid settings");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut app = JoinSet::new();
        app.spawn(app::run_on(
            config,
            listener,
            async move {
                // A dropped sender (the fixture gone) stops the app too.
                let _ = stopped.await;
            },
            events_tx,
        ));
        let mut this = Self {
            http,
            stop: Some(stop),
            app,
            events,
            seen: Vec::new(),
        };
        this.wait_for_event("MqttReady", |e| *e == AppEvent::MqttReady).await;
        this
    }

    /// Receive events until one matches `pred`; panics with the events seen if the app stops first or [`WAIT`]
    /// passes.
    pub async fn wait_for_event(&mut self, what: &str, pred: impl Fn(&AppEvent) -> bool) {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(event) = self.events.recv().await {
                let hit = pred(&event);
                self.seen.push(event);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        if found != Ok(true) {
            let ended = match self.app.try_join_next() {
                Some(r) => format!("; the app ended: {:?}", r.unwrap()),
                None => String::new(),
            };
            panic!("never saw {what}; events so far: {:?}{ended}", self.seen);
        }
    }

    /// `http://{listener}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Trigger the shutdown future and wait (at most [`WAIT`]) for the app to return; its result and every event
    /// it sent.
    pub async fn shutdown(mut self) -> (Result<(), AppError>, Vec<AppEvent>) {
        let _ = self.stop.take().map(|s| s.send(()));
        let result = tokio::time::timeout(WAIT, self.app.join_next())
            .await
            .expect("the app did not stop")
            .expect("the app task is gone")
            .expect("the app task panicked");
        while let Some(event) = self.events.recv().await {
            self.seen.push(event);
        }
        (result, std::mem::take(&mut self.seen))
    }
}

impl Drop for InProcess {
    /// Without [`InProcess::shutdown`] (a failed test): trigger shutdown and, on a multi-thread runtime, wait for it
    /// (bounded by [`WAIT`]) so the app stops its engine in order rather than having it killed with the runtime.
    fn drop(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        let _ = stop.send(());
        let Ok(handle) = Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
            let app = &mut self.app;
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(tokio::time::timeout(WAIT, app.join_next()));
            });
        } else {
            self.app.detach_all();
        }
    }
}
