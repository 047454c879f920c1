//! Images end to end: a real mosquitto, the real `mqtt-llm` binary launching `vllm-sim` in echo mode (the reply
//! says what the engine saw: `images=N` and `<image>` where an image part was), and an MQTT 5 test client.

mod support;

use serde_json::{Value, json};
use support::Received;

/// A 1×1 PNG, as OwOGPT sends a picture: a data URL.
const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
const SYSTEM: &str = "system=You are a helpful AI assistant.";

type Harness = support::Stack;

impl Harness {
    async fn start(extra: &[&str]) -> Self {
        Self::launch(extra, &["general/assistant_response/#", "general/assistant_stream/#"]).await
    }

    /// A vision model: the sim reads images (`sim-model` alone is text-only).
    async fn vision() -> Self {
        Self::start(&["--engine-arg=--sim-multimodal=on"]).await
    }

    /// Send `body` in `session` and return the reply and the stream frames that came before it.
    async fn ask(&mut self, session: &str, mut body: Value) -> (String, Vec<Value>) {
        body["sessionId"] = json!(session);
        self.client.publish_json("general/user_input", body).await;
        let mut others: Vec<Received> = Vec::new();
        let reply = self
            .client
            .recv_on(&format!("general/assistant_response/{session}"), &mut others)
            .await;
        let frames = others.iter().map(Received::json).collect();
        (reply.text(), frames)
    }

    async fn say(&mut self, session: &str, body: Value) -> String {
        self.ask(session, body).await.0
    }
}

/// The prompt tokens the engine reported, from the `done` stream frame.
fn prompt_tokens(frames: &[Value]) -> u64 {
    let done = frames.iter().find(|f| f["done"] == true).expect("a done frame");
    done["usage"]["promptTokens"].as_u64().expect("promptTokens")
}

#[tokio::test]
async fn an_owogpt_image_reaches_the_engine_and_history_keeps_a_placeholder() {
    let mut h = Harness::vision().await;
    // OwOGPT: an empty message and the picture as a data URL.
    let reply = h.say("look", json!({"message": "", "images": [PNG]})).await;
    assert_eq!(reply, format!("messages=2 roles=s,u {SYSTEM} images=1 user=<image>"));

    // The next turn sees the first one's text and its placeholder, not the image: no image part reaches the engine.
    let reply = h.say("look", json!({"message": "and now?"})).await;
    assert_eq!(reply, format!("messages=4 roles=s,u,a,u {SYSTEM} user=and now?"));

    // OpenAI content parts: the image comes first, then the text.
    let parts = json!([{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]);
    let reply = h.say("parts", json!({"message": parts})).await;
    assert_eq!(
        reply,
        format!("messages=2 roles=s,u {SYSTEM} images=1 user=<image>what is this?")
    );
}

#[tokio::test]
async fn the_image_bytes_never_enter_the_history() {
    let mut h = Harness::vision().await;
    // 2000 base64 characters that the simulated tokenizer counts as 2000 tokens, were they kept as text.
    let big = format!("data:image/png;base64,{}", "++++".repeat(500));
    let (reply, frames) = h
        .ask("bytes", json!({"message": "describe", "images": [big], "stream": true}))
        .await;
    assert!(reply.ends_with("images=1 user=<image>describe"), "{reply}");
    let with_image = prompt_tokens(&frames);
    let (reply, frames) = h.ask("bytes", json!({"message": "more", "stream": true})).await;
    assert!(
        reply.starts_with("messages=4 ") && !reply.contains("images="),
        "{reply}"
    );
    let next = prompt_tokens(&frames);
    assert!(
        next < with_image && next < 400,
        "the second prompt holds '[image] describe', not the image ({with_image} then {next} tokens)"
    );
}

#[tokio::test]
async fn a_text_only_model_answers_an_image_with_a_clear_error() {
    let mut h = Harness::start(&[]).await;
    let reply = h.say("t", json!({"message": "what is this?", "images": [PNG]})).await;
    assert_eq!(reply, "Error: this model does not read images");
    // Nothing was stored: the next turn starts the conversation.
    let reply = h.say("t", json!({"message": "hello"})).await;
    assert_eq!(reply, format!("messages=2 roles=s,u {SYSTEM} user=hello"));
}

#[tokio::test]
async fn image_limits_and_bad_urls_give_clear_errors() {
    let mut h = Harness::start(&["--engine-arg=--sim-multimodal=on", "--max-image-bytes", "69"]).await;
    // The PNG is 70 bytes once decoded.
    let reply = h.say("l", json!({"message": "hi", "images": [PNG]})).await;
    assert_eq!(reply, "Error: image 1 too large (70 bytes, limit 69)");
    // A payload over --max-payload-bytes is refused before any image is looked at.
    let huge = format!("data:image/png;base64,{}", "A".repeat(70_000));
    let reply = h.say("l", json!({"message": "hi", "images": [huge]})).await;
    assert!(reply.starts_with("Error: request too large ("), "{reply}");
    // Counted before any image is looked at.
    let reply = h.say("l", json!({"message": "hi", "images": vec![PNG; 5]})).await;
    assert_eq!(reply, "Error: too many images (5, limit 4)");
    let tiny = "data:image/gif;base64,R0lGODlhAQABAAAAACw=";
    let reply = h
        .say("l", json!({"message": "hi", "images": [tiny, "file:///etc/passwd"]}))
        .await;
    assert_eq!(
        reply,
        "Error: invalid image 2: must be a data:image/...;base64 URL or an http(s) URL"
    );
    let reply = h.say("l", json!({"message": "", "images": []})).await;
    assert_eq!(reply, "Error: 'message' is empty");
    // Four small ones are fine.
    let reply = h.say("l", json!({"message": "hi", "images": vec![tiny; 4]})).await;
    assert!(
        reply.ends_with("images=4 user=<image><image><image><image>hi"),
        "{reply}"
    );
}
