//! `mqtt-llm chat` scripted through stdin against mosquitto + `mqtt-llm up` with vllm-sim in echo mode: history,
//! errors, timeouts, a broker restart, a network outage, and `mqtts://`.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;

use support::{Lines, Mosquitto, MqttLlm, TcpProxy, TlsBroker, WAIT, mqtt_llm_bin, sim_up_args_with};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

async fn up(broker: &Mosquitto, extra: &[&str]) -> MqttLlm {
    let fast = ["--engine-arg=--sim-itl-ms=1", "--stream-interval-ms", "0"];
    MqttLlm::start(&sim_up_args_with(&broker.url(), &[&fast[..], extra].concat())).await
}

/// `mqtt-llm chat ARGS` with piped stdio, killed on drop.
fn spawn_chat(args: &[&str]) -> tokio::process::Child {
    Command::new(mqtt_llm_bin())
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Run `chat` with `input` on stdin: (exit code, stdout, stderr).
async fn chat(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = spawn_chat(args);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("chat did not exit")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn scripted_chat_keeps_history_and_resets() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker, &[]).await;
    let url = broker.url();
    for stream in ["--stream", "--no-stream"] {
        let (code, out, err) = chat(
            &["--broker", &url, stream, "--system", "be brief"],
            "first\n\nsecond\n/reset\nthird\n",
        )
        .await;
        assert_eq!(code, 0, "{stream}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{stream}: {out}");
        // Echo mode describes the whole conversation the engine saw: the history proves itself.
        assert!(
            lines[0].starts_with("messages=2 roles=s,u system=be brief user=first"),
            "{out}"
        );
        assert!(lines[1].starts_with("messages=4 roles=s,u,a,u"), "{out}");
        assert!(lines[1].contains("user=second"), "{out}");
        assert!(lines[2].starts_with("messages=2 "), "/reset starts afresh: {out}");
        let summaries = err.lines().filter(|l| l.starts_with("[total")).count()
            + err.lines().filter(|l| l.starts_with("[ttft")).count();
        assert_eq!(summaries, 3, "{stream}: {err}");
        if stream == "--stream" {
            assert!(err.contains("tok/s"), "{err}");
        }
    }
}

#[tokio::test]
async fn fail_on_error_exits_non_zero() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker, &[]).await;
    let url = broker.url();
    // maxTokens above the server's limit is refused with an `Error:` reply.
    let args = ["--broker", url.as_str(), "--max-tokens", "999999"];
    let (code, out, err) = chat(&args, "hello\nagain\n").await;
    assert_eq!(
        code, 0,
        "without --fail-on-error errors are reported and chat goes on: {err}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("Error: invalid 'maxTokens'"))
            .count(),
        2,
        "{out}"
    );
    assert!(err.contains("error invalid_param"), "{err}");

    let args = ["--broker", url.as_str(), "--max-tokens", "999999", "--fail-on-error"];
    let (code, out, _) = chat(&args, "hello\nagain\n").await;
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 1, "stops at the first error: {out}");
}

#[tokio::test]
async fn a_timeout_exits_non_zero() {
    // A broker with no server behind it: nothing ever answers.
    let broker = Mosquitto::start().await;
    let url = broker.url();
    let (code, _, err) = chat(&["--broker", &url, "--timeout", "300ms"], "hello\n").await;
    assert_eq!(code, 1);
    assert!(err.contains("no reply within"), "{err}");
}

/// A running `chat` fed one line at a time, its stdout and stderr read as they come.
struct ChatProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
}

impl ChatProcess {
    fn spawn(args: &[&str]) -> Self {
        let mut child = spawn_chat(args);
        let stdout = Lines::read(child.stdout.take().unwrap());
        let stderr = Lines::read(child.stderr.take().unwrap());
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The reply to a message sent with [`Self::send`] (echo mode: it ends with `user=MESSAGE`).
    async fn reply_to(&mut self, message: &str) -> String {
        let suffix = format!("user={message}");
        self.stdout
            .wait_for(&format!("the reply to {message:?}"), |l| l.ends_with(&suffix))
            .await
    }

    /// Close stdin (end of the script) and wait for the exit code.
    async fn finish(mut self) -> i32 {
        drop(self.stdin.take());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("chat did not exit")
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

const RECONNECTED: &str = "reconnected to the broker";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_survives_a_broker_restart() {
    let mut broker = Mosquitto::start().await;
    let server = up(&broker, &[]).await;
    let url = broker.url();
    let mut chat = ChatProcess::spawn(&["--broker", &url, "--session", "restart", "--timeout", "20s"]);
    chat.send("first").await;
    let first = chat.reply_to("first").await;
    assert!(first.starts_with("messages=2 "), "{first}");

    broker.restart().await;
    // The server counts a connection once the new broker acknowledged its subscriptions; chat says it is back
    // once its own are acknowledged. Only then is a request sure to reach the server and its reply to reach chat.
    server.wait_metric("mqtt_llm_mqtt_connections_total", 2.0).await;
    chat.stderr
        .wait_for("chat's reconnect note", |l| l == RECONNECTED)
        .await;
    chat.send("second").await;
    let second = chat.reply_to("second").await;
    // The history lives in the server, which kept running: the second turn sees the first.
    assert!(second.starts_with("messages=4 roles=s,u,a,u"), "{second}");
    assert_eq!(chat.finish().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_sent_while_the_broker_is_unreachable_waits_for_the_resubscription() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker, &[]).await;
    let proxy = TcpProxy::start(broker.port).await;
    let url = proxy.url();
    let mut chat = ChatProcess::spawn(&["--broker", &url, "--session", "outage", "--timeout", "20s"]);
    chat.send("before").await;
    chat.reply_to("before").await;

    proxy.cut();
    chat.stderr
        .wait_for("chat's connection-lost note", |l| {
            l.starts_with("connection to the broker lost")
        })
        .await;
    // Sent while chat cannot reach the broker: the request must wait until chat is connected again *and* its
    // subscriptions (which the clean session forgot) are acknowledged, or the reply would be lost.
    chat.send("during").await;
    proxy.restore();
    let reply = chat.reply_to("during").await;
    assert!(reply.starts_with("messages=4 "), "{reply}");
    chat.stderr
        .wait_for("chat's reconnect note", |l| l == RECONNECTED)
        .await;
    assert_eq!(chat.finish().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_mqtts_trusting_a_private_ca() {
    let tls = TlsBroker::start(true).await;
    // The server uses the plain listener; chat the TLS one of the same broker.
    let _server = up(&tls.broker, &[]).await;
    let (url, ca) = (tls.url(), tls.ca_arg());
    let (code, out, err) = chat(&["--broker", &url, "--mqtt-ca", &ca], "secure hello\n").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.trim_end().ends_with("user=secure hello"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_refuses_an_untrusted_broker_certificate_at_once() {
    let tls = TlsBroker::start(false).await;
    let (url, ca_arg) = (tls.url(), tls.ca_arg());
    let (code, out, err) = chat(&["--broker", &url, "--mqtt-ca", &ca_arg], "hello\n").await;
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("could not connect to the broker"), "{err}");
    assert!(err.contains("certificate"), "the error names the cause: {err}");
    // A certificate error is final: reported as it is, not retried until the connect timeout.
    assert!(!err.contains("within"), "{err}");

    // --mqtt-ca means nothing without TLS.
    let (code, _, err) = chat(&["--broker", &tls.broker.url(), "--mqtt-ca", &ca_arg], "hello\n").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only applies to an mqtts:// broker"), "{err}");
}
