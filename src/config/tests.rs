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

/// Settings with a user name and an `mqtts://` broker, for the credential checks.
fn secure(edit: impl FnOnce(&mut RawMqtt)) -> RawSettings {
    let mut r = raw("m");
    r.mqtt.broker = Some("mqtts://broker.example".to_owned());
    r.mqtt.mqtt_username = Some("llm".to_owned());
    edit(&mut r.mqtt);
    r
}

fn refused_mqtt(edit: impl FnOnce(&mut RawMqtt)) -> (&'static str, String) {
    match Config::from_raw(secure(edit)) {
        Err(ConfigError::Invalid { flag, problem }) => (flag, problem.to_string()),
        other => panic!("not refused for a flag: {other:?}"),
    }
}

#[test]
fn the_password_comes_from_its_file_and_never_prints() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "s3cret-from-file\n").unwrap();
    let c = Config::from_raw(secure(|m| m.mqtt_password_file = Some(file.clone()))).unwrap();
    let password = c.mqtt.password.as_ref().unwrap();
    assert_eq!(password.expose(), "s3cret-from-file");
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("password: Some(***)"), "{shown}");

    let given = secure(|m| m.mqtt_password = Some(crate::secret::Secret::new("s3cret-given")));
    assert!(!format!("{given:?}").contains("s3cret"));
    let c = Config::from_raw(given).unwrap();
    assert_eq!(c.mqtt.password.unwrap().expose(), "s3cret-given");
}

#[test]
fn password_files_that_give_nothing_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path().join("missing");
    for (path, says) in [(&empty, "is empty"), (&missing, "cannot read")] {
        let (flag, problem) = refused_mqtt(|m| m.mqtt_password_file = Some(path.clone()));
        assert_eq!(flag, "--mqtt-password-file");
        assert!(
            problem.contains(says) && problem.contains(&path.display().to_string()),
            "{problem}"
        );
    }
    let (flag, problem) = refused_mqtt(|m| {
        m.mqtt_password_file = Some(empty.clone());
        m.mqtt_password = Some(crate::secret::Secret::new("p"));
    });
    assert_eq!(flag, "--mqtt-password-file");
    assert!(problem.contains("conflicts with --mqtt-password"), "{problem}");
    let (flag, problem) = refused_mqtt(|m| {
        m.mqtt_username = None;
        m.mqtt_password = Some(crate::secret::Secret::new("p"));
    });
    assert_eq!((flag, problem.as_str()), ("--mqtt-password", "needs --mqtt-username"));
}

/// PEM files of a self-signed certificate and its key, and of a second key: (cert, key, other_key).
fn client_pem_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let files = (dir.join("client.pem"), dir.join("client.key"), dir.join("other.key"));
    std::fs::write(&files.0, cert.pem()).unwrap();
    std::fs::write(&files.1, key.serialize_pem()).unwrap();
    std::fs::write(&files.2, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    files
}

#[test]
fn a_client_certificate_and_its_key_are_loaded_together() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = client_pem_files(dir.path());
    let c = Config::from_raw(secure(|m| {
        m.mqtt_client_cert = Some(cert.clone());
        m.mqtt_client_key = Some(key.clone());
    }))
    .unwrap();
    let identity = c.mqtt.client_identity.expect("loaded");
    assert_eq!(
        format!("{identity:?}"),
        "ClientIdentity { certificates: 1, key: \"***\" }"
    );
    assert!(Config::from_raw(secure(|_| {})).unwrap().mqtt.client_identity.is_none());
}

#[test]
fn client_certificate_mistakes_are_refused_by_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, other_key) = client_pem_files(dir.path());
    let missing = dir.path().join("missing.pem");
    type Edit = Box<dyn FnOnce(&mut RawMqtt)>;
    let with = |c: &std::path::Path, k: &std::path::Path| -> Edit {
        let (c, k) = (c.to_owned(), k.to_owned());
        Box::new(move |m: &mut RawMqtt| {
            m.mqtt_client_cert = Some(c);
            m.mqtt_client_key = Some(k);
        })
    };
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "a certificate alone",
            Box::new({
                let cert = cert.clone();
                move |m: &mut RawMqtt| m.mqtt_client_cert = Some(cert)
            }),
            "--mqtt-client-cert",
            "needs --mqtt-client-key",
        ),
        (
            "a key alone",
            Box::new({
                let key = key.clone();
                move |m: &mut RawMqtt| m.mqtt_client_key = Some(key)
            }),
            "--mqtt-client-key",
            "needs --mqtt-client-cert",
        ),
        (
            "a missing certificate",
            with(&missing, &key),
            "--mqtt-client-cert",
            "cannot read",
        ),
        (
            "a missing key",
            with(&cert, &missing),
            "--mqtt-client-key",
            "cannot read",
        ),
        (
            "a key as certificate",
            with(&key, &key),
            "--mqtt-client-cert",
            "no certificate",
        ),
        (
            "a certificate as key",
            with(&cert, &cert),
            "--mqtt-client-key",
            "no private key",
        ),
        (
            "another certificate's key",
            with(&cert, &other_key),
            "--mqtt-client-key",
            "is not the key of the certificate",
        ),
    ];
    for (name, edit, want_flag, says) in cases {
        let (flag, problem) = refused_mqtt(edit);
        assert_eq!(flag, want_flag, "{name}: {problem}");
        assert!(problem.contains(says), "{name}: {problem}");
    }
    let mut plain = secure(with(&cert, &key));
    plain.mqtt.broker = Some("mqtt://broker.example".to_owned());
    match Config::from_raw(plain) {
        Err(ConfigError::Invalid { flag, problem }) => {
            assert_eq!(flag, "--mqtt-client-cert");
            assert_eq!(problem.to_string(), "only applies to an mqtts:// broker");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn keep_alive_status_prefix_and_queue_wait_are_checked() {
    use std::time::Duration;
    for bad in [
        Duration::from_secs(2),
        Duration::from_millis(5500),
        Duration::from_secs(70_000),
    ] {
        assert_eq!(
            refused(|r| r.mqtt.mqtt_keep_alive = bad).0,
            "--mqtt-keep-alive",
            "{bad:?}"
        );
    }
    for bad in ["", "a/", "/a", "a/+", "a/#", "$SYS"] {
        assert_eq!(
            refused(|r| r.mqtt.status_prefix = bad.into()).0,
            "--status-prefix",
            "{bad:?}"
        );
    }
    assert_eq!(
        refused(|r| r.requests.max_queue_wait = Duration::ZERO).0,
        "--max-queue-wait"
    );
    let mut r = raw("m");
    r.mqtt.mqtt_keep_alive = Duration::from_secs(5);
    r.mqtt.status_prefix = "site/ai".into();
    let c = Config::from_raw(r).unwrap();
    assert_eq!(c.mqtt.keep_alive, Duration::from_secs(5));
    assert_eq!(c.mqtt.status_topic, "site/ai/status");
    assert_eq!(c.bridge.admission.max_queue_wait, Duration::from_secs(30));
}

#[test]
fn legacy_status_is_on_the_first_projects_topic_unless_turned_off() {
    let mut r = raw("m");
    r.mqtt.projects = "maze, general".into();
    let c = Config::from_raw(r).unwrap();
    let legacy = c.mqtt.legacy_status.expect("on by default");
    assert_eq!(legacy.topic, "maze/status");
    assert_eq!(legacy.interval, Duration::from_secs(30));

    let mut r = raw("m");
    r.mqtt.legacy_status = false;
    assert_eq!(Config::from_raw(r).unwrap().mqtt.legacy_status, None);

    assert_eq!(
        refused(|r| r.mqtt.legacy_status_interval = Duration::from_millis(99)).0,
        "--legacy-status-interval"
    );
    assert_eq!(
        refused(|r| {
            r.mqtt.projects = "site".into();
            r.mqtt.status_prefix = "site".into();
        })
        .0,
        "--legacy-status",
        "the two status topics would be one"
    );
}
