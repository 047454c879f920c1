//! Conversation memory end to end: budgets (the flag's and the model's context), prefix-stable trimming, the
//! too-long message, and persistence across restarts (clean and SIGKILL) — a real mosquitto, the real `mqtt-llm`
//! binary launching `vllm-sim` in echo mode (its reply says how many messages it saw), and an MQTT 5 client.

mod support;

use serde_json::json;
use support::{Mosquitto, MqttLlm, Received, Stack, TestClient, sim_up_args_with};

/// `count` distinct words: about `count` tokens for the simulator's tokenizer.
fn words(turn: usize, count: usize) -> String {
    (0..count).map(|i| format!("w{turn}x{i}")).collect::<Vec<_>>().join(" ")
}

async fn ask(client: &mut TestClient, session: &str, body: serde_json::Value) -> Received {
    client.publish_json("general/user_input", body).await;
    client
        .recv_on(&format!("general/assistant_response/{session}"), &mut Vec::new())
        .await
}

/// The number of messages the engine saw (`messages=N` of the echo reply).
fn seen(reply: &Received) -> usize {
    let text = reply.text();
    let n = text
        .strip_prefix("messages=")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("not an echo reply: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_longer_than_the_budget_keeps_working_and_trims_rarely() {
    let mut s = Stack::launch(
        &["--max-history-tokens", "600", "--no-persist"],
        &["general/assistant_response/#"],
    )
    .await;
    let mut counts = Vec::new();
    for turn in 0..24 {
        let reply = ask(
            &mut s.client,
            "long",
            json!({"sessionId": "long", "message": words(turn, 8)}),
        )
        .await;
        assert!(!reply.text().starts_with("Error"), "turn {turn}: {}", reply.text());
        counts.push(seen(&reply));
    }
    // The history grew, was cut, and grew again: never past the budget (a turn of 8 words and its echo is well
    // over 30 tokens, so 600 tokens hold fewer than 20 turns = 40 messages + system + new).
    assert!(counts.iter().all(|&n| n <= 42), "{counts:?}");
    assert!(counts.windows(2).any(|w| w[1] < w[0]), "never trimmed: {counts:?}");
    // Stable: each trim drops to 60% at once, so the prompt's start changes on few turns.
    let trims = s.server.metric("mqtt_llm_history_trims_total{policy=\"stable\"}").await;
    assert!((1.0..=6.0).contains(&trims), "{trims} trims in 24 turns: {counts:?}");
    let cuts = counts.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(cuts <= 6, "the prefix changed on {cuts} turns: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_changes_the_prefix_on_every_turn_once_full() {
    let mut s = Stack::launch(
        &[
            "--max-history-tokens",
            "600",
            "--no-persist",
            "--trim-policy",
            "sliding",
        ],
        &["general/assistant_response/#"],
    )
    .await;
    let mut counts = Vec::new();
    for turn in 0..24 {
        let reply = ask(&mut s.client, "w", json!({"sessionId": "w", "message": words(turn, 8)})).await;
        assert!(!reply.text().starts_with("Error"), "turn {turn}: {}", reply.text());
        counts.push(seen(&reply));
    }
    let trims = s
        .server
        .metric("mqtt_llm_history_trims_total{policy=\"sliding\"}")
        .await;
    assert!(trims >= 10.0, "{trims} trims: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_context_smaller_than_the_budget_is_respected() {
    // The engine's context is 400 tokens; --max-history-tokens stays at its default (3000).
    let mut s = Stack::launch(
        &["--engine-arg=--max-model-len=400", "--no-persist"],
        &["general/assistant_response/#"],
    )
    .await;
    for turn in 0..20 {
        let body = json!({"sessionId": "small", "message": words(turn, 25), "maxTokens": 64});
        let reply = ask(&mut s.client, "small", body).await;
        assert!(!reply.text().starts_with("Error"), "turn {turn}: {}", reply.text());
    }
    let overflow = s
        .server
        .metric("mqtt_llm_replies_total{project=\"general\",outcome=\"context_overflow\"}")
        .await;
    assert_eq!(overflow, 0.0, "no engine 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_fit_gets_a_clear_error_and_the_session_goes_on() {
    let mut s = Stack::launch(
        &["--engine-arg=--max-model-len=400", "--no-persist"],
        &["general/assistant_response/#"],
    )
    .await;
    let ok = ask(&mut s.client, "big", json!({"sessionId": "big", "message": "hello"})).await;
    assert_eq!(seen(&ok), 2);
    let reply = ask(
        &mut s.client,
        "big",
        json!({"sessionId": "big", "message": words(0, 600)}),
    )
    .await;
    let text = reply.text();
    assert!(text.starts_with("Error: message too long: "), "{text}");
    assert!(text.contains("context of 400 tokens"), "{text}");
    // mqtt-llm counted it with the engine's /tokenize and never sent it: the engine saw one chat request.
    assert!(s.server.metric("mqtt_llm_tokenize_calls_total{outcome=\"over\"}").await >= 1.0);
    // A maxTokens that fills the context alone is refused the same way.
    let reply = ask(
        &mut s.client,
        "big",
        json!({"sessionId": "big", "message": "hi", "maxTokens": 390}),
    )
    .await;
    assert!(
        reply.text().starts_with("Error: maxTokens 390 leaves no room"),
        "{}",
        reply.text()
    );
    // The conversation goes on: the failed turns are not in it.
    let next = ask(&mut s.client, "big", json!({"sessionId": "big", "message": "again"})).await;
    assert_eq!(seen(&next), 4, "{}", next.text());
}

/// `mqtt-llm up` with the echo sim and `--state-dir dir`.
async fn up(broker: &Mosquitto, dir: &std::path::Path, extra: &[&str]) -> MqttLlm {
    let mut args = vec!["--state-dir", dir.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    MqttLlm::start(&sim_up_args_with(&broker.url(), &args)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_turns_survive_a_clean_restart() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    let mut server = up(&broker, dir.path(), &[]).await;
    for (i, m) in ["one", "two", "three"].into_iter().enumerate() {
        let reply = ask(
            &mut client,
            "keep",
            json!({"sessionId": "keep", "message": m, "systemPrompt": "Be a cat."}),
        )
        .await;
        assert_eq!(seen(&reply), 2 + 2 * i);
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait_exit().await, Some(0));
    let server = up(&broker, dir.path(), &[]).await;
    assert_eq!(server.metric("mqtt_llm_store_sessions_restored").await, 1.0);
    let reply = ask(&mut client, "keep", json!({"sessionId": "keep", "message": "four"})).await;
    assert_eq!(
        reply.text(),
        "messages=8 roles=s,u,a,u,a,u,a,u system=Be a cat. user=four",
        "the turns and the session's own system prompt came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_turns_survive_a_sigkill_once_the_interval_passed() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    let server = up(&broker, dir.path(), &["--persist-interval", "100ms"]).await;
    for m in ["one", "two"] {
        ask(&mut client, "k", json!({"sessionId": "k", "message": m})).await;
    }
    // A turn is stored before its reply goes out, so once the store has nothing pending (and wrote once), both
    // turns are on disk.
    server
        .wait_metric("mqtt_llm_store_writes_total{outcome=\"ok\"}", 1.0)
        .await;
    let written = async {
        while server.metric("mqtt_llm_store_pending_sessions").await > 0.0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(support::WAIT, written).await.unwrap();
    server.signal(nix::sys::signal::Signal::SIGKILL);
    drop(server);
    let server = up(&broker, dir.path(), &["--persist-interval", "100ms"]).await;
    assert_eq!(server.metric("mqtt_llm_store_sessions_restored").await, 1.0);
    let reply = ask(&mut client, "k", json!({"sessionId": "k", "message": "three"})).await;
    assert_eq!(seen(&reply), 6, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_is_refused_with_its_path_and_left_alone() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessions.redb");
    let garbage = b"this is not a redb database, it is a text file that someone put here".repeat(100);
    std::fs::write(&file, &garbage).unwrap();
    let args = sim_up_args_with(&broker.url(), &["--state-dir", dir.path().to_str().unwrap()]);
    let mut server = MqttLlm::spawn_raw(&args).await;
    let line = server.stderr.wait_for("error line", |l| l.starts_with("error: ")).await;
    assert_ne!(server.wait_exit().await, Some(0));
    assert!(line.contains(file.to_str().unwrap()), "the path is named: {line}");
    assert!(line.contains("--no-persist"), "the way out is named: {line}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "never a silent wipe");
}
