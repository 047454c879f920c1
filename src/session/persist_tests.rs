//! Persistence on a paused clock: what the sweep forgets (idle, LRU, bytes) leaves the store too; restore keeps
//! the turns, prompts, owners and idle clock; records idle too long are not restored and are deleted.

use std::time::Duration;

use super::super::{OwnerRefusal, SweepLimits, TrimSettings};
use super::*;

fn key(s: &str) -> SessionKey {
    SessionKey {
        project: ProjectName::try_new("general").unwrap(),
        session: SessionId::try_new(s).unwrap(),
    }
}

/// A store with persistence, restored from `dir`, and its persister.
fn open(dir: &std::path::Path) -> (SessionStore, Persister, usize) {
    let (store, recovered) = Store::open(dir).unwrap();
    let sessions = SessionStore::new(3000, TrimSettings::default(), true);
    let restored = sessions.restore(recovered, Duration::from_secs(3600));
    let persister = Persister::new(store, sessions.clone());
    (sessions, persister, restored)
}

fn turn(sessions: &SessionStore, k: &SessionKey, owner: &Owner, text: &str) {
    let fit = super::super::Fit {
        budget: 3000,
        correction: 0,
    };
    sessions
        .prepare_prompt(k, owner, None, "sys", text.into(), fit)
        .unwrap();
    sessions.commit_turn(k, owner, text.to_owned(), format!("re: {text}"), None, 3000);
}

fn on_disk(dir: &std::path::Path) -> Vec<String> {
    let (_, recovered) = Store::open(dir).unwrap();
    let mut names: Vec<String> = recovered.sessions.into_iter().map(|s| s.session).collect();
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn a_restart_brings_back_turns_prompts_owners_and_templates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (sessions, persister, restored) = open(dir.path());
        assert_eq!(restored, 0);
        let dev = Owner::Client("devA".into());
        sessions.claim(&key("a"), &dev).unwrap();
        turn(&sessions, &key("a"), &dev, "one");
        turn(&sessions, &key("a"), &dev, "two");
        sessions
            .set_template(&key("b"), &Owner::Unchecked, "pirate", false)
            .unwrap();
        sessions.set_project_template(&ProjectName::try_new("maze").unwrap(), "maze rules", false);
        assert!(persister.flush().await);
        assert_eq!(sessions.pending(), 0);
    }
    let (sessions, _persister, restored) = open(dir.path());
    assert_eq!(restored, 2);
    let history = sessions.history(&key("a")).unwrap();
    let users: Vec<&str> = history.turns.iter().map(|t| &*t.user).collect();
    assert_eq!(users, ["one", "two"]);
    assert_eq!(
        sessions.claim(&key("a"), &Owner::Client("devB".into())),
        Err(OwnerRefusal::OtherOwner),
        "the owner came back"
    );
    let fit = super::super::Fit {
        budget: 3000,
        correction: 0,
    };
    let b = sessions
        .prepare_prompt(&key("b"), &Owner::Unchecked, None, "project", "x".into(), fit)
        .unwrap();
    assert_eq!(b.messages()[0].content, "pirate");
    let maze = SessionKey {
        project: ProjectName::try_new("maze").unwrap(),
        session: SessionId::try_new("m").unwrap(),
    };
    let m = sessions
        .prepare_prompt(&maze, &Owner::Unchecked, None, "project", "x".into(), fit)
        .unwrap();
    assert_eq!(m.messages()[0].content, "maze rules");
}

#[tokio::test(start_paused = true)]
async fn idle_expiry_and_the_caps_delete_from_the_store_too() {
    let dir = tempfile::tempdir().unwrap();
    let (sessions, persister, _) = open(dir.path());
    // Names of one length: every session holds the same bytes.
    for s in ["s1", "s2", "s3", "s4"] {
        turn(&sessions, &key(s), &Owner::Unchecked, s);
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    assert!(persister.flush().await);
    let limits = |max_sessions, max_bytes| SweepLimits {
        idle: Duration::from_secs(3600),
        max_sessions,
        max_bytes,
    };
    // LRU: two may stay; the two used first go, from memory and from the store.
    let gone = sessions.sweep_with(tokio::time::Instant::now(), &limits(2, usize::MAX));
    assert_eq!(gone.lru, 2);
    assert!(persister.flush().await);
    // Bytes: a cap below what two sessions hold evicts the older one.
    let one = sessions.bytes() / 2;
    let gone = sessions.sweep_with(tokio::time::Instant::now(), &limits(10, one + 1));
    assert_eq!((gone.bytes, sessions.len()), (1, 1));
    assert!(persister.flush().await);
    // Idle: an hour later the last one expires.
    tokio::time::advance(Duration::from_secs(3601)).await;
    let gone = sessions.sweep_with(tokio::time::Instant::now(), &limits(10, usize::MAX));
    assert_eq!(gone.idle, 1);
    assert!(sessions.is_empty());
    assert!(persister.flush().await);
    drop(persister);
    drop(sessions);
    assert!(on_disk(dir.path()).is_empty(), "every eviction reached the store");
}

#[tokio::test(start_paused = true)]
async fn records_idle_too_long_are_not_restored_and_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        let stale = crate::store::StoredSession {
            project: "general".into(),
            session: "stale".into(),
            owner: StoredOwner::Unchecked,
            system_override: None,
            turns: vec![],
            context_tokens: 0,
            last_used_unix_ms: 1_000,
        };
        let fresh = crate::store::StoredSession {
            session: "fresh".into(),
            last_used_unix_ms: unix_ms(SystemTime::now()),
            ..stale.clone()
        };
        store
            .write(&Batch {
                upserts: vec![stale, fresh],
                ..Batch::default()
            })
            .unwrap();
    }
    {
        let (sessions, persister, restored) = open(dir.path());
        assert_eq!(restored, 1);
        assert!(sessions.history(&key("fresh")).is_some());
        assert!(sessions.history(&key("stale")).is_none());
        assert!(persister.flush().await);
    }
    assert_eq!(on_disk(dir.path()), ["fresh"]);
}
