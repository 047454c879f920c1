//! `Config::from_raw` on settings built directly (the command line's own tests are in the binary's `cli`).

use std::time::Duration;

use super::*;
use crate::engine::EngineMode;

fn raw(model: &str) -> RawSettings {
    RawSettings {
        engine: RawEngine {
            model: Some(model.to_owned()),
            ..RawEngine::default()
        },
        ..RawSettings::default()
    }
}

#[test]
fn default_raw_settings_build_with_a_model() {
    let c = Config::from_raw(raw("m")).unwrap();
    assert_eq!(c.bridge.sessions.max_history_tokens.get(), DEFAULT_MAX_HISTORY_TOKENS);
    assert_eq!(c.bridge.sessions.idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.http_addr, DEFAULT_HTTP);
    assert_eq!(c.gpu.low_free_bytes, 1 << 30);
    assert!(matches!(c.engine.mode, EngineMode::Launch(_)));
    let err = Config::from_raw(RawSettings::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { flag: "--model", .. }), "{err}");
}

/// The flag `Config::from_raw` refuses `edit`'s settings for, and the problem.
fn refused(edit: impl FnOnce(&mut RawSettings)) -> (&'static str, Problem) {
    let mut r = raw("m");
    edit(&mut r);
    match Config::from_raw(r) {
        Err(ConfigError::Invalid { flag, problem }) => (flag, problem),
        other => panic!("not refused for a flag: {other:?}"),
    }
}

#[test]
fn zero_history_tokens_and_bad_versions_are_refused() {
    let (flag, problem) = refused(|r| r.requests.max_history_tokens = 0);
    assert_eq!(flag, "--max-history-tokens");
    assert!(matches!(problem, Problem::Zero), "{problem}");
    assert_eq!(refused(|r| r.mqtt.mqtt_version = 4).0, "--mqtt-version");
}

#[test]
fn session_owner_user_is_refused_and_client_applies_to_every_project() {
    let (flag, problem) = refused(|r| r.requests.session_owner = RawSessionOwner::User);
    assert_eq!(flag, "--session-owner");
    assert!(problem.to_string().contains("embedded broker"), "{problem}");
    let mut r = raw("m");
    r.requests.session_owner = RawSessionOwner::Client;
    let c = Config::from_raw(r).unwrap();
    assert_eq!(c.projects.session_owner("any"), crate::session::OwnerMode::Client);
    let c = Config::from_raw(raw("m")).unwrap();
    assert_eq!(c.projects.session_owner("any"), crate::session::OwnerMode::None);
}

#[test]
fn raw_settings_deserialize_with_defaults_and_refuse_unknown_keys() {
    let r: RawSettings = toml::from_str("[engine]\nmodel = \"m\"\nengine_grace = \"3s\"\n").unwrap();
    assert_eq!(r.engine.engine_grace, Duration::from_secs(3));
    assert_eq!(r.requests.max_inflight, DEFAULT_MAX_INFLIGHT);
    assert!(toml::from_str::<RawSettings>("[engine]\nmodle = \"m\"\n").is_err());
    // The sections are tables: a flag's name at the top level is an unknown key too.
    assert!(toml::from_str::<RawSettings>("modle = \"m\"\n").is_err());
    assert!(toml::from_str::<RawSettings>("model = \"m\"\n").is_err());
}
