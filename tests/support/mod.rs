//! Fixtures for black-box tests: a real mosquitto on a free port, the real `mqtt-llm` and `vllm-sim` binaries,
//! and an MQTT 5 test client. Every process is killed on drop; every wait is on a readiness signal (a log line,
//! a ConnAck or SubAck, a `/readyz` answer), never a fixed sleep. Two waits poll, bounded by [`WAIT`], because
//! nothing announces what they wait for: a metric's value ([`MqttLlm::wait_metric`]) and the state of processes
//! that are not the test's children ([`eventually`], reading `/proc`).
#![allow(dead_code, clippy::unwrap_used)]

/// The simulator's process fixture lives with the simulator's crate; these tests share it.
#[path = "../../crates/vllm-sim/tests/support/sim.rs"]
pub mod sim;

pub mod compat;
pub mod faults;
pub mod llamacpp;
pub mod proc;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Generous bound for anything a test waits on; a hang fails the test instead of blocking CI.
pub const WAIT: Duration = Duration::from_secs(30);

/// A port that was free a moment ago. Another process may take it before it is bound, so a caller that binds it
/// later must retry on a clash (as [`Mosquitto`] does); whatever can bind port 0 itself should do that instead.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sim_bin() -> PathBuf {
    sim::bin()
}

pub fn mqtt_llm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mqtt-llm"))
}

/// A real mosquitto broker: a plain listener on `port`, maybe a second one (TLS, WebSockets). Ready once it logs
/// that it is running, which it does after every listener is bound.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    log: Lines,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

fn mosquitto_bin() -> &'static str {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("mosquitto is not installed (the README's test command installs it)")
}

/// How a mosquitto start ended.
enum Started {
    Running,
    PortTaken,
}

/// Mosquitto cannot bind port 0, so a start may lose a race for its ports: tries before giving up.
const MOSQUITTO_TRIES: usize = 10;

impl Mosquitto {
    pub async fn start() -> Self {
        Self::launch(tempfile::tempdir().unwrap(), None).await.0
    }

    /// A broker with a plain listener (`port`) and a TLS listener (the returned port) using `cert`/`key` (PEM).
    pub async fn start_with_tls(cert_pem: &str, key_pem: &str) -> (Self, u16) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let listener = format!("certfile {}\nkeyfile {}\n", cert.display(), key.display());
        Self::launch(dir, Some(&listener)).await
    }

    /// A broker with a plain listener (`port`) and an MQTT-over-WebSockets listener (the returned port), for
    /// browser clients.
    pub async fn start_with_websockets() -> (Self, u16) {
        Self::launch(tempfile::tempdir().unwrap(), Some("protocol websockets\n")).await
    }

    /// Start on fresh ports until no other process took one first; with `second` (its settings), a second
    /// listener, whose port is returned (0 without).
    async fn launch(dir: tempfile::TempDir, second: Option<&str>) -> (Self, u16) {
        let conf = dir.path().join("mosquitto.conf");
        for _ in 0..MOSQUITTO_TRIES {
            let port = free_port();
            let mut text = format!(
                "per_listener_settings false\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n\
                 listener {port} 127.0.0.1\n"
            );
            let second_port = match second {
                Some(settings) => {
                    let p = free_port();
                    text.push_str(&format!("listener {p} 127.0.0.1\n{settings}"));
                    p
                }
                None => 0,
            };
            std::fs::write(&conf, text).unwrap();
            let (child, log, started) = Self::spawn(&conf).await;
            if let Started::Running = started {
                let this = Self {
                    port,
                    child,
                    log,
                    conf,
                    _dir: dir,
                };
                return (this, second_port);
            }
        }
        panic!("mosquitto found no free port in {MOSQUITTO_TRIES} tries");
    }

    /// Run mosquitto with `conf` and wait until it runs or gives up on a port another process holds.
    async fn spawn(conf: &std::path::Path) -> (Child, Lines, Started) {
        let mut child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut log = Lines::read(child.stderr.take().unwrap());
        let end = log
            .find(|l| l.ends_with(" running") || l.contains("Address already in use"))
            .await;
        match end {
            Some(line) if line.ends_with(" running") => (child, log, Started::Running),
            Some(_) => (child, log, Started::PortTaken),
            None => panic!("mosquitto stopped before it ran:\n{}", log.seen.join("\n")),
        }
    }

    /// Kill the broker (every client is disconnected, every subscription forgotten) and start a new one on the
    /// same port.
    pub async fn restart(&mut self) {
        self.child.kill().await.unwrap();
        let (child, log, started) = Self::spawn(&self.conf).await;
        assert!(
            matches!(started, Started::Running),
            "the port was taken while mosquitto restarted:\n{}",
            log.seen.join("\n")
        );
        (self.child, self.log) = (child, log);
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Wait for a line of the broker's log matching `pred`; returns it.
    pub async fn wait_log(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.log.wait_for(what, pred).await
    }

    /// A broker that admits only `user` with `password` (a `mosquitto_passwd` file; no anonymous clients) on
    /// every listener.
    pub async fn start_with_password(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        let status = std::process::Command::new(mosquitto_passwd_bin())
            .args(["-b", "-c"])
            .arg(&file)
            .args([user, password])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_passwd failed");
        // Global settings (per_listener_settings is false), so the later allow_anonymous wins.
        let settings = format!("allow_anonymous false\npassword_file {}\n", file.display());
        Self::launch(dir, Some(&settings)).await.0
    }

    /// A broker with a plain listener (`port`, anonymous) and a TLS listener (the returned port) that requires a
    /// client certificate signed by `pki`'s CA (mutual TLS).
    pub async fn start_with_mtls(pki: &MtlsPki) -> (Self, u16) {
        let listener = format!(
            "certfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        );
        Self::launch(tempfile::tempdir().unwrap(), Some(&listener)).await
    }

    /// A broker with one plain listener and the settings `conf` (e.g. `allow_anonymous false`, `acl_file ...`)
    /// instead of the default ones, written after the `listener` line (so listener options such as
    /// `use_username_as_clientid` apply to it); `files` (name, contents) are written into the broker's directory
    /// first, and `{dir}` in `conf` stands for that directory.
    pub async fn start_with_config(conf: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let settings = conf.replace("{dir}", dir.path().to_str().unwrap());
        let conf = dir.path().join("mosquitto.conf");
        for _ in 0..MOSQUITTO_TRIES {
            let port = free_port();
            let text = format!(
                "per_listener_settings false\nset_tcp_nodelay true\npersistence false\n\
                 listener {port} 127.0.0.1\n{settings}\n"
            );
            std::fs::write(&conf, text).unwrap();
            if let (child, log, Started::Running) = Self::spawn(&conf).await {
                return Self {
                    port,
                    child,
                    log,
                    conf,
                    _dir: dir,
                };
            }
        }
        panic!("mosquitto found no free port in {MOSQUITTO_TRIES} tries");
    }
}

fn mosquitto_passwd_bin() -> &'static str {
    [
        "/usr/bin/mosquitto_passwd",
        "/usr/local/bin/mosquitto_passwd",
        "/usr/sbin/mosquitto_passwd",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("mosquitto_passwd is not installed (it comes with mosquitto)")
}

/// Lines a child process prints, read by a background task that ends with this value.
pub struct Lines {
    rx: mpsc::UnboundedReceiver<String>,
    pub seen: Vec<String>,
    _task: JoinSet<()>,
}

impl Lines {
    pub fn read(reader: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut task = JoinSet::new();
        task.spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            _task: task,
        }
    }

    /// The next line matching `pred`, or `None` once the output ended without one (or after [`WAIT`]).
    pub async fn find(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.rx.recv().await {
                self.seen.push(line.clone());
                if pred(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found.ok().flatten()
    }

    /// Wait for a line matching `pred`; returns it.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.find(pred).await {
            Some(line) => line,
            None => panic!("never saw {what}; lines so far:\n{}", self.seen.join("\n")),
        }
    }
}

/// A running `mqtt-llm up`.
pub struct MqttLlm {
    pub child: Child,
    pub http: SocketAddr,
    pub stdout: Lines,
    pub stderr: Lines,
    /// The default state directory (`XDG_STATE_HOME`) of an instance whose test set none: each its own, removed
    /// on drop, so parallel tests never share a session store.
    pub state_home: Option<tempfile::TempDir>,
}

/// [`sim_up_args`] and then `extra`.
pub fn sim_up_args_with(broker: &str, extra: &[&str]) -> Vec<String> {
    let mut args = sim_up_args(broker);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Arguments of `mqtt-llm up` launching vllm-sim, in echo mode, against `broker`.
pub fn sim_up_args(broker: &str) -> Vec<String> {
    [
        "up",
        "--vllm-bin",
        sim_bin().to_str().unwrap(),
        "--model",
        "sim-model",
        "--broker",
        broker,
        "--http",
        "127.0.0.1:0",
        "--engine-grace",
        "5s",
        "--engine-arg=--sim-reply=echo",
        // Tests keep the engine's output in their own logs, not in the runner's home.
        "--no-engine-log",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl MqttLlm {
    /// Start `mqtt-llm` with `args` and wait until `/readyz` is 200.
    pub async fn start(args: &[String]) -> Self {
        let mut this = Self::spawn(args).await;
        this.wait_ready().await;
        this
    }

    /// Start it and wait only for its HTTP server.
    pub async fn spawn(args: &[String]) -> Self {
        Self::spawn_with_env(args, &[]).await
    }

    /// [`Self::spawn`] with `env` added to the test's environment.
    pub async fn spawn_with_env(args: &[String], env: &[(&str, &str)]) -> Self {
        let mut this = Self::spawn_raw_with_env(args, env).await;
        let line = this
            .stdout
            .wait_for("http listening", |l| l.starts_with("http listening on "))
            .await;
        this.http = line.trim_start_matches("http listening on ").parse().unwrap();
        this
    }

    /// Start it without waiting for anything (for start-up failures).
    pub async fn spawn_raw(args: &[String]) -> Self {
        Self::spawn_raw_with_env(args, &[]).await
    }

    async fn spawn_raw_with_env(args: &[String], env: &[(&str, &str)]) -> Self {
        let chosen = env.iter().any(|(k, _)| *k == "XDG_STATE_HOME")
            || args.iter().any(|a| a.starts_with("--state-dir") || a == "--no-persist");
        let state_home = (!chosen).then(|| tempfile::tempdir().unwrap());
        let mut command = Command::new(mqtt_llm_bin());
        if let Some(dir) = &state_home {
            command.env("XDG_STATE_HOME", dir.path());
        }
        let mut child = command
            .args(args)
            .env("MQTT_LLM_LOG", "info,mqtt_llm=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = Lines::read(child.stdout.take().unwrap());
        let stderr = Lines::read(child.stderr.take().unwrap());
        Self {
            child,
            http: ([127, 0, 0, 1], 0).into(),
            stdout,
            stderr,
            state_home,
        }
    }

    pub async fn wait_ready(&mut self) {
        self.stdout.wait_for("ready", |l| l == "ready").await;
        let (status, body) = self.get("/readyz").await;
        assert_eq!(status, 200, "{body}");
    }

    /// GET a path of the HTTP server: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    pub fn pid(&self) -> i32 {
        self.child.id().unwrap() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Wait for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("mqtt-llm did not exit")
            .unwrap()
            .code()
    }

    /// Wait until the metric (as [`Self::metric`] reads it) reaches at least `value`. Polls `/metrics` (no push
    /// signal exists for a counter), at most [`WAIT`].
    pub async fn wait_metric(&self, prefix: &str, value: f64) {
        let ok = tokio::time::timeout(WAIT, async {
            while self.metric(prefix).await < value {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(ok.is_ok(), "{prefix} never reached {value}");
    }

    /// The value of a metric sample line `name{labels} value` whose text starts with `prefix`; 0 if absent.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Minimal HTTP/1.1 GET over a real socket.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A message the test client received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub correlation_data: Option<Bytes>,
    /// The retain flag: set on a retained message delivered at subscription time.
    pub retain: bool,
    /// The QoS the broker delivered it with.
    pub qos: rumqttc::v5::mqttbytes::QoS,
    /// When the test client received it.
    pub at: std::time::Instant,
    /// MQTT 5 user properties (e.g. `retryAfterMs` on an overload refusal).
    pub user_properties: Vec<(String, String)>,
}

impl From<rumqttc::v5::mqttbytes::v5::Publish> for Received {
    fn from(p: rumqttc::v5::mqttbytes::v5::Publish) -> Self {
        let props = p.properties.unwrap_or_default();
        Self {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            retain: p.retain,
            qos: p.qos,
            at: std::time::Instant::now(),
            user_properties: props.user_properties,
            correlation_data: props.correlation_data,
        }
    }
}

impl Received {
    /// The MQTT 5 user property `name`, if the message carries it.
    pub fn user_property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// An MQTT 5 client for tests.
pub struct TestClient {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Received>,
    subacks: mpsc::UnboundedReceiver<()>,
    _tasks: JoinSet<()>,
}

impl TestClient {
    pub async fn connect(port: u16) -> Self {
        let id = format!("test-{:08x}", rand::random::<u32>());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(4 * 1024 * 1024));
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subacks) = mpsc::unbounded_channel();
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = conn_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received::from(p));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, conn_rx.recv())
            .await
            .expect("test client could not connect");
        Self {
            client,
            rx,
            subacks,
            _tasks: tasks,
        }
    }

    /// Subscribe and wait for the broker's SubAck.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(WAIT, self.subacks.recv())
            .await
            .expect("no SubAck");
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    pub async fn publish_json(&self, topic: &str, value: serde_json::Value) {
        self.publish(topic, serde_json::to_vec(&value).unwrap()).await;
    }

    /// Publish with MQTT 5 Response Topic and Correlation Data.
    pub async fn publish_v5(&self, topic: &str, payload: impl Into<Bytes>, response_topic: &str, correlation: &[u8]) {
        let props = PublishProperties {
            response_topic: Some(response_topic.to_owned()),
            correlation_data: Some(Bytes::copy_from_slice(correlation)),
            ..Default::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), props)
            .await
            .unwrap();
    }

    /// The next message received (any topic).
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("no message received")
            .expect("client closed")
    }

    /// The next message on exactly `topic`; messages on other topics are returned in `others`.
    /// The next message (any topic), waiting at most `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.rx.recv()).await.ok().flatten()
    }

    pub async fn recv_on(&mut self, topic: &str, others: &mut Vec<Received>) -> Received {
        loop {
            let m = self.recv().await;
            if m.topic == topic {
                return m;
            }
            others.push(m);
        }
    }

    /// Whatever arrives within `window` (used only to assert that nothing more arrives after an
    /// already-observed final message; never to wait for something expected).
    pub async fn drain_for(&mut self, window: Duration) -> Vec<Received> {
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(window, self.rx.recv()).await {
            got.push(m);
        }
        got
    }
}

/// Process ids whose parent is `pid` (from /proc).
pub fn children_of(pid: i32) -> Vec<i32> {
    pids_where(|s| s.ppid == pid)
}

/// Process ids (zombies included) in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    pids_where(|s| s.pgrp == pgid)
}

fn pids_where(pred: impl Fn(&ProcStat) -> bool) -> Vec<i32> {
    proc_stats().into_iter().filter(pred).map(|s| s.pid).collect()
}

pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub state: char,
}

pub fn proc_stats() -> Vec<ProcStat> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..." — comm may contain spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        out.push(ProcStat {
            pid,
            state: fields[0].chars().next().unwrap_or('?'),
            ppid: fields[1].parse().unwrap_or(0),
            pgrp: fields[2].parse().unwrap_or(0),
        });
    }
    out
}

/// Wait until `pred` holds, checking every 20 ms, for at most [`WAIT`]: for what only polling can see, such as
/// `/proc` entries of processes that are not the test's children.
pub async fn eventually(what: &str, mut pred: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(WAIT, async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for: {what}");
}

/// A throw-away CA and a server certificate for localhost / 127.0.0.1: (ca_pem, cert_pem, key_pem).
pub fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mqtt-llm test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A broker with a TLS listener, and a CA certificate on disk that clients are told to trust: the one that
/// signed the broker's certificate, or an unrelated one.
pub struct TlsBroker {
    pub broker: Mosquitto,
    pub tls_port: u16,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    pub async fn start(trust_its_ca: bool) -> Self {
        let (ca, cert, key) = test_pki();
        let (broker, tls_port) = Mosquitto::start_with_tls(&cert, &key).await;
        let ca = if trust_its_ca { ca } else { test_pki().0 };
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        Self {
            broker,
            tls_port,
            ca_file,
            _dir: dir,
        }
    }

    /// The TLS listener's `mqtts://` URL.
    pub fn url(&self) -> String {
        format!("mqtts://localhost:{}", self.tls_port)
    }

    pub fn ca_arg(&self) -> String {
        self.ca_file.display().to_string()
    }
}

/// A TCP forwarder from a free port to `127.0.0.1:target` that a test can cut (every connection closed, new ones
/// closed as soon as accepted) and restore: a network outage between one client and the broker, with the broker
/// and everyone else unaffected.
pub struct TcpProxy {
    pub port: u16,
    open: tokio::sync::watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

impl TcpProxy {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, open_rx) = tokio::sync::watch::channel(true);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*open_rx.borrow() {
                    continue;
                }
                let mut cut = open_rx.clone();
                connections.spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self {
            port,
            open,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Close every forwarded connection and every new one, until [`Self::restore`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// A throw-away CA with a server certificate (localhost / 127.0.0.1) and a client certificate it signed, and a
/// client certificate signed by another CA, as PEM files: what a mutual-TLS broker and its clients use.
pub struct MtlsPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate (and key) that another CA signed: the broker must refuse it.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl MtlsPki {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let leaf = |names: Vec<String>, common_name: &str, issuer: &Issuer<'_, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, common_name);
            (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
        };
        let (ca_pem, issuer) = ca("mqtt-llm test CA");
        let server = leaf(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            "localhost",
            &issuer,
        );
        let client = leaf(Vec::new(), "mqtt-llm", &issuer);
        let (_, stranger_issuer) = ca("another CA");
        let stranger = leaf(Vec::new(), "mqtt-llm", &stranger_issuer);
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server.0),
            server_key: write("server.key", &server.1),
            client_cert: write("client.pem", &client.0),
            client_key: write("client.key", &client.1),
            stranger_cert: write("stranger.pem", &stranger.0),
            stranger_key: write("stranger.key", &stranger.1),
            _dir: dir,
        }
    }
}

/// Process ids of every descendant of `pid` (children, their children, ...), from /proc.
pub fn descendants_of(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        for child in children_of(parent) {
            found.push(child);
            next.push(child);
        }
    }
    found
}

/// The usual end-to-end stack: a broker, `mqtt-llm up` with the echo sim and extra flags, and a test client.
pub struct Stack {
    pub broker: Mosquitto,
    pub server: MqttLlm,
    pub client: TestClient,
}

impl Stack {
    /// mosquitto, `mqtt-llm up` with `extra` flags (ready), and a client subscribed to `filters`.
    pub async fn launch(extra: &[&str], filters: &[&str]) -> Self {
        let broker = Mosquitto::start().await;
        let server = MqttLlm::start(&sim_up_args_with(&broker.url(), extra)).await;
        let mut client = TestClient::connect(broker.port).await;
        for filter in filters {
            client.subscribe(filter).await;
        }
        Self { broker, server, client }
    }
}

/// Arguments of `mqtt-llm up` launching vllm-sim in echo mode with its embedded broker (no `--broker`), both
/// listeners on free ports of 127.0.0.1, then `extra`.
pub fn sim_up_args_embedded(extra: &[&str]) -> Vec<String> {
    let mut args = sim_up_args("-");
    let at = args.iter().position(|a| a == "--broker").unwrap();
    args.drain(at..at + 2);
    args.extend(
        ["--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0"]
            .into_iter()
            .chain(extra.iter().copied())
            .map(String::from),
    );
    args
}

impl MqttLlm {
    /// The embedded broker's ports from its `broker listening on mqtt://ADDR ws://ADDR/mqtt` line: (MQTT, WebSocket).
    pub fn broker_ports(&self) -> (Option<u16>, Option<u16>) {
        let line = self
            .stdout
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("broker listening on "))
            .expect("no `broker listening on` line: not the embedded broker?");
        let port = |scheme: &str| {
            line.split(' ').find_map(|url| url.strip_prefix(scheme)).map(|rest| {
                rest.split(['/'])
                    .next()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
        };
        (port("mqtt://").or_else(|| port("mqtts://")), port("ws://"))
    }

    /// The embedded broker's MQTT port.
    pub fn mqtt_port(&self) -> u16 {
        self.broker_ports()
            .0
            .expect("the embedded broker's MQTT listener is off")
    }
}

/// Which broker a test's clients and `mqtt-llm up` meet on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A real mosquitto; `up --broker`.
    Mosquitto,
    /// `up`'s embedded broker (no `--broker`).
    Embedded,
}

/// `mqtt-llm up` with vllm-sim in echo mode and `extra` flags, ready, reached through `via`: the server, the port
/// clients connect to, and the mosquitto (kept alive by the caller) when there is one.
pub async fn serve_via(via: Via, extra: &[&str]) -> (MqttLlm, u16, Option<Mosquitto>) {
    match via {
        Via::Mosquitto => {
            let broker = Mosquitto::start().await;
            let server = MqttLlm::start(&sim_up_args_with(&broker.url(), extra)).await;
            let port = broker.port;
            (server, port, Some(broker))
        }
        Via::Embedded => {
            let server = MqttLlm::start(&sim_up_args_embedded(extra)).await;
            let port = server.mqtt_port();
            (server, port, None)
        }
    }
}
