//! Model names as operators type them: the short aliases of the original Python server (case-insensitive; each
//! model id is also its own key), and the `hf://` / `modelscope://` prefixes it accepted. Pure: resolution is a
//! table lookup.
//!
//! The original downloaded everything from ModelScope. vLLM downloads from the Hugging Face hub unless
//! `VLLM_USE_MODELSCOPE` is set, and a few of these models live under another organisation there, so every entry
//! names both ids and [`resolve`] picks the one for the hub the engine will use.

/// One model the original server knew by short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Its id on the Hugging Face hub (what `vllm serve` downloads by default).
    pub hf_id: &'static str,
    /// Its id on ModelScope (the original's source), used when `VLLM_USE_MODELSCOPE` is set.
    pub modelscope_id: &'static str,
    /// Lower-case aliases, besides both ids.
    pub aliases: &'static [&'static str],
    /// The checkpoint ships its own model code, which vLLM runs only with `--trust-remote-code`.
    pub trust_remote_code: bool,
}

/// A [`KnownModel`] row: (hf_id, modelscope_id, aliases, trust_remote_code).
const fn known(
    hf_id: &'static str,
    modelscope_id: &'static str,
    aliases: &'static [&'static str],
    trust_remote_code: bool,
) -> KnownModel {
    KnownModel {
        hf_id,
        modelscope_id,
        aliases,
        trust_remote_code,
    }
}

/// The original's table (seed protocol §5). An FP8 checkpoint carries its own quantization config, so no entry
/// implies `--quantization`.
// One row a model: the table reads as the original's.
#[rustfmt::skip]
pub const KNOWN_MODELS: &[KnownModel] = &[
    known("Qwen/QwQ-32B", "Qwen/QwQ-32B", &["qwq-32b", "qwen-qwq-32b", "qwen_qwq_32b"], false),
    known("Qwen/Qwen1.5-14B-Chat", "Qwen/Qwen1.5-14B-Chat", &["qwen1.5-14b-chat", "qwen15-14b-chat", "qwen-1.5-14b-chat"], false),
    known("Qwen/Qwen3-14B", "Qwen/Qwen3-14B", &["qwen3-14b", "qwen-3-14b"], false),
    known("Qwen/Qwen3-VL-4B-Instruct-FP8", "Qwen/Qwen3-VL-4B-Instruct-FP8", &["qwen3-vl-4b-instruct-fp8", "qwen3-vl-4b-instruct", "qwen3-vl-4b"], false),
    known("Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Instruct-2507", &["qwen3-30b-a3b-instruct-2507", "qwen3-30b-a3b", "qwen3-30b"], false),
    known("Qwen/Qwen2-72B-Instruct", "Qwen/Qwen2-72B-Instruct", &["qwen2-72b-instruct", "qwen2-72b", "qwen2_instruct"], false),
    known("THUDM/chatglm3-6b", "ZhipuAI/chatglm3-6b", &["chatglm3-6b", "chatglm3"], true),
    known("internlm/internlm2-chat-7b", "Shanghai_AI_Laboratory/internlm2-chat-7b", &["internlm2-chat-7b", "internlm2-7b", "internlm2"], true),
    known("01-ai/Yi-34B-Chat", "01ai/Yi-34B-Chat", &["yi-34b-chat", "yi34b"], false),
];

/// Which hub the engine downloads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hub {
    HuggingFace,
    ModelScope,
}

/// What `--model` turned out to mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The model argument of `vllm serve`.
    pub id: String,
    /// The alias the operator typed (lower case), when it was one: the default served model name.
    pub alias: Option<String>,
    /// Where the engine downloads it from (ModelScope for a `modelscope://` name or under `VLLM_USE_MODELSCOPE`).
    pub hub: Hub,
    pub trust_remote_code: bool,
}

/// Resolve `--model`. `hub` is where the engine downloads from unless the name says otherwise (`modelscope://`,
/// `hf://`, `huggingface://`). Anything that is not a known alias or id is passed through unchanged (a hub id or
/// a local directory).
pub fn resolve(model: &str, hub: Hub) -> ResolvedModel {
    let model = model.trim();
    let (name, hub) = if let Some(rest) = model.strip_prefix("modelscope://") {
        (rest, Hub::ModelScope)
    } else if let Some(rest) = model
        .strip_prefix("hf://")
        .or_else(|| model.strip_prefix("huggingface://"))
    {
        (rest, Hub::HuggingFace)
    } else {
        (model, hub)
    };
    let key = name.to_ascii_lowercase();
    let known = KNOWN_MODELS.iter().find(|m| {
        m.aliases.contains(&key.as_str())
            || m.hf_id.eq_ignore_ascii_case(&key)
            || m.modelscope_id.eq_ignore_ascii_case(&key)
    });
    match known {
        Some(m) => ResolvedModel {
            id: match hub {
                Hub::HuggingFace => m.hf_id,
                Hub::ModelScope => m.modelscope_id,
            }
            .to_owned(),
            alias: m.aliases.contains(&key.as_str()).then_some(key),
            hub,
            trust_remote_code: m.trust_remote_code,
        },
        None => ResolvedModel {
            id: name.to_owned(),
            alias: None,
            hub,
            trust_remote_code: false,
        },
    }
}

/// Whether vLLM reads `VLLM_USE_MODELSCOPE` as true (it accepts `1` and `true`, any case).
pub fn modelscope_from_env(value: Option<&str>) -> Hub {
    match value.map(str::trim) {
        Some(v) if v == "1" || v.eq_ignore_ascii_case("true") => Hub::ModelScope,
        _ => Hub::HuggingFace,
    }
}

/// Whether a model takes images, judged by its name: a `VL` word (`Qwen3-VL-4B`, `InternVL2`, `Qwen2.5-VL`),
/// `vision`, LLaVA or Pixtral.
pub fn is_vision_model(id: &str) -> bool {
    let name = id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase();
    name.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| {
        let stem = word.trim_end_matches(|c: char| c.is_ascii_digit());
        stem.ends_with("vl") || word.contains("vision") || word.starts_with("llava") || word.starts_with("pixtral")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alias_and_id_resolves_case_insensitively() {
        for m in KNOWN_MODELS {
            for alias in m.aliases {
                let r = resolve(&alias.to_ascii_uppercase(), Hub::HuggingFace);
                assert_eq!(r.id, m.hf_id, "{alias}");
                assert_eq!(r.alias.as_deref(), Some(*alias));
                assert_eq!(resolve(alias, Hub::ModelScope).id, m.modelscope_id);
            }
            for id in [m.hf_id, m.modelscope_id] {
                let r = resolve(&id.to_ascii_lowercase(), Hub::HuggingFace);
                assert_eq!((r.id.as_str(), r.alias), (m.hf_id, None), "{id}");
            }
        }
    }

    #[test]
    fn golden_aliases() {
        for (typed, id, alias) in [
            ("qwen3-vl-4b", "Qwen/Qwen3-VL-4B-Instruct-FP8", Some("qwen3-vl-4b")),
            (
                "Qwen3-VL-4B-Instruct",
                "Qwen/Qwen3-VL-4B-Instruct-FP8",
                Some("qwen3-vl-4b-instruct"),
            ),
            ("QwQ-32B", "Qwen/QwQ-32B", Some("qwq-32b")),
            ("qwen/qwq-32b", "Qwen/QwQ-32B", None),
            ("qwen3-30b", "Qwen/Qwen3-30B-A3B-Instruct-2507", Some("qwen3-30b")),
            ("qwen2_instruct", "Qwen/Qwen2-72B-Instruct", Some("qwen2_instruct")),
            ("chatglm3", "THUDM/chatglm3-6b", Some("chatglm3")),
            ("yi34b", "01-ai/Yi-34B-Chat", Some("yi34b")),
            ("  internlm2 ", "internlm/internlm2-chat-7b", Some("internlm2")),
        ] {
            let r = resolve(typed, Hub::HuggingFace);
            assert_eq!((r.id.as_str(), r.alias.as_deref()), (id, alias), "{typed}");
        }
        assert!(resolve("chatglm3", Hub::HuggingFace).trust_remote_code);
        assert!(!resolve("qwen3-vl-4b", Hub::HuggingFace).trust_remote_code);
    }

    #[test]
    fn unknown_names_and_paths_pass_through() {
        for m in [
            "meta-llama/Llama-3.1-8B-Instruct",
            "/models/qwen3-tiny",
            "./m",
            "Qwen/Qwen3-0.6B",
        ] {
            let r = resolve(m, Hub::HuggingFace);
            assert_eq!((r.id.as_str(), r.alias, r.hub), (m, None, Hub::HuggingFace));
        }
    }

    #[test]
    fn hub_prefixes() {
        let r = resolve("modelscope://chatglm3", Hub::HuggingFace);
        assert_eq!((r.id.as_str(), r.hub), ("ZhipuAI/chatglm3-6b", Hub::ModelScope));
        let r = resolve("hf://org/model", Hub::ModelScope);
        assert_eq!((r.id.as_str(), r.hub), ("org/model", Hub::HuggingFace));
        assert_eq!(modelscope_from_env(Some("True")), Hub::ModelScope);
        assert_eq!(modelscope_from_env(Some("1")), Hub::ModelScope);
        assert_eq!(modelscope_from_env(Some("0")), Hub::HuggingFace);
        assert_eq!(modelscope_from_env(None), Hub::HuggingFace);
    }

    #[test]
    fn vision_models_by_name() {
        for m in [
            "Qwen/Qwen3-VL-4B-Instruct-FP8",
            "Qwen/Qwen2.5-VL-7B-Instruct",
            "OpenGVLab/InternVL2-8B",
            "llava-hf/llava-1.5-7b-hf",
            "mistralai/Pixtral-12B-2409",
            "meta-llama/Llama-3.2-11B-Vision-Instruct",
            "/models/my-vl",
        ] {
            assert!(is_vision_model(m), "{m}");
        }
        for m in [
            "Qwen/Qwen3-14B",
            "Qwen/QwQ-32B",
            "/models/vl-data/qwen3-tiny",
            "devlin/model",
            "THUDM/chatglm3-6b",
        ] {
            assert!(!is_vision_model(m), "{m}");
        }
    }
}
