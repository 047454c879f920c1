//! Redaction of secrets from what mqtt-llm shows of the engine: its command line (the `engine launched:` line,
//! logs, the engine log's header, `--dry-run`), its environment (`--dry-run`) and its own output (vLLM logs its
//! `non-default args`, `--api-key` included). Pure functions; the rule for a secret is [`is_secret_name`].

use std::borrow::Cow;

pub use crate::secret::REDACTED;

/// A secret shorter than this is not masked in the engine's output: masking every `1` or `ab` would garble the
/// log, and a key that short protects nothing anyway. Command lines and environments hide every secret value.
pub const MIN_MASKED_LEN: usize = 4;

/// Whether a variable or flag name looks like it holds a secret: one of its words (split at `-`, `_` and `.`,
/// any case) is or ends with TOKEN, KEY, SECRET, PASSWORD or PASSWD. So `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`,
/// `VLLM_API_KEY`, `AWS_SECRET_ACCESS_KEY`, `--api-key` and `--hf-token` are secret; `--max-num-batched-tokens`,
/// `--tokenizer`, `TOKENIZERS_PARALLELISM` and `--ssl-keyfile` (a path) are not.
pub fn is_secret_name(name: &str) -> bool {
    const SECRET_WORDS: [&str; 5] = ["TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD"];
    name.split(['-', '_', '.']).any(|word| {
        let word = word.to_ascii_uppercase();
        SECRET_WORDS.iter().any(|secret| word.ends_with(secret))
    })
}

/// `args` with the values of secret flags replaced by [`REDACTED`], and those values. A secret flag (a word
/// starting with `-` whose name [`is_secret_name`]) hides its `=VALUE`, or else every following word up to the
/// next one starting with `-` (vLLM's `--api-key` takes several keys).
pub fn redact_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut shown, mut secrets) = (Vec::with_capacity(args.len()), Vec::new());
    let mut hiding = false;
    for arg in args {
        if arg.starts_with('-') {
            hiding = false;
            let (name, value) = arg.split_once('=').map_or((arg.as_str(), None), |(n, v)| (n, Some(v)));
            if is_secret_name(name.trim_start_matches('-')) {
                match value {
                    Some(value) => {
                        shown.push(format!("{name}={REDACTED}"));
                        secrets.push(value.to_owned());
                        continue;
                    }
                    None => hiding = true,
                }
            }
            shown.push(arg.clone());
        } else if hiding {
            shown.push(REDACTED.to_owned());
            secrets.push(arg.clone());
        } else {
            shown.push(arg.clone());
        }
    }
    (shown, secrets)
}

/// The value of variable `name` as shown: [`REDACTED`] when the name [`is_secret_name`].
pub fn env_value_shown<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret_name(name) { REDACTED } else { value }
}

/// `line` with every occurrence of each secret (of at least [`MIN_MASKED_LEN`] bytes) replaced by [`REDACTED`].
pub fn mask<'a>(line: &'a str, secrets: &[String]) -> Cow<'a, str> {
    let mut line = Cow::Borrowed(line);
    for secret in secrets.iter().filter(|s| s.len() >= MIN_MASKED_LEN) {
        if line.contains(secret.as_str()) {
            line = Cow::Owned(line.replace(secret.as_str(), REDACTED));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn secret_names() {
        for name in [
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "VLLM_API_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "MQTT_LLM_MQTT_PASSWORD",
            "api-key",
            "hf-token",
            "apikey",
            "db.passwd",
            "Client_Secret",
            // A path, but cautious is cheap: no child gets it anyway.
            "MQTT_LLM_MQTT_PASSWORD_FILE",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "max-num-batched-tokens",
            "tokenizer",
            "TOKENIZERS_PARALLELISM",
            "ssl-keyfile",
            "CUDA_VISIBLE_DEVICES",
            "kv-cache-dtype",
            "",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn secret_flag_values_are_hidden_in_both_spellings() {
        let cases = [
            (
                "serve m --api-key k1 --port 1",
                "serve m --api-key *** --port 1",
                vec!["k1"],
            ),
            (
                "serve m --api-key=k1 --port 1",
                "serve m --api-key=*** --port 1",
                vec!["k1"],
            ),
            ("serve m --api-key k1 k2", "serve m --api-key *** ***", vec!["k1", "k2"]),
            (
                "serve m --hf-token=t --tokenizer tk",
                "serve m --hf-token=*** --tokenizer tk",
                vec!["t"],
            ),
            (
                "serve m --max-num-batched-tokens 8192 --ssl-keyfile /k.pem",
                "serve m --max-num-batched-tokens 8192 --ssl-keyfile /k.pem",
                vec![],
            ),
            // The guard's command line holds the engine's after `--`.
            (
                "__engine-guard --parent 1 -- /v serve m --api-key k",
                "__engine-guard --parent 1 -- /v serve m --api-key ***",
                vec!["k"],
            ),
        ];
        for (given, shown, secrets) in cases {
            let (got, found) = redact_args(&words(given));
            assert_eq!(got.join(" "), shown, "{given}");
            assert_eq!(found, secrets, "{given}");
        }
    }

    #[test]
    fn env_values_of_secret_names_are_hidden() {
        assert_eq!(env_value_shown("HF_TOKEN", "hf_abc"), REDACTED);
        assert_eq!(env_value_shown("CUDA_VISIBLE_DEVICES", "0,1"), "0,1");
    }

    #[test]
    fn masking_replaces_every_occurrence_of_long_enough_secrets() {
        let secrets = vec!["sk-123456".to_owned(), "ab".to_owned()];
        let line = "non-default args: {'api_key': ['sk-123456'], 'x': 'sk-123456 ab'}";
        assert_eq!(
            mask(line, &secrets),
            "non-default args: {'api_key': ['***'], 'x': '*** ab'}"
        );
        assert!(matches!(mask("nothing here", &secrets), Cow::Borrowed(_)));
    }
}
