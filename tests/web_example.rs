//! The browser example (`examples/web/index.html`) end to end: headless Chromium loads the page from a local HTTP
//! server, the page connects to mosquitto over WebSockets with mqtt.js, sends one message (`?send=`), shows the
//! streamed tokens and then the final reply from `mqtt-llm up` + vllm-sim (echo mode). The page reads the reply
//! back from its own DOM and publishes it to the `?report=` topic, which this test subscribes to.
//!
//! Skipped (with a message) when Chromium is not installed, unless `MQTT_LLM_REQUIRE_CHROMIUM=1` (set by
//! `scripts/test.sh`, which installs it).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use support::{Mosquitto, MqttLlm, TestClient, WAIT, sim_up_args};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web")
}

/// Serve `examples/web` (the page and the vendored mqtt.js) on a free port.
async fn serve_web(tasks: &mut JoinSet<()>) -> SocketAddr {
    async fn file(name: &'static str, content_type: &'static str) -> impl IntoResponse {
        let body = std::fs::read(web_dir().join(name)).unwrap();
        ([(header::CONTENT_TYPE, content_type)], body)
    }
    let app = Router::new()
        .route("/", get(|| file("index.html", "text/html; charset=utf-8")))
        .route("/index.html", get(|| file("index.html", "text/html; charset=utf-8")))
        .route("/mqtt.min.js", get(|| file("mqtt.min.js", "text/javascript")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tasks.spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Headless Chromium in its own process group with a throwaway profile; the whole group is killed on drop, and
/// its output is printed when the test fails.
struct Chromium {
    child: Child,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn open(bin: &Path, url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromium.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            _profile: profile,
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The browser's renderer and utility processes share its group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("dbus")).collect();
            eprintln!(
                "chromium output (dbus noise left out):\n{}",
                tail[tail.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Chromium, or `None` (the test then says it is skipped) unless `MQTT_LLM_REQUIRE_CHROMIUM=1`.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        assert!(
            std::env::var("MQTT_LLM_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "MQTT_LLM_REQUIRE_CHROMIUM=1 but chromium is not installed (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED {test}: chromium is not installed");
    }
    found
}

/// Open the example page against the broker's WebSocket port, send one message from it, and check what it shows:
/// the streamed tokens, then the reply. `mqtt_port` is the same broker over TCP, for the page's report.
async fn chat_through_the_page(chromium: &Path, mqtt_port: u16, ws_port: u16) {
    let mut tasks = JoinSet::new();
    let http = serve_web(&mut tasks).await;

    let report = format!("test/web-report/{:08x}", rand::random::<u32>());
    let mut client = TestClient::connect(mqtt_port).await;
    client.subscribe(&report).await;

    let message = "hello from the browser";
    let url = format!(
        "http://{http}/index.html?broker=ws://127.0.0.1:{ws_port}&project=general&session=web-test\
         &send=hello%20from%20the%20browser&report={report}"
    );
    let _browser = Chromium::open(chromium, &url);

    let mut others = Vec::new();
    let got = tokio::time::timeout(WAIT, client.recv_on(&report, &mut others))
        .await
        .expect("the page never reported a reply");
    let shown = got.json();
    let reply = shown["reply"].as_str().expect("no final reply element in the page");
    assert!(reply.ends_with(&format!("user={message}")), "{shown}");
    // The streamed tokens were shown before the final reply, and they add up to it.
    assert_eq!(shown["streamed"].as_str().unwrap().trim(), reply, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_page_shows_streamed_tokens_then_the_reply() {
    let Some(chromium) = chromium_or_skip("browser_page_shows_streamed_tokens_then_the_reply") else {
        return;
    };
    let (broker, ws_port) = Mosquitto::start_with_websockets().await;
    let _server = MqttLlm::start(&sim_up_args(&broker.url())).await;
    chat_through_the_page(&chromium, broker.port, ws_port).await;
}

/// The quick start's browser: no broker installed, the page talks to `mqtt-llm up`'s embedded broker over
/// WebSocket (`--mqtt-ws-listen`, path /mqtt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_page_chats_through_the_embedded_broker() {
    let Some(chromium) = chromium_or_skip("browser_page_chats_through_the_embedded_broker") else {
        return;
    };
    let server = MqttLlm::start(&support::sim_up_args_embedded(&[])).await;
    let (mqtt, ws) = server.broker_ports();
    chat_through_the_page(&chromium, mqtt.unwrap(), ws.unwrap()).await;
}
