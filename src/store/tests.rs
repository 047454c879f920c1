use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn session(project: &str, session: &str, turns: usize) -> StoredSession {
    StoredSession {
        project: project.to_owned(),
        session: session.to_owned(),
        owner: StoredOwner::Client(format!("client-of-{session}")),
        system_override: (turns % 2 == 1).then(|| format!("be brief, {session}")),
        turns: (0..turns)
            .map(|i| StoredTurn {
                user: format!("question {i} from {session}"),
                assistant: format!("answer {i} to {session}"),
                tokens: 10 + i as u32,
            })
            .collect(),
        context_tokens: 100 + turns as u32,
        last_used_unix_ms: 1_764_000_000_000 + turns as u64,
    }
}

fn sorted(mut sessions: Vec<StoredSession>) -> Vec<StoredSession> {
    sessions.sort_by(|a, b| (&a.project, &a.session).cmp(&(&b.project, &b.session)));
    sessions
}

fn keys(recovered: &Recovered) -> Vec<(String, String)> {
    let mut keys: Vec<_> = recovered
        .sessions
        .iter()
        .map(|s| (s.project.clone(), s.session.clone()))
        .collect();
    keys.sort();
    keys
}

/// The batch the crash test writes (in the child) and expects (in the parent).
fn sample_batch() -> Batch {
    Batch {
        upserts: vec![
            session("chat", "s1", 3),
            session("chat", "s2", 0),
            session("tools", "with\0nul", 1),
            session("", "empty project", 2),
        ],
        templates: vec![("chat".to_owned(), Some("You are terse.".to_owned()))],
        ..Batch::default()
    }
}

fn open(dir: &Path) -> (Store, Recovered) {
    match Store::open(dir) {
        Ok(opened) => opened,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

#[test]
fn round_trip_through_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (store, recovered) = open(&dir);
    assert!(recovered.sessions.is_empty() && recovered.templates.is_empty());
    assert_eq!(store.path(), Store::file_in(&dir));
    assert_eq!(Store::file_in(&dir), dir.join("sessions.redb"));

    let mut batch = sample_batch();
    batch
        .templates
        .push(("tools".to_owned(), Some("Use the tools.".to_owned())));
    let stats = store.write(&batch).unwrap();
    assert_eq!(stats.sessions_written, 4);
    assert_eq!(stats.deleted, 0);
    assert!(stats.bytes > 0);
    drop(store);

    let (_store, recovered) = open(&dir);
    assert_eq!(sorted(recovered.sessions), sorted(batch.upserts.clone()));
    let mut templates = recovered.templates;
    templates.sort();
    assert_eq!(
        templates,
        vec![
            ("chat".to_owned(), "You are terse.".to_owned()),
            ("tools".to_owned(), "Use the tools.".to_owned())
        ]
    );
}

#[test]
fn empty_batch_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    assert!(Batch::default().is_empty());
    assert!(!sample_batch().is_empty());
    let stats = store.write(&Batch::default()).unwrap();
    assert_eq!(
        stats,
        WriteStats {
            sessions_written: 0,
            deleted: 0,
            bytes: 0
        }
    );
}

#[test]
fn rewrite_replaces_and_deletes_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let mut all = Vec::new();
    for project in ["a", "ab", "b"] {
        for s in ["1", "2"] {
            all.push(session(project, s, 1));
        }
    }
    // "a" + "b\0..." style confusions: a session of project "a" whose name starts like project "ab"'s.
    all.push(session("a", "b1", 1));
    store
        .write(&Batch {
            upserts: all,
            ..Batch::default()
        })
        .unwrap();

    // A rewrite replaces the whole record.
    let longer = session("a", "1", 5);
    store
        .write(&Batch {
            upserts: vec![longer.clone()],
            ..Batch::default()
        })
        .unwrap();

    // Deletes: one present, one missing (fine, not counted).
    let stats = store
        .write(&Batch {
            deletes: vec![("b".to_owned(), "2".to_owned()), ("b".to_owned(), "missing".to_owned())],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(stats.deleted, 1);

    // A project-wide delete of "a" keeps "ab"; a session of "a" upserted in the same batch survives (the project
    // delete runs first), and one both upserted and deleted ends up deleted.
    let stats = store
        .write(&Batch {
            delete_projects: vec!["a".to_owned(), "nothing-here".to_owned()],
            upserts: vec![session("a", "new", 2), session("b", "gone", 1)],
            deletes: vec![("b".to_owned(), "gone".to_owned())],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(stats.deleted, 3 + 1, "a/1, a/2, a/b1, then b/gone");
    assert_eq!(stats.sessions_written, 2);
    drop(store);

    let (store, recovered) = open(tmp.path());
    assert_eq!(
        keys(&recovered),
        [("a", "new"), ("ab", "1"), ("ab", "2"), ("b", "1")]
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .to_vec()
    );
    assert!(!recovered.sessions.contains(&longer));

    // The replaced record came back whole before the project delete.
    store
        .write(&Batch {
            upserts: vec![longer.clone()],
            ..Batch::default()
        })
        .unwrap();
    drop(store);
    let (store, recovered) = open(tmp.path());
    assert!(recovered.sessions.contains(&longer));
    assert_eq!(
        recovered
            .sessions
            .iter()
            .filter(|s| s.project == "a" && s.session == "1")
            .count(),
        1
    );

    // Deleting project "ab" leaves "a" alone too.
    store
        .write(&Batch {
            delete_projects: vec!["ab".to_owned()],
            ..Batch::default()
        })
        .unwrap();
    drop(store);
    let (_, recovered) = open(tmp.path());
    assert_eq!(
        keys(&recovered),
        [("a", "1"), ("a", "new"), ("b", "1")]
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .to_vec()
    );
}

#[test]
fn template_set_then_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    store
        .write(&Batch {
            templates: vec![("p".to_owned(), Some("one".to_owned()))],
            ..Batch::default()
        })
        .unwrap();
    store
        .write(&Batch {
            templates: vec![("p".to_owned(), Some("two".to_owned()))],
            ..Batch::default()
        })
        .unwrap();
    drop(store);
    let (store, recovered) = open(tmp.path());
    assert_eq!(recovered.templates, vec![("p".to_owned(), "two".to_owned())]);
    store
        .write(&Batch {
            templates: vec![("p".to_owned(), None), ("never-set".to_owned(), None)],
            // A project-wide delete does not remove the template; only `templates` does.
            delete_projects: vec!["q".to_owned()],
            ..Batch::default()
        })
        .unwrap();
    store
        .write(&Batch {
            templates: vec![("q".to_owned(), Some("kept".to_owned()))],
            ..Batch::default()
        })
        .unwrap();
    store
        .write(&Batch {
            delete_projects: vec!["q".to_owned()],
            ..Batch::default()
        })
        .unwrap();
    drop(store);
    let (_, recovered) = open(tmp.path());
    assert_eq!(recovered.templates, vec![("q".to_owned(), "kept".to_owned())]);
}

#[test]
fn key_encoding_is_unambiguous() {
    let pairs = [
        ("a", "b1"),
        ("ab", "1"),
        ("a\0b", ""),
        ("a", "\0b"),
        ("", "ab"),
        ("ab", ""),
    ];
    for (p, s) in pairs {
        assert_eq!(
            record::decode_key(&session_key(p, s)),
            Some((p.to_owned(), s.to_owned()))
        );
        for (q, t) in pairs {
            assert_eq!(
                session_key(p, s) == session_key(q, t),
                (p, s) == (q, t),
                "{p:?}/{s:?} vs {q:?}/{t:?}"
            );
            let in_prefix = session_key(q, t).starts_with(&project_prefix(p));
            assert_eq!(in_prefix, p == q, "{q:?}/{t:?} in project {p:?}");
        }
    }
    assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
    assert_eq!(prefix_end(&[1, 0xFF, 0xFF]), Some(vec![2]));
    assert_eq!(prefix_end(&[0xFF]), None);
    assert_eq!(record::decode_key(&[0, 0, 0, 5, b'a']), None);
}

/// The child half of [`committed_batch_survives_abort`]: only does something when run by it.
#[test]
fn crash_child_writes_then_aborts() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let (store, _) = open(Path::new(&dir));
    store.write(&sample_batch()).unwrap();
    // Die like SIGKILL would: no destructor, no close, the lock released by the kernel.
    std::process::abort();
}

const CHILD_ENV: &str = "MQTT_LLM_STORE_CHILD";

#[test]
fn committed_batch_survives_abort() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    // Created here so the child finds an existing store (its first transaction is not the one that matters).
    drop(open(tmp.path()));

    let module = module_path!().split_once("::").map_or(module_path!(), |(_, rest)| rest);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::crash_child_writes_then_aborts"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(6),
        "the child must die by SIGABRT after its write: {status:?}"
    );

    let (store, recovered) = open(tmp.path());
    let expected = sample_batch();
    assert_eq!(sorted(recovered.sessions), sorted(expected.upserts));
    assert_eq!(
        recovered.templates,
        vec![("chat".to_owned(), "You are terse.".to_owned())]
    );
    // And it is writable after the repair.
    store
        .write(&Batch {
            deletes: vec![("chat".to_owned(), "s1".to_owned())],
            ..Batch::default()
        })
        .unwrap();
}

#[test]
fn garbage_file_is_corrupt_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let file = Store::file_in(tmp.path());
    let garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &garbage).unwrap();
    for _ in 0..2 {
        let err = Store::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("--no-persist"), "{message}");
        println!("{message}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            garbage,
            "the file must be left as it was"
        );
    }
    // A short file too.
    std::fs::write(&file, b"hi").unwrap();
    assert!(matches!(Store::open(tmp.path()), Err(StoreError::Corrupt { .. })));
    assert_eq!(std::fs::read(&file).unwrap(), b"hi");
}

#[test]
fn foreign_redb_without_version_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let file = Store::file_in(tmp.path());
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("other"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    let err = Store::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&file.display().to_string()));
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn undecodable_record_is_corrupt_not_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let file = Store::file_in(tmp.path());
    let (store, _) = open(tmp.path());
    store.write(&sample_batch()).unwrap();
    drop(store);
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(SESSIONS)
            .unwrap()
            .insert(session_key("chat", "bad").as_slice(), b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    let err = Store::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("\"bad\""), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // A record filed under another session's key is refused the same way.
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let value = serde_json::to_vec(&session("chat", "s1", 1)).unwrap();
        txn.open_table(SESSIONS)
            .unwrap()
            .insert(session_key("chat", "bad").as_slice(), value.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(Store::open(tmp.path()), Err(StoreError::Corrupt { .. })));
}

#[test]
fn newer_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = Store::file_in(tmp.path());
    let (store, _) = open(tmp.path());
    store.write(&sample_batch()).unwrap();
    drop(store);
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(FORMAT_VERSION_KEY, 99).unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    let err = Store::open(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerFormat {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(
        message.contains("format version 99, this mqtt-llm reads version 1"),
        "{message}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn second_open_is_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let err = Store::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    println!("{err}");
    assert!(err.to_string().contains(&store.path().display().to_string()));
    // A clone shares the database: the lock goes only with the last handle.
    let clone = store.clone();
    drop(store);
    assert!(matches!(Store::open(tmp.path()), Err(StoreError::InUse { .. })));
    clone.write(&sample_batch()).unwrap();
    drop(clone);
    let (_, recovered) = open(tmp.path());
    assert_eq!(recovered.sessions.len(), 4);
}

#[test]
fn state_dir_is_created_0700_with_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("parent").join("state");
    let (_store, _) = open(&dir);
    for d in [tmp.path().join("parent"), dir.clone()] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
}

#[test]
fn uncreatable_state_dir_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let dir = blocker.join("state");
    let err = Store::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot create the state directory {}: ", dir.display())),
        "{err}"
    );
}

/// Not an assertion: the cost of one fsync'd batch the size of a busy flush (16 sessions of 30 turns). Run with
/// `cargo test -p mqtt-llm --lib store::tests::write_cost -- --nocapture`.
#[test]
fn write_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let turn = |i: usize| StoredTurn {
        user: format!("{i}: {}", "how do I configure the thing? ".repeat(5)),
        assistant: format!("{i}: {}", "You set the option in the file, then restart. ".repeat(15)),
        tokens: 220,
    };
    let batch = |round: u64| Batch {
        upserts: (0..16)
            .map(|s| StoredSession {
                project: "bench".to_owned(),
                session: format!("session-{s}"),
                owner: StoredOwner::Unchecked,
                system_override: None,
                turns: (0..30).map(turn).collect(),
                context_tokens: 6600,
                last_used_unix_ms: round,
            })
            .collect(),
        ..Batch::default()
    };
    let rounds = 20;
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for round in 0..rounds {
        let b = batch(round as u64);
        let start = Instant::now();
        bytes = store.write(&b).unwrap().bytes;
        times.push(start.elapsed());
    }
    times.sort();
    let encode_start = Instant::now();
    for s in &batch(0).upserts {
        std::hint::black_box(serde_json::to_vec(s).unwrap());
    }
    let encode = encode_start.elapsed();
    let mut small = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let one = Batch {
            upserts: vec![session("bench", "one", 1 + round % 3)],
            ..Batch::default()
        };
        let start = Instant::now();
        store.write(&one).unwrap();
        small.push(start.elapsed());
    }
    small.sort();
    println!(
        "store write cost: JSON encoding of that batch alone {encode:?}; a one-session batch (the fsync floor): \
         median {:?}",
        small[rounds / 2]
    );
    let mean = times.iter().sum::<Duration>() / rounds as u32;
    println!(
        "store write cost: 16 sessions x 30 turns, {bytes} bytes per batch, {rounds} batches (rewrites): \
         min {:?}, median {:?}, mean {mean:?}, max {:?}; file {} bytes",
        times[0],
        times[rounds / 2],
        times[rounds - 1],
        std::fs::metadata(store.path()).unwrap().len()
    );
}
