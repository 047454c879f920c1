//! Black-box tests of image content parts (`vllm-contract.md` §5): accepted by a vision model and counted as image
//! tokens, refused by a text-only one with vLLM's error, limited by `--limit-mm-per-prompt`.

#[path = "support/sim.rs"]
mod sim_support;

use serde_json::{Value, json};
use sim_support::SimProcess;

const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
/// `vllm_sim::openai::IMAGE_TOKENS` plus `<|vision_start|>` and `<|vision_end|>`.
const TOKENS_PER_IMAGE: u64 = 256 + 2;

fn image_part() -> Value {
    json!({"type": "image_url", "image_url": {"url": PNG}})
}

fn ask(parts: Value) -> Value {
    json!({"messages": [{"role": "user", "content": parts}]})
}

async fn post(sim: &SimProcess, body: &Value) -> (u16, Value) {
    let r = sim.post("/v1/chat/completions", body).await;
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn a_vision_model_reads_image_parts_and_counts_their_tokens() {
    let sim = SimProcess::start("Qwen/Qwen3-VL-4B-Instruct", &["--sim-reply", "echo"]).await;
    let text_only = ask(json!([{"type": "text", "text": "what is this?"}]));
    let (status, plain) = post(&sim, &text_only).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(
        plain["choices"][0]["message"]["content"],
        "messages=1 roles=u system=none user=what is this?"
    );
    let with_image = ask(json!([image_part(), {"type": "text", "text": "what is this?"}]));
    let (status, v) = post(&sim, &with_image).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "messages=1 roles=u system=none images=1 user=<image>what is this?"
    );
    let extra = v["usage"]["prompt_tokens"].as_u64().unwrap() - plain["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        extra, TOKENS_PER_IMAGE,
        "the image's tokens are prompt tokens (and prefill work)"
    );
    // `/tokenize` renders the same prompt.
    let r: Value = sim
        .post("/tokenize", &json!({"messages": with_image["messages"]}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["count"], v["usage"]["prompt_tokens"]);
    // A part without `type` but with `image_url` is an image too.
    let (status, v) = post(&sim, &ask(json!([{"image_url": {"url": PNG}}]))).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("images=1 user=<image>"),
        "{v}"
    );
}

#[tokio::test]
async fn a_text_only_model_refuses_images_like_vllm() {
    let sim = SimProcess::start("Qwen/Qwen3-0.6B", &[]).await;
    let (status, v) = post(&sim, &ask(json!([image_part(), {"type": "text", "text": "hi"}]))).await;
    assert_eq!(status, 400);
    assert_eq!(
        v,
        json!({"error": {"message": "Qwen/Qwen3-0.6B is not a multimodal model", "type": "BadRequestError", "param": null, "code": 400}})
    );
    // Text parts alone are fine.
    let (status, _) = post(&sim, &ask(json!([{"type": "text", "text": "hi"}]))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sim_multimodal_overrides_the_model_id() {
    let on = SimProcess::start("demo", &["--sim-multimodal", "on"]).await;
    assert_eq!(post(&on, &ask(json!([image_part()]))).await.0, 200);
    let off = SimProcess::start("Qwen/Qwen3-VL-4B-Instruct", &["--sim-multimodal=off"]).await;
    assert_eq!(post(&off, &ask(json!([image_part()]))).await.0, 400);
}

#[tokio::test]
async fn limit_mm_per_prompt_caps_the_images() {
    let sim = SimProcess::start(
        "Qwen/Qwen3-VL-4B-Instruct",
        &["--limit-mm-per-prompt", r#"{"image":2}"#],
    )
    .await;
    assert_eq!(post(&sim, &ask(json!([image_part(), image_part()]))).await.0, 200);
    let (status, v) = post(&sim, &ask(json!([image_part(), image_part(), image_part()]))).await;
    assert_eq!(status, 400);
    assert_eq!(
        v,
        json!({"error": {"message": "At most 2 image(s) may be provided in one prompt.", "type": "BadRequestError", "param": "image", "code": 400}})
    );
}
