//! Compatibility suite, OwOGPT: a re-creation of OwOGPT's MQTT backend (`OWO/mqtt_client.py`,
//! `OWO/providers/mqtt_provider.py`; seed-protocol §4) against a real mosquitto, the real `mqtt-llm` and vllm-sim in
//! echo mode: chat on `prompt_portal`, a persona change through `prompt_portal/template`, a session delete through
//! `prompt_portal/delete_session/{sid}`, and image messages. Under its wildcard `prompt_portal/assistant_response/#`
//! it must get exactly one reply per request and nothing else (no notices, no heartbeat answers): after the
//! expected replies a marker request's reply must be the next message there.

mod support;

use support::compat::{
    ChatParams, Echo, IMAGE_PLACEHOLDER, OwoGpt, PNG_DATA_URL, PROJECTS, VISION_UP_ARGS, Watch, chat_notice_topic,
    six_words,
};
use support::{Mosquitto, MqttLlm, Via, serve_via, sim_up_args_with};

async fn up(broker: &Mosquitto, extra: &[&str]) -> MqttLlm {
    let args = [&["--projects", PROJECTS][..], extra].concat();
    MqttLlm::start(&sim_up_args_with(&broker.url(), &args)).await
}

async fn ask(owo: &mut OwoGpt, sid: &str, message: &str, params: &ChatParams, images: &[&str]) -> String {
    let reply = owo
        .chat(sid, message, params, images)
        .await
        .expect("no reply within OwOGPT's 45 s");
    // Plain text is taken as {"response": text}.
    assert_eq!(
        reply.raw["response"].as_str(),
        Some(reply.content.as_str()),
        "{reply:?}"
    );
    reply.content
}

fn persona(p: &str) -> ChatParams {
    ChatParams {
        temperature: Some(0.8),
        top_p: Some(0.9),
        max_tokens: Some(512),
        system_prompt: Some(p.to_owned()),
    }
}

/// Chat with a persona, switch persona (`prompt_portal/template`, `reset: true`), delete the conversation
/// (`prompt_portal/delete_session/{sid}`): the server honours both, and nothing but replies reaches
/// `prompt_portal/assistant_response/#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owogpt_chat_persona_change_and_delete() {
    owogpt_chat_persona_change_and_delete_via(Via::Mosquitto).await;
}

/// The same client through `mqtt-llm up`'s embedded broker (no broker installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owogpt_chat_persona_change_and_delete_through_the_embedded_broker() {
    owogpt_chat_persona_change_and_delete_via(Via::Embedded).await;
}

async fn owogpt_chat_persona_change_and_delete_via(via: Via) {
    let (_server, port, _broker) = serve_via(via, &["--projects", PROJECTS]).await;
    let sid = OwoGpt::new_session_key();
    let mut notices = Watch::start(port, &chat_notice_topic("prompt_portal", &sid)).await;
    let mut owo = OwoGpt::start(port).await;
    owo.heartbeat().await;

    let cat = "You are OwO, a cheerful cat who says nya.";
    let e1 = Echo::of(&ask(&mut owo, &sid, "hi!", &persona(cat), &[]).await);
    assert_eq!(
        (e1.messages, e1.system.clone(), e1.user.as_str()),
        (2, six_words(cat), "hi!")
    );
    let e2 = Echo::of(&ask(&mut owo, &sid, "how are you?", &persona(cat), &[]).await);
    assert_eq!(e2.messages, 4);

    // Persona change: the template replaces the system prompt and, with reset, the history.
    let dog = "You are Rex, a grumpy old dog.";
    owo.update_template(&sid, dog, true).await;
    let notice = notices.next().await;
    assert_eq!(
        notice.json_object().and_then(|o| o.get("hint").cloned()),
        Some("Template updated".into()),
        "{notice:?}"
    );
    let no_prompt = ChatParams::default();
    let e3 = Echo::of(&ask(&mut owo, &sid, "who are you?", &no_prompt, &[]).await);
    assert_eq!(
        (e3.messages, e3.roles.as_str(), e3.system.clone()),
        (2, "s,u", six_words(dog)),
        "the template (with reset) was not honoured"
    );
    let e4 = Echo::of(&ask(&mut owo, &sid, "and then?", &no_prompt, &[]).await);
    assert_eq!((e4.messages, e4.system.clone()), (4, six_words(dog)));

    // Deleting the conversation forgets it on the server. OwOGPT waits for nothing after the delete: the server
    // must apply it before the next request the same client published after it.
    owo.delete_session(&sid).await;
    let e5 = Echo::of(&ask(&mut owo, &sid, "fresh start", &no_prompt, &[]).await);
    assert_eq!((e5.messages, e5.user.as_str()), (2, "fresh start"));

    let marker = Echo::of(&ask(&mut owo, &sid, "marker", &no_prompt, &[]).await);
    assert_eq!((marker.messages, marker.user.as_str()), (4, "marker"));
    assert!(
        owo.unresolved.is_empty(),
        "unexpected messages under prompt_portal/assistant_response/#: {:?}",
        owo.unresolved
    );
}

/// An image from OwOGPT's chat (`images: [data URL]`, empty `message`) reaches a vision model as an image part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owogpt_image_message_to_a_vision_model() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker, VISION_UP_ARGS).await;
    let mut owo = OwoGpt::start(broker.port).await;
    let sid = OwoGpt::new_session_key();
    let params = persona("You are OwO, a cheerful cat who says nya.");
    let images_seen = |text: &str| text.matches(IMAGE_PLACEHOLDER).count() + usize::from(text.contains("images=1"));

    let only_image = ask(&mut owo, &sid, "", &params, &[PNG_DATA_URL]).await;
    assert!(!only_image.starts_with("Error"), "{only_image}");
    let e1 = Echo::of(&only_image);
    assert_eq!(e1.messages, 2, "{only_image}");
    assert_eq!(
        images_seen(&only_image),
        1,
        "the engine did not get one image: {only_image}"
    );

    let captioned = ask(&mut owo, &sid, "describe this", &params, &[PNG_DATA_URL]).await;
    let e2 = Echo::of(&captioned);
    assert_eq!(e2.messages, 4, "{captioned}");
    assert!(e2.user.contains("describe this"), "{captioned}");
    assert_eq!(images_seen(&captioned), 1, "{captioned}");

    let marker = Echo::of(&ask(&mut owo, &sid, "marker", &params, &[]).await);
    assert_eq!((marker.messages, marker.user.as_str()), (6, "marker"));
    assert!(owo.unresolved.is_empty(), "unexpected messages: {:?}", owo.unresolved);
}

/// The same image message to a text-only model: one clear `Error:` reply naming the image, not the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owogpt_image_message_to_a_text_only_model_is_a_clear_error() {
    let broker = Mosquitto::start().await;
    let _server = up(&broker, &[]).await;
    let mut owo = OwoGpt::start(broker.port).await;
    let sid = OwoGpt::new_session_key();
    let params = persona("You are OwO, a cheerful cat who says nya.");
    let refused = ask(&mut owo, &sid, "", &params, &[PNG_DATA_URL]).await;
    assert!(refused.starts_with("Error: "), "{refused}");
    assert_ne!(refused, "Error: 'message' is empty", "the image was ignored");
    assert!(refused.to_lowercase().contains("image"), "{refused}");

    // The refused turn is not in the history.
    let marker = Echo::of(&ask(&mut owo, &sid, "marker", &params, &[]).await);
    assert_eq!((marker.messages, marker.user.as_str()), (2, "marker"));
    assert!(owo.unresolved.is_empty(), "unexpected messages: {:?}", owo.unresolved);
}
