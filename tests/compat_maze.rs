//! Compatibility suite, maze clients: re-creations of the pygame maze (`llama3/Hackathon/ui.py`,
//! `maze_lam_client.py`) and of prompt-portal's web game (`WebGame.tsx` through the backend's maze bridge) from
//! seed-protocol §4, §1.3 and §2, against a real mosquitto, the real `mqtt-llm` and vllm-sim in echo mode. A state on
//! `maze/state` must be answered by one JSON hint on `maze/hint/{sessionId}` (the echo of what the engine saw,
//! wrapped as `{"hint": text}`), templates must be honoured and notified there, and a burst of states must leave
//! only the newest one's hint. Each client must get exactly the messages it expects and nothing extra under its
//! hint topic or wildcard: after the expected hints a marker state's hint must be the next message.

mod support;

use serde_json::Value;
use support::compat::{
    Echo, LAM_TEST_RESPONSE_TIMEOUT, LAM_TEST_SPACING, LamTester, PROJECTS, PromptPortalBackend, PygameHintReceiver,
    Template, WEB_GAME_SEND_RATE, Watch, hex, hint_player_pos, pygame_send_state, six_words, web_game_state,
};
use support::{Mosquitto, MqttLlm, Via, WAIT, serve_via, sim_up_args_with};

async fn up(broker: &Mosquitto, extra: &[&str]) -> MqttLlm {
    let args = [&["--projects", PROJECTS][..], extra].concat();
    MqttLlm::start(&sim_up_args_with(&broker.url(), &args)).await
}

/// The player position of the state a hint payload (JSON text) answers.
fn hint_pos(payload: &str) -> Option<(i64, i64)> {
    let v: Value = serde_json::from_str(payload).ok()?;
    hint_player_pos(v.get("hint")?.as_str()?)
}

/// Where the web game's player is on `tick` (it walks east from (1,1)).
fn web_pos(tick: u32) -> (i64, i64) {
    (1 + i64::from(tick), 1)
}

/// The pygame maze: each state (a fresh connection, QoS 0, `{sessionId, player_pos, exit_pos, visible_map}`) gets
/// one JSON hint on `maze/hint/{sid}`, read as the game reads it (`hint`, `path`, `break_wall`,
/// `breaks_remaining`); nothing that is not JSON, nothing for other sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygame_state_loop_and_hint_receiver() {
    pygame_state_loop_and_hint_receiver_via(Via::Mosquitto).await;
}

/// The same client through `mqtt-llm up`'s embedded broker (no broker installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygame_state_loop_and_hint_receiver_through_the_embedded_broker() {
    pygame_state_loop_and_hint_receiver_via(Via::Embedded).await;
}

async fn pygame_state_loop_and_hint_receiver_via(via: Via) {
    let (_server, port, _broker) = serve_via(via, &["--projects", PROJECTS]).await;
    let mut watch = Watch::start(port, "maze/hint/#").await;
    let sid = PygameHintReceiver::new_session_id();
    let mut game = PygameHintReceiver::start(port, &sid).await;
    let exit = (19, 13);
    // The game sends a state only after the player moved and 10 s passed: each hint is in before the next state.
    for pos in [(1, 1), (2, 1), (3, 1)] {
        pygame_send_state(port, &sid, pos, exit).await;
        let guidance = game.next_guidance(WAIT).await.expect("no hint for the state");
        assert!(guidance.get("error").is_none(), "{guidance:?}");
        assert!(!game.hint.is_empty(), "{guidance:?}");
        assert_eq!(
            hint_player_pos(&game.hint),
            Some(pos),
            "hint for another state: {}",
            game.hint
        );
        let echo = Echo::of(&game.hint);
        assert!(echo.roles.starts_with("s,"), "no maze system prompt: {}", game.hint);
        // What the game does with the optional keys: defaults when absent, a 2-element wall when present.
        if let Some(wall) = &game.break_wall {
            assert_eq!(wall.len(), 2, "{guidance:?}");
        }
        assert!(game.path.iter().all(Value::is_array), "{guidance:?}");
    }
    assert!(
        game.dropped.is_empty(),
        "the game dropped non-JSON hints: {:?}",
        game.dropped
    );
    // The last state was the marker: everything published under maze/hint/# so far is the three hints.
    let topic = format!("maze/hint/{sid}");
    let seen = watch.until(&topic, |t| hint_pos(t) == Some((3, 1))).await;
    let seen: Vec<(String, Option<(i64, i64)>)> = seen.iter().map(|m| (m.topic.clone(), hint_pos(&m.text()))).collect();
    assert_eq!(
        seen,
        vec![
            (topic.clone(), Some((1, 1))),
            (topic.clone(), Some((2, 1))),
            (topic.clone(), Some((3, 1)))
        ]
    );
}

fn coach() -> Template {
    Template {
        title: "Speedrun coach".into(),
        content: "You are a maze speedrun coach. Reply in JSON with a hint.".into(),
        version: 3,
        user_id: 7,
    }
}

/// The web game through prompt-portal's maze bridge: the template published for the session
/// (`maze/template/{sid}`, `{template, title, version, user_id, reset, max_breaks}`) is notified on
/// `maze/hint/{sid}` (`{"hint":"Template updated"}`); then the 3 s state loop (shortened, see
/// `WEB_GAME_SEND_RATE`) sends states with `prompt_template`; every hint is a JSON object with a `hint` (never
/// stored as `{"raw": ...}`), generated with the template, in state order, and the last one stored is the newest
/// state's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_game_state_loop_with_template() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker, &[]).await;
    let mut backend = PromptPortalBackend::start(broker.port).await;
    let sid = format!("webgame-{}", hex(12));
    let template = coach();

    backend.publish_template(&template, Some(&sid), true).await;
    let (session, notice) = backend.next_hint(WAIT).await.expect("no template notice");
    assert_eq!(session, sid);
    assert_eq!(notice["hint"], "Template updated", "{notice}");

    let ticks = 4;
    for tick in 1..=ticks {
        if tick > 1 {
            // The loop's interval (the web game's mqttSendRate), not a synchronisation.
            tokio::time::sleep(WEB_GAME_SEND_RATE).await;
        }
        backend.publish_state(&sid, &web_game_state(tick, 7), &template).await;
    }
    // The browser polls the last hint until it is the newest state's (the web game has no timeout).
    loop {
        let (_, hint) = backend.next_hint(WAIT).await.expect("no hint for the newest state");
        if hint["hint"].as_str().and_then(hint_player_pos) == Some(web_pos(ticks)) {
            break;
        }
    }
    let hints: Vec<Value> = backend.hint_log[1..].iter().map(|(_, v)| v.clone()).collect();
    assert!(!hints.is_empty() && hints.len() <= ticks as usize, "{hints:?}");
    let mut positions = Vec::new();
    for h in &hints {
        assert!(h.get("raw").is_none() && h.get("error").is_none(), "{h}");
        let text = h["hint"].as_str().unwrap_or_else(|| panic!("no hint text: {h}"));
        assert_eq!(
            Echo::of(text).system,
            six_words(&template.content),
            "template not used: {text}"
        );
        positions.push(hint_player_pos(text).unwrap_or_else(|| panic!("no state in {text}")));
    }
    let mut ordered = positions.clone();
    ordered.sort();
    ordered.dedup();
    assert_eq!(positions, ordered, "hints out of order or repeated");

    // The marker state: its hint is the very next message under maze/hint/+.
    backend
        .publish_state(&sid, &web_game_state(ticks + 1, 7), &template)
        .await;
    let (session, hint) = backend.next_hint(WAIT).await.expect("no hint for the marker");
    assert_eq!(session, sid);
    assert_eq!(
        hint["hint"].as_str().and_then(hint_player_pos),
        Some(web_pos(ticks + 1)),
        "{hint}"
    );
    assert_eq!(backend.last_hints[&sid], hint);
    assert!(
        backend.hint_log.iter().all(|(s, _)| *s == sid),
        "{:?}",
        backend.hint_log
    );
    assert!(
        backend.extras.is_empty(),
        "unexpected chat replies: {:?}",
        backend.extras
    );
}

/// Latest wins: states that arrive while the session's hint is being generated are superseded by the newest one;
/// only its hint follows (and maybe the one already in the engine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_game_burst_leaves_only_the_newest_hint() {
    let broker = Mosquitto::start().await;
    // Slow tokens: the first hint is still being generated when the burst arrives.
    let server = up(&broker, &["--engine-arg=--sim-itl-ms=20"]).await;
    let mut backend = PromptPortalBackend::start(broker.port).await;
    let sid = format!("webgame-{}", hex(12));
    let template = coach();

    backend.publish_state(&sid, &web_game_state(1, 4), &template).await;
    server.wait_metric("mqtt_llm_requests_inflight", 1.0).await;
    for tick in 2..=4 {
        backend.publish_state(&sid, &web_game_state(tick, 4), &template).await;
    }
    loop {
        let (_, hint) = backend.next_hint(WAIT).await.expect("no hint for the newest state");
        if hint["hint"].as_str().and_then(hint_player_pos) == Some(web_pos(4)) {
            break;
        }
    }
    let positions: Vec<Option<(i64, i64)>> = backend
        .hint_log
        .iter()
        .map(|(_, v)| v["hint"].as_str().and_then(hint_player_pos))
        .collect();
    assert!(
        positions == vec![Some(web_pos(4))] || positions == vec![Some(web_pos(1)), Some(web_pos(4))],
        "superseded states were answered: {positions:?}"
    );

    backend.publish_state(&sid, &web_game_state(5, 4), &template).await;
    let (_, hint) = backend.next_hint(WAIT).await.expect("no hint for the marker");
    assert_eq!(
        hint["hint"].as_str().and_then(hint_player_pos),
        Some(web_pos(5)),
        "{hint}"
    );
    assert!(
        backend.hint_log.iter().all(|(s, _)| *s == sid),
        "{:?}",
        backend.hint_log
    );
    assert!(
        backend.extras.is_empty(),
        "unexpected chat replies: {:?}",
        backend.extras
    );
}

/// How the suite reads a hint (no server needed): the echo of a state turn, wrapped as `{"hint": text}`, names
/// the player position in either of the forms the clients send.
#[test]
fn a_hint_names_the_state_it_answers() {
    let turn = r#"{"player_pos": [2, 1], "exit_pos": [19, 13], "visible_map": [[1, 1], [1, 0]], "germs": []}"#;
    let wrapped =
        serde_json::json!({ "hint": format!("messages=2 roles=s,u system=You are a maze coach. user={turn}") });
    assert_eq!(hint_pos(&wrapped.to_string()), Some((2, 1)));
    let echo = Echo::of(wrapped["hint"].as_str().unwrap());
    assert_eq!((echo.messages, echo.system.as_str()), (2, "You are a maze coach."));
    assert_eq!(
        hint_player_pos(r#"user=Game state: {"player_pos":{"x":5,"y":1}}"#),
        Some((5, 1))
    );
    assert_eq!(hint_pos(r#"{"hint":"Template updated"}"#), None);
    assert_eq!(hint_pos("not json"), None);
}

/// The LAM hackathon tester (`lam_mqtt_hackathon_test.py`): three identical pretty-printed states 1 s apart
/// (shortened), a response within 15 s, every message shown as JSON. Latest wins may leave fewer hints than
/// states, never more; under `maze/#` nothing but its states and their hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lam_hackathon_tester_three_states() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker, &[]).await;
    let mut everything = Watch::start(broker.port, "maze/#").await;
    let mut tester = LamTester::start(broker.port).await;
    for n in 1..=3 {
        if n > 1 {
            // The tester's own spacing between states, not a synchronisation.
            tokio::time::sleep(LAM_TEST_SPACING).await;
        }
        tester.send_test_state(n, (1, 1)).await;
    }
    assert!(
        tester.wait_for_response(LAM_TEST_RESPONSE_TIMEOUT).await,
        "no hint within the tester's 15 s"
    );
    // The marker: a state from another cell; hints for the first three may still come before its hint.
    tester.send_test_state(4, (2, 1)).await;
    while hint_pos(&tester.messages_received.last().unwrap().text()) != Some((2, 1)) {
        assert!(tester.wait_for_response(WAIT).await, "no hint for the marker state");
    }
    let shown = tester.shown();
    let positions: Vec<Option<(i64, i64)>> = shown
        .iter()
        .map(|m| {
            let v = m.as_ref().unwrap_or_else(|raw| panic!("not JSON: {raw}"));
            hint_player_pos(v["hint"].as_str().unwrap_or_else(|| panic!("no hint: {v}")))
        })
        .collect();
    let (last, first) = positions.split_last().unwrap();
    assert_eq!(*last, Some((2, 1)));
    assert!(
        (1..=3).contains(&first.len()) && first.iter().all(|p| *p == Some((1, 1))),
        "{positions:?}"
    );
    // Under maze/#: its four states and the hints, nothing else.
    let hint_topic = format!("maze/hint/{}", tester.session_id);
    let seen = everything.until(&hint_topic, |t| hint_pos(t) == Some((2, 1))).await;
    let states = seen.iter().filter(|m| m.topic == "maze/state").count();
    let hints = seen.iter().filter(|m| m.topic == hint_topic).count();
    assert_eq!(
        (states, hints, seen.len()),
        (4, positions.len(), 4 + positions.len()),
        "{seen:?}"
    );
}
