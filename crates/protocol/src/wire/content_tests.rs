//! Tests of the user turn: `images`, content parts and their limits.
use super::*;
use serde_json::json;

/// A 1×1 PNG (70 bytes), as a data URL.
const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn parse(payload: Value) -> Result<ChatRequest, Rejection> {
    parse_limited(payload, &WireLimits::default())
}

fn parse_limited(payload: Value, limits: &WireLimits) -> Result<ChatRequest, Rejection> {
    let project = ProjectName::try_new("general").unwrap();
    let bytes = payload.to_string();
    parse_request(
        &project,
        bytes.as_bytes(),
        &V5Props::default(),
        limits,
        &ReplyPolicy::none(),
    )
}

fn urls(request: &ChatRequest) -> Vec<&str> {
    request.images.iter().map(ImageUrl::as_str).collect()
}

fn error(payload: Value) -> RequestError {
    let rejection = parse(payload).unwrap_err();
    assert_eq!(
        rejection.reply.map(|r| r.topic).as_deref(),
        Some("general/assistant_response/s"),
        "an image error is answered on the session's topic"
    );
    rejection.error
}

#[test]
fn owogpt_images_with_an_empty_message_are_accepted() {
    let request = parse(json!({"sessionId": "s", "message": "", "images": [PNG]})).unwrap();
    assert_eq!(request.message, "");
    assert_eq!(urls(&request), [PNG]);
    // No message at all is fine too when there is an image.
    let request = parse(json!({"sessionId": "s", "images": [PNG, "https://example.com/cat.jpg"]})).unwrap();
    assert_eq!(urls(&request), [PNG, "https://example.com/cat.jpg"]);
    let request = parse(json!({"sessionId": "s", "message": null, "images": [PNG]})).unwrap();
    assert_eq!((request.message.as_str(), request.images.len()), ("", 1));
    let request = parse(json!({"sessionId": "s", "message": " what is this? ", "images": [PNG]})).unwrap();
    assert_eq!(request.message, "what is this?");
}

#[test]
fn openai_content_parts_give_text_and_images() {
    let request = parse(json!({"sessionId": "s", "message": [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        {"image_url": {"url": "http://img.example/b.png"}},
        {"type": "text", "text": "these "},
    ], "images": ["https://example.com/c.webp"]}))
    .unwrap();
    assert_eq!(request.message, "compare\nthese");
    assert_eq!(
        urls(&request),
        [PNG, "http://img.example/b.png", "https://example.com/c.webp"]
    );
    let request = parse(json!({"sessionId": "s", "message": [{"type": "text", "text": "just text"}]})).unwrap();
    assert_eq!((request.message.as_str(), request.images.len()), ("just text", 0));
}

#[test]
fn a_turn_without_text_or_image_is_still_empty() {
    for payload in [
        json!({"sessionId": "s", "message": ""}),
        json!({"sessionId": "s", "message": "  ", "images": []}),
        json!({"sessionId": "s", "message": [], "images": null}),
        json!({"sessionId": "s", "message": [{"type": "text", "text": " "}]}),
    ] {
        assert_eq!(error(payload.clone()), RequestError::EmptyMessage, "{payload}");
    }
    assert_eq!(
        error(json!({"sessionId": "s", "images": []})),
        RequestError::MissingMessage
    );
    assert_eq!(
        error(json!({"sessionId": "s", "message": 5})),
        RequestError::MessageNotString
    );
    assert_eq!(
        error(json!({"sessionId": "s", "message": null, "images": []})),
        RequestError::MessageNotString
    );
}

#[test]
fn bad_image_urls_are_refused() {
    for url in [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "https://",
        "https://exa mple.com/a.png",
        "data:image/png,iVBORw0KGgo=",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "data:text/plain;base64,aGk=",
        "data:image/png;base64,",
        "data:image/png;base64,not base64!",
        "data:image/png;base64,A",
        "cat.png",
    ] {
        let err = error(json!({"sessionId": "s", "message": "hi", "images": [PNG, url]}));
        assert!(
            matches!(err, RequestError::InvalidImage { index: 2, .. }),
            "{url}: {err:?}"
        );
        assert_eq!(err.code(), "invalid_image");
        assert!(
            err.reply_text().starts_with("Error: invalid image 2: "),
            "{}",
            err.reply_text()
        );
    }
    let long = format!("https://example.com/{}", "a".repeat(MAX_IMAGE_URL_BYTES));
    assert!(matches!(
        error(json!({"sessionId": "s", "images": [long]})),
        RequestError::InvalidImage { index: 1, .. }
    ));
}

#[test]
fn malformed_images_and_parts_are_invalid_params() {
    let cases = [
        (json!({"sessionId": "s", "message": "hi", "images": "x"}), "images"),
        (json!({"sessionId": "s", "message": "hi", "images": [1]}), "images"),
        (json!({"sessionId": "s", "message": ["hi"]}), "message"),
        (json!({"sessionId": "s", "message": [{"type": "audio_url"}]}), "message"),
        (json!({"sessionId": "s", "message": [{"text": "no type"}]}), "message"),
        (
            json!({"sessionId": "s", "message": [{"type": "text", "text": 3}]}),
            "message",
        ),
        (
            json!({"sessionId": "s", "message": [{"type": "image_url", "image_url": {}}]}),
            "message",
        ),
    ];
    for (payload, field) in cases {
        match error(payload.clone()) {
            RequestError::InvalidParam { field: got, .. } => assert_eq!(got, field, "{payload}"),
            other => panic!("{payload}: {other:?}"),
        }
    }
}

#[test]
fn too_many_images_are_refused() {
    let five = vec![PNG; 5];
    let err = error(json!({"sessionId": "s", "message": "hi", "images": five}));
    assert_eq!(err, RequestError::TooManyImages { count: 5, limit: 4 });
    assert_eq!(err.code(), "too_many_images");
    assert_eq!(err.reply_text(), "Error: too many images (5, limit 4)");
    // Content parts and `images` count together.
    let parts: Vec<Value> = (0..3)
        .map(|_| json!({"type": "image_url", "image_url": {"url": PNG}}))
        .collect();
    let err = error(json!({"sessionId": "s", "message": parts, "images": [PNG, PNG]}));
    assert_eq!(err, RequestError::TooManyImages { count: 5, limit: 4 });
    assert_eq!(
        urls(&parse(json!({"sessionId": "s", "images": vec![PNG; 4]})).unwrap()).len(),
        4
    );
}

#[test]
fn too_large_images_are_refused_by_their_decoded_size() {
    let limits = WireLimits {
        max_image_bytes: 69,
        ..WireLimits::default()
    };
    let rejection = parse_limited(json!({"sessionId": "s", "images": [PNG]}), &limits).unwrap_err();
    assert_eq!(
        rejection.error,
        RequestError::ImageTooLarge {
            index: 1,
            size: 70,
            limit: 69
        }
    );
    assert_eq!(rejection.error.code(), "image_too_large");
    assert_eq!(
        rejection.error.reply_text(),
        "Error: image 1 too large (70 bytes, limit 69)"
    );
    let limits = WireLimits {
        max_image_bytes: 70,
        ..limits
    };
    assert!(parse_limited(json!({"sessionId": "s", "images": [PNG]}), &limits).is_ok());
}

#[test]
fn plain_text_payloads_carry_no_images() {
    let project = ProjectName::try_new("general").unwrap();
    let request = parse_request(
        &project,
        b"just words",
        &V5Props::default(),
        &WireLimits::default(),
        &ReplyPolicy::none(),
    )
    .unwrap();
    assert!(request.images.is_empty());
}

#[test]
fn image_limit_defaults() {
    let limits = WireLimits::default();
    assert_eq!((limits.max_images, limits.max_image_bytes), (4, 4 * 1024 * 1024));
}
