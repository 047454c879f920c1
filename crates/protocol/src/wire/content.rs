//! The user turn of a request: its text and its images.
//!
//! Two input forms, which may be combined:
//! - `message` as a string plus `images: ["data:image/png;base64,...", "https://..."]`, as OwOGPT sends them (with
//!   an empty `message` when the user sent only a picture);
//! - `message` as an array of OpenAI content parts: `{"type":"text","text":...}` and
//!   `{"type":"image_url","image_url":{"url":...}}` (a part without `type` but with `image_url` is an image too, as
//!   vLLM accepts it).
//!
//! Text parts are joined with `\n` (as vLLM joins them); images keep their order, content-part images first, then
//! those of `images`. A turn needs text or at least one image. Each image URL is validated here, so a bad one is
//! refused with a clear error before the engine fetches or decodes anything: a base64 data URL of a PNG, JPEG, WebP
//! or GIF, at most [`WireLimits::max_image_bytes`] once decoded, or an `http(s)` URL; at most
//! [`WireLimits::max_images`] per request.

use serde_json::{Map, Value};

use super::fields::message_from;
use super::{RequestError, WireLimits, invalid};

/// Longest `http(s)` image URL accepted, in bytes.
pub const MAX_IMAGE_URL_BYTES: usize = 2048;
/// Image types a data URL may carry (what Qwen-VL's image processor reads).
const DATA_URL_TYPES: [&str; 4] = ["png", "jpeg", "webp", "gif"];

/// One image of a request, validated: a `data:image/...;base64,` URL or an `http(s)` URL, passed to the engine as
/// an `image_url` content part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUrl(String);

impl ImageUrl {
    /// Validate one image URL; `index` (1-based) names it in the error. `max_bytes` bounds a data URL's decoded
    /// bytes.
    pub fn try_new(url: &str, index: usize, max_bytes: usize) -> Result<Self, RequestError> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("data:") {
            let size = data_url_bytes(rest).ok_or(RequestError::InvalidImage {
                index,
                reason: "a data URL must be data:image/(png|jpeg|webp|gif);base64,<base64>",
            })?;
            if size > max_bytes {
                return Err(RequestError::ImageTooLarge {
                    index,
                    size,
                    limit: max_bytes,
                });
            }
            return Ok(Self(url.to_owned()));
        }
        if is_web_url(url) {
            return Ok(Self(url.to_owned()));
        }
        Err(RequestError::InvalidImage {
            index,
            reason: "must be a data:image/...;base64 URL or an http(s) URL",
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The decoded size of `image/<type>;base64,<data>` (the part after `data:`), or `None` when it is not a base64
/// image of an accepted type.
fn data_url_bytes(rest: &str) -> Option<usize> {
    let (header, data) = rest.split_once(',')?;
    let kind = header.strip_suffix(";base64")?.strip_prefix("image/")?;
    if !DATA_URL_TYPES.iter().any(|t| kind.eq_ignore_ascii_case(t)) {
        return None;
    }
    let body = data.trim_end_matches('=');
    let padding = data.len() - body.len();
    let valid = !body.is_empty()
        && padding <= 2
        && body.len() % 4 != 1
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    valid.then_some(body.len() * 3 / 4)
}

/// `http://host...` or `https://host...`: a non-empty host, no whitespace or control characters, bounded length.
fn is_web_url(url: &str) -> bool {
    let lower = url.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return false;
    };
    let host_ends = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    url.len() <= MAX_IMAGE_URL_BYTES && host_ends > 0 && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The user turn: `message` (string or content parts) and `images`. Text is trimmed and may be empty only when
/// there is an image.
pub(super) fn user_turn_from(
    fields: &Map<String, Value>,
    limits: &WireLimits,
) -> Result<(String, Vec<ImageUrl>), RequestError> {
    let mut urls: Vec<&str> = Vec::new();
    let text = match fields.get("message") {
        Some(Value::Array(parts)) => Some(parts_text(parts, &mut urls)?),
        Some(Value::Null) if images_given(fields.get("images")) => None,
        other => match message_from(other) {
            Ok(text) => Some(text),
            Err(e @ (RequestError::EmptyMessage | RequestError::MissingMessage)) => {
                if images_given(fields.get("images")) {
                    None
                } else {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        },
    };
    match fields.get("images") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(url) => urls.push(url),
                    _ => return Err(invalid("images", "must be an array of image URLs")),
                }
            }
        }
        Some(_) => return Err(invalid("images", "must be an array of image URLs")),
    }
    if urls.len() > limits.max_images {
        return Err(RequestError::TooManyImages {
            count: urls.len(),
            limit: limits.max_images,
        });
    }
    let images = urls
        .iter()
        .enumerate()
        .map(|(i, url)| ImageUrl::try_new(url, i + 1, limits.max_image_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let text = text.unwrap_or_default();
    if text.is_empty() && images.is_empty() {
        return Err(RequestError::EmptyMessage);
    }
    Ok((text, images))
}

/// Whether `images` is a non-empty array (its items are checked later).
fn images_given(images: Option<&Value>) -> bool {
    matches!(images, Some(Value::Array(items)) if !items.is_empty())
}

/// The text of OpenAI content parts (text parts joined with `\n`, trimmed); image URLs are appended to `urls`.
fn parts_text<'a>(parts: &'a [Value], urls: &mut Vec<&'a str>) -> Result<String, RequestError> {
    let bad = |reason: &str| invalid("message", reason.to_owned());
    let mut texts: Vec<&str> = Vec::new();
    for part in parts {
        let Value::Object(part) = part else {
            return Err(bad("content parts must be objects"));
        };
        let kind = match part.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            None | Some(Value::Null) if part.contains_key("image_url") => "image_url",
            _ => return Err(bad("a content part needs a 'type'")),
        };
        match kind {
            "text" => match part.get("text") {
                Some(Value::String(text)) => texts.push(text),
                _ => return Err(bad("a text part needs a string 'text'")),
            },
            "image_url" => match part.get("image_url") {
                Some(Value::String(url)) => urls.push(url),
                Some(Value::Object(image)) => match image.get("url") {
                    Some(Value::String(url)) => urls.push(url),
                    _ => return Err(bad("an image_url part needs 'image_url': {'url': ...}")),
                },
                _ => return Err(bad("an image_url part needs 'image_url': {'url': ...}")),
            },
            _ => return Err(bad("content part types are 'text' and 'image_url'")),
        }
    }
    Ok(texts.join("\n").trim().to_owned())
}
