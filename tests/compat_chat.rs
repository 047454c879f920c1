//! Compatibility suite, chat clients: re-creations of the original server's chat clients (seed-protocol §4) against
//! a real mosquitto, the real `mqtt-llm` and vllm-sim in echo mode (the reply says what the engine saw). Each client
//! must get exactly the replies it expects, parsed as the original parses them, and nothing extra under its reply
//! wildcard: after the expected replies a marker request is sent, and its reply must be the next message.

mod support;

use support::compat::{
    ChatParams, Echo, KgClient, MatchedBy, PP_CHAT_TIMEOUT, PP_CHATBOT_TIMEOUT, PROJECTS, PromptPortalBackend,
    VllmTestClient, Watch, WebChatApp, six_words, sse_chunks,
};
use support::{Mosquitto, MqttLlm, Via, serve_via, sim_up_args_with};

async fn up(broker: &Mosquitto) -> MqttLlm {
    MqttLlm::start(&sim_up_args_with(&broker.url(), &["--projects", PROJECTS])).await
}

/// `llama3/deployment/vllm_test_client.py`: QoS 0 requests with every optional parameter, replies on
/// `{p}/assistant_response/{sid}/{clientId}/{requestId}`, history kept by the server (`clear` is local only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_test_client_conversation() {
    vllm_test_client_conversation_via(Via::Mosquitto).await;
}

/// The same client through `mqtt-llm up`'s embedded broker (no broker installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_test_client_conversation_through_the_embedded_broker() {
    vllm_test_client_conversation_via(Via::Embedded).await;
}

async fn vllm_test_client_conversation_via(via: Via) {
    let (_server, port, _broker) = serve_via(via, &["--projects", PROJECTS]).await;
    let mut watch = Watch::start(port, "general/assistant_response/#").await;
    let mut client = VllmTestClient::start(port, "general").await;

    let system = "You are a terse test oracle for compatibility checks.";
    let first = ChatParams {
        temperature: Some(0.7),
        top_p: Some(0.95),
        max_tokens: Some(256),
        system_prompt: Some(system.to_owned()),
    };
    let r1 = Echo::of(&client.ask("hello there", &first).await.expect("no reply in 60 s"));
    assert_eq!(
        (r1.messages, r1.roles.as_str(), r1.system.clone(), r1.user.as_str()),
        (2, "s,u", six_words(system), "hello there")
    );
    let r2 = Echo::of(
        &client
            .ask("second", &ChatParams::default())
            .await
            .expect("no reply in 60 s"),
    );
    assert_eq!(
        (r2.messages, r2.system.clone(), r2.user.as_str()),
        (4, six_words(system), "second")
    );
    // `clear` only empties the local transcript: the server's conversation goes on.
    client.clear();
    let r3 = Echo::of(
        &client
            .ask("after clear", &ChatParams::default())
            .await
            .expect("no reply in 60 s"),
    );
    assert_eq!((r3.messages, r3.user.as_str()), (6, "after clear"));
    assert_eq!(client.transcript.len(), 1);

    let marker = Echo::of(
        &client
            .ask("marker", &ChatParams::default())
            .await
            .expect("no reply in 60 s"),
    );
    assert_eq!((marker.messages, marker.user.as_str()), (8, "marker"));
    assert!(client.extras.is_empty(), "unexpected messages: {:?}", client.extras);
    // Its own two overlapping subscriptions may deliver a reply twice (it dedupes by request id); the watcher,
    // subscribed once, proves the server published each reply exactly once and nothing else.
    let topics: Vec<String> = client.replies.iter().map(|m| m.topic.clone()).collect();
    let seen = watch.until(&topics[3], |t| t.ends_with("user=marker")).await;
    let seen: Vec<String> = seen.into_iter().map(|m| m.topic).collect();
    assert_eq!(seen, topics);
    for d in &client.duplicates {
        assert!(topics.contains(&d.topic), "{d:?}");
    }
}

/// The knowledge-graph client (`kg_llm_new/llm/client.py`): all questions in one fixed session, several in flight
/// at once, each reply found by the request id in its topic's last segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kg_llm_client_questions_share_one_session() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker).await;
    let mut watch = Watch::start(broker.port, "general/assistant_response/#").await;
    let mut kg = KgClient::start(broker.port, "general").await;
    let system = "Extract entities and relations as triples.";
    let questions = ["Who founded the lab?", "Where is it located?", "What does it study?"];
    let mut ids = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        ids.push(kg.send(q, (i == 0).then_some(system)).await);
    }
    assert!(kg.wait_all().await, "a question got no answer within 120 s");
    // One session, answered in the order asked: the history grows by one exchange per question.
    for (i, (id, q)) in ids.iter().zip(questions).enumerate() {
        let e = Echo::of(&kg.answers[id]);
        assert_eq!(
            (e.messages, e.user.as_str(), e.system.clone()),
            (2 + 2 * i, q, six_words(system))
        );
    }
    let marker = kg.send("marker", None).await;
    assert!(kg.wait_all().await);
    assert_eq!(Echo::of(&kg.answers[&marker]).messages, 8);
    assert!(kg.extras.is_empty(), "unexpected messages: {:?}", kg.extras);
    let marker_topic = format!("general/assistant_response/{}/{}/{marker}", kg.session_id, kg.client_id);
    let seen = watch.until(&marker_topic, |t| t.ends_with("user=marker")).await;
    assert_eq!(seen.len(), 4, "{seen:?}");
}

/// prompt-portal's chat (ChatStudio through the backend's `mqtt.py`): `prompt_portal/user_input` at QoS 1 with
/// `sessionId "user{id}-{10hex}"` and a per-request reply topic; the reply matched by request id; a new
/// `systemPrompt` (template switch in ChatStudio) applies from that turn on; the reply fake-streamed in 10-char
/// chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_portal_chat_studio() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker).await;
    let mut backend = PromptPortalBackend::start(broker.port).await;
    let sid = PromptPortalBackend::chat_session(7);
    let coach = "You are a prompt engineering coach for students.";
    let params = ChatParams {
        temperature: Some(0.7),
        top_p: Some(0.9),
        max_tokens: Some(512),
        system_prompt: Some(coach.to_owned()),
    };
    let r1 = backend
        .chat(&sid, "How do I write a good prompt?", &params, PP_CHATBOT_TIMEOUT)
        .await
        .expect("no reply within the chatbot's 90 s");
    assert_eq!(r1.matched_by, MatchedBy::RequestId, "{r1:?}");
    let e1 = Echo::of(&r1.content);
    assert_eq!((e1.messages, e1.system.clone()), (2, six_words(coach)));
    assert_eq!(e1.user, "How do I write a good prompt?");
    let chunks = sse_chunks(&r1.content);
    assert!(chunks.iter().all(|c| c.chars().count() <= 10));
    assert_eq!(chunks.concat(), r1.content);

    let r2 = backend
        .chat(&sid, "Give me an example.", &params, PP_CHAT_TIMEOUT)
        .await
        .expect("no reply within 45 s");
    assert_eq!(r2.matched_by, MatchedBy::RequestId);
    assert_eq!(Echo::of(&r2.content).messages, 4);

    // The user picks another template: the new system prompt travels with the next request.
    let pirate = "Answer every question like a pirate captain.";
    let switched = ChatParams {
        system_prompt: Some(pirate.to_owned()),
        ..params.clone()
    };
    let r3 = backend
        .chat(&sid, "And now?", &switched, PP_CHAT_TIMEOUT)
        .await
        .expect("no reply within 45 s");
    let e3 = Echo::of(&r3.content);
    assert_eq!((e3.messages, e3.system.clone()), (6, six_words(pirate)));

    // Another user's session, interleaved: its own conversation.
    let other = PromptPortalBackend::chat_session(8);
    let o1 = backend
        .chat(&other, "hello from user 8", &params, PP_CHAT_TIMEOUT)
        .await
        .expect("no reply within 45 s");
    assert_eq!(Echo::of(&o1.content).messages, 2);

    let marker = backend
        .chat(&sid, "marker", &switched, PP_CHAT_TIMEOUT)
        .await
        .expect("no reply within 45 s");
    assert_eq!(marker.matched_by, MatchedBy::RequestId);
    assert_eq!(Echo::of(&marker.content).messages, 8);
    assert!(backend.extras.is_empty(), "unexpected replies: {:?}", backend.extras);
    assert!(backend.hint_log.is_empty(), "unexpected hints: {:?}", backend.hint_log);
}

/// prompt-portal's sliders allow `topP: 0` (and temperature 0): greedy decoding, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_portal_chat_top_p_zero() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker).await;
    let mut backend = PromptPortalBackend::start(broker.port).await;
    let sid = PromptPortalBackend::chat_session(9);
    let greedy = ChatParams {
        temperature: Some(0.0),
        top_p: Some(0.0),
        max_tokens: Some(128),
        system_prompt: None,
    };
    let r = backend
        .chat(&sid, "deterministic please", &greedy, PP_CHAT_TIMEOUT)
        .await
        .expect("no reply within 45 s");
    assert!(!r.content.starts_with("Error"), "topP 0 refused: {}", r.content);
    assert_eq!(Echo::of(&r.content).user, "deterministic please");
    let marker = backend
        .chat(&sid, "marker", &ChatParams::default(), PP_CHAT_TIMEOUT)
        .await
        .expect("no reply within 45 s");
    assert_eq!(Echo::of(&marker.content).messages, 4);
    assert!(backend.extras.is_empty(), "unexpected replies: {:?}", backend.extras);
    assert!(backend.hint_log.is_empty(), "unexpected hints: {:?}", backend.hint_log);
}

/// The llama.cpp web chat (`llamacppWeb/static/js/app.js`): `replyTopic={p}/assistant_response/{sid}`, a `project`
/// field, plain-text replies; also on `maze`, whose chat turns stay on `maze/assistant_response/{sid}` (not
/// `maze/hint/...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_web_chat_app() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker).await;
    let mut hints = Watch::start(broker.port, "maze/hint/#").await;
    for project in ["general", "maze"] {
        let mut app = WebChatApp::start(broker.port, project).await;
        let text = |r: Option<Result<serde_json::Value, String>>| match r {
            Some(Err(text)) => text,
            other => panic!("expected a plain-text reply within 60 s, got {other:?}"),
        };
        let system = "You are a friendly llama.cpp demo assistant.";
        let e1 = Echo::of(&text(app.send("hello", Some(system)).await));
        assert_eq!(
            (e1.messages, e1.system.clone(), e1.user.as_str()),
            (2, six_words(system), "hello")
        );
        let e2 = Echo::of(&text(app.send("marker", None).await));
        assert_eq!((e2.messages, e2.user.as_str()), (4, "marker"));
        assert!(
            app.extras.is_empty(),
            "{project}: unexpected messages: {:?}",
            app.extras
        );
    }
    // Chat turns of the maze project publish nothing under maze/hint/.
    assert!(
        hints.link.next(std::time::Duration::ZERO).await.is_none(),
        "a chat turn published a hint"
    );
}

/// prompt-portal's chat publishes its template updates to `maze/template` (its config default) with the chat's
/// `sessionId`: the maze session of that id is told (`{"hint":"Template updated"}` on `maze/hint/{sid}`, which the
/// backend stores as a hint), and the `prompt_portal` conversation is untouched (its prompt travels in every request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_portal_chat_template_update_goes_to_maze() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker).await;
    let mut backend = PromptPortalBackend::start(broker.port).await;
    let sid = PromptPortalBackend::chat_session(11);
    let coach = "You are a prompt engineering coach for students.";
    let params = ChatParams {
        system_prompt: Some(coach.to_owned()),
        ..ChatParams::default()
    };
    for (i, m) in ["one", "two"].into_iter().enumerate() {
        let r = backend
            .chat(&sid, m, &params, PP_CHAT_TIMEOUT)
            .await
            .expect("no reply within 45 s");
        assert_eq!(Echo::of(&r.content).messages, 2 + 2 * i);
    }
    backend.publish_chat_template(&sid, coach).await;
    let (session, notice) = backend
        .next_hint(support::WAIT)
        .await
        .expect("no notice on maze/hint/{sid}");
    assert_eq!(
        (session.as_str(), notice["hint"].as_str()),
        (sid.as_str(), Some("Template updated"))
    );
    let marker = backend
        .chat(&sid, "marker", &params, PP_CHAT_TIMEOUT)
        .await
        .expect("no reply within 45 s");
    let e = Echo::of(&marker.content);
    assert_eq!(
        (e.messages, e.system.clone()),
        (6, six_words(coach)),
        "the chat was reset"
    );
    assert!(backend.extras.is_empty(), "unexpected replies: {:?}", backend.extras);
    assert_eq!(backend.hint_log.len(), 1, "{:?}", backend.hint_log);
}
