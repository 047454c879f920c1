use super::*;

fn key(p: &str, s: &str) -> SessionKey {
    SessionKey {
        project: ProjectName::try_new(p).unwrap(),
        session: SessionId::try_new(s).unwrap(),
    }
}

/// A request of a project without ownership (`--session-owner none`).
const ANYONE: Owner = Owner::Unchecked;

fn client(id: &str) -> Owner {
    Owner::Client(id.to_owned())
}

fn store() -> SessionStore {
    SessionStore::new(3000, TrimSettings::default(), false)
}

/// The session's owner, system prompt override and last use, as stored.
fn record(store: &SessionStore, k: &SessionKey) -> (Owner, Option<String>, Instant) {
    let state = store.state();
    let s = &state.sessions[k];
    (
        s.owner.clone(),
        s.system_override.as_deref().map(str::to_owned),
        s.last_used,
    )
}

fn roles(m: &[ChatMessage]) -> Vec<Role> {
    m.iter().map(|m| m.role).collect()
}

#[test]
fn history_and_system_prompt_precedence() {
    let store = store();
    let k = key("general", "s1");
    let m = store.prepare(&k, &ANYONE, None, "project prompt", "hi").unwrap();
    assert_eq!(roles(&m), [Role::System, Role::User]);
    assert_eq!(m[0].content, "project prompt");
    store.commit(&k, &ANYONE, "hi".into(), "hello".into(), Some(20));

    let m = store
        .prepare(&k, &ANYONE, Some("custom"), "project prompt", "next")
        .unwrap();
    assert_eq!(roles(&m), [Role::System, Role::User, Role::Assistant, Role::User]);
    assert_eq!(m[0].content, "custom");
    // Not committed (say the engine failed): the user turn is not stored, the override is.
    let m = store.prepare(&k, &ANYONE, None, "project prompt", "again").unwrap();
    assert_eq!(m[0].content, "custom");
    assert_eq!(m.len(), 4);
}

#[test]
fn projects_do_not_share_sessions() {
    let store = store();
    store.commit(&key("a", "s"), &ANYONE, "u".into(), "a".into(), Some(5));
    assert_eq!(store.prepare(&key("b", "s"), &ANYONE, None, "p", "x").unwrap().len(), 2);
    assert_eq!(store.len(), 2);
}

#[test]
fn sweep_expires_idle_then_evicts_least_recently_used() {
    let store = store();
    for s in ["a", "b", "c", "d"] {
        store.prepare(&key("p", s), &ANYONE, None, "", "x").unwrap();
    }
    let later = Instant::now() + Duration::from_secs(10);
    // Nothing idle for longer than an hour, but only two may stay: the two used first go.
    assert_eq!(store.sweep(later, Duration::from_secs(3600), 2), 2);
    assert!(store.history(&key("p", "a")).is_none() && store.history(&key("p", "b")).is_none());
    assert!(store.history(&key("p", "d")).is_some());
    // Everything idle for longer than 5 s goes.
    assert_eq!(store.sweep(later, Duration::from_secs(5), 100), 2);
    assert!(store.is_empty());
}

#[test]
fn commit_trims_to_budget_but_keeps_the_newest_turn() {
    let store = SessionStore::new(100, TrimSettings::default(), false);
    let k = key("general", "s");
    // Engine counts of the whole context after each turn: 40 (35 of them the system prompt's share), 55, 70, 85.
    for (i, total) in [40, 55, 70, 85].into_iter().enumerate() {
        store.commit(&k, &ANYONE, format!("u{i}"), format!("a{i}"), Some(total));
    }
    let h = store.history(&k).unwrap();
    assert_eq!(h.turns.len(), 4, "within budget: nothing dropped");
    // 110: over the budget of 100; stable drops to 60% of it, keeping the newest turn.
    store.commit(&k, &ANYONE, "u4".into(), "a4".into(), Some(110));
    let h = store.history(&k).unwrap();
    assert!(h.context_tokens() <= 60, "{h:?}");
    assert_eq!(h.turns.back().map(|t| &*t.user), Some("u4"));
}

#[test]
fn prepare_fits_the_prompt_to_the_requests_budget() {
    let store = SessionStore::new(3000, TrimSettings::default(), false);
    let k = key("general", "s");
    let fit = |budget| Fit { budget, correction: 0 };
    // Ten turns of 100 tokens after a system prompt counted at 50.
    store
        .prepare_prompt(&k, &ANYONE, None, "sys", "q".into(), fit(3000))
        .unwrap();
    let mut total = 50;
    for i in 0..10 {
        total += 100;
        store.commit(&k, &ANYONE, format!("u{i}"), format!("a{i}"), Some(total));
        store
            .prepare_prompt(&k, &ANYONE, None, "sys", "q".into(), fit(3000))
            .unwrap();
    }
    let p = store
        .prepare_prompt(&k, &ANYONE, None, "sys", "next".into(), fit(3000))
        .unwrap();
    assert_eq!((p.turns, p.dropped), (10, 0));
    // A request whose budget is 800 (say a large maxTokens): stable drops to 60% of it at once.
    let p = store
        .prepare_prompt(&k, &ANYONE, None, "sys", "next".into(), fit(800))
        .unwrap();
    assert!(p.estimate <= 480, "{p:?}");
    assert_eq!(p.turns, 10 - p.dropped);
    let m = p.messages();
    assert_eq!(m[0].content, "sys", "the system prompt stays");
    assert_eq!(m.last().unwrap().content, "next");
    // The kept turns are the newest, in order.
    let users: Vec<String> = m
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.text())
        .collect();
    assert_eq!(users.last().unwrap(), "next");
    assert_eq!(users[users.len() - 2], "u9");
    // A correction (the engine counted more than estimated) trims further.
    let before = p.turns;
    let p = store
        .prepare_prompt(
            &k,
            &ANYONE,
            None,
            "sys",
            "next".into(),
            Fit {
                budget: 800,
                correction: 400,
            },
        )
        .unwrap();
    assert!(p.turns < before, "{p:?}");
}

#[test]
fn the_first_claim_binds_a_new_session_and_others_are_refused() {
    let store = store();
    let k = key("general", "s1");
    assert_eq!(store.claim(&k, &client("devA")), Ok(()));
    assert_eq!(store.claim(&k, &client("devA")), Ok(()), "the owner again");
    assert_eq!(store.claim(&k, &client("devB")), Err(OwnerRefusal::OtherOwner));
    assert_eq!(store.claim(&k, &Owner::Anonymous), Err(OwnerRefusal::OtherOwner));
    assert_eq!(record(&store, &k).0, client("devA"));
    // Another project's session of the same id is another session.
    assert_eq!(store.claim(&key("maze", "s1"), &client("devB")), Ok(()));
    // Requests that name no client share sessions only among themselves.
    let anon = key("general", "anon");
    assert_eq!(store.claim(&anon, &Owner::Anonymous), Ok(()));
    assert_eq!(store.claim(&anon, &Owner::Anonymous), Ok(()));
    assert_eq!(store.claim(&anon, &client("devA")), Err(OwnerRefusal::OtherOwner));
}

#[test]
fn a_refused_request_changes_nothing_of_the_owners_session() {
    let store = store();
    let k = key("general", "s1");
    let a = client("devA");
    store.claim(&k, &a).unwrap();
    store.prepare(&k, &a, Some("A's prompt"), "project", "hi").unwrap();
    store.commit(&k, &a, "hi".into(), "hello".into(), Some(20));
    let before = record(&store, &k);
    let b = client("devB");
    assert_eq!(store.claim(&k, &b), Err(OwnerRefusal::OtherOwner));
    assert_eq!(
        store
            .prepare(&k, &b, Some("B's prompt"), "project", "leak")
            .unwrap_err(),
        OwnerRefusal::OtherOwner
    );
    assert_eq!(store.commit(&k, &b, "leak".into(), "x".into(), Some(99)), 0);
    assert_eq!(record(&store, &k), before, "owner, prompt and last use untouched");
    let h = store.history(&k).unwrap();
    assert_eq!((h.turns.len(), h.context_tokens()), (1, 20));
    let m = store.prepare(&k, &a, None, "project", "again").unwrap();
    assert_eq!(m[0].content, "A's prompt");
    assert_eq!(roles(&m), [Role::System, Role::User, Role::Assistant, Role::User]);
}

#[test]
fn unchecked_requests_claim_nothing_and_use_any_session() {
    let store = store();
    let k = key("general", "s1");
    assert_eq!(store.claim(&k, &ANYONE), Ok(()));
    assert!(
        store.is_empty(),
        "none mode creates the session when it prepares, as before"
    );
    store.claim(&k, &client("devA")).unwrap();
    assert!(store.prepare(&k, &ANYONE, None, "p", "x").is_ok());
}

#[test]
fn a_forgotten_session_is_free_for_a_new_owner() {
    let store = store();
    let k = key("general", "s1");
    store.claim(&k, &client("devA")).unwrap();
    let later = Instant::now() + Duration::from_secs(10);
    assert_eq!(store.sweep(later, Duration::from_secs(5), 100), 1);
    assert_eq!(store.claim(&k, &client("devB")), Ok(()));
    // devA's request, queued before the sweep, now finds devB's session: it neither reads nor writes it.
    assert_eq!(
        store.prepare(&k, &client("devA"), None, "p", "x").unwrap_err(),
        OwnerRefusal::OtherOwner
    );
    assert_eq!(store.commit(&k, &client("devA"), "x".into(), "y".into(), None), 0);
    assert!(store.history(&k).unwrap().turns.is_empty());
}

#[test]
fn a_session_forgotten_while_its_request_waited_is_recreated_for_that_owner() {
    let store = store();
    let k = key("general", "s1");
    let a = client("devA");
    store.claim(&k, &a).unwrap();
    store.sweep(Instant::now() + Duration::from_secs(10), Duration::from_secs(5), 100);
    assert!(store.prepare(&k, &a, None, "p", "x").is_ok());
    assert_eq!(record(&store, &k).0, a);
    assert_eq!(store.claim(&k, &client("devB")), Err(OwnerRefusal::OtherOwner));
}

fn one_turn(store: &SessionStore, k: &SessionKey, owner: &Owner) {
    store.prepare(k, owner, None, "project", "hi").unwrap();
    store.commit(k, owner, "hi".into(), "hello".into(), Some(20));
}

#[test]
fn a_session_template_changes_that_session_only() {
    let store = store();
    let (a, b) = (key("general", "a"), key("general", "b"));
    one_turn(&store, &a, &ANYONE);
    one_turn(&store, &b, &ANYONE);
    store.set_template(&a, &ANYONE, "pirate", false).unwrap();
    let m = store.prepare(&a, &ANYONE, None, "project", "x").unwrap();
    assert_eq!(
        (m[0].content.text().as_str(), m.len()),
        ("pirate", 4),
        "history kept without reset"
    );
    store.set_template(&a, &ANYONE, "robot", true).unwrap();
    let m = store.prepare(&a, &ANYONE, None, "project", "x").unwrap();
    assert_eq!(
        (m[0].content.text().as_str(), m.len()),
        ("robot", 2),
        "reset clears the history"
    );
    let m = store.prepare(&b, &ANYONE, None, "project", "x").unwrap();
    assert_eq!(
        (m[0].content.text().as_str(), m.len()),
        ("project", 4),
        "the other session untouched"
    );
    // A later request's systemPrompt wins, as before.
    let m = store.prepare(&a, &ANYONE, Some("own"), "project", "x").unwrap();
    assert_eq!(m[0].content, "own");
}

#[test]
fn clear_keeps_the_prompt_and_delete_forgets_everything() {
    let store = store();
    let (a, b) = (key("general", "a"), key("general", "b"));
    store.set_template(&a, &ANYONE, "pirate", true).unwrap();
    one_turn(&store, &a, &ANYONE);
    one_turn(&store, &b, &ANYONE);
    assert_eq!(store.clear(&a, &ANYONE), Ok(true));
    let m = store.prepare(&a, &ANYONE, None, "project", "x").unwrap();
    assert_eq!((m[0].content.text().as_str(), m.len()), ("pirate", 2));
    store.commit(&a, &ANYONE, "x".into(), "y".into(), Some(9));
    assert_eq!(store.history(&b).unwrap().turns.len(), 1);
    assert_eq!(store.delete(&a, &ANYONE), Ok(true));
    assert!(store.history(&a).is_none());
    assert_eq!(store.delete(&a, &ANYONE), Ok(false));
    assert_eq!(store.clear(&a, &ANYONE), Ok(false));
    let m = store.prepare(&a, &ANYONE, None, "project", "x").unwrap();
    assert_eq!(m[0].content, "project", "the session's template is forgotten with it");
}

#[test]
fn project_wide_control_stays_in_its_project() {
    let store = store();
    let (a, b, other) = (key("general", "a"), key("general", "b"), key("maze", "a"));
    for k in [&a, &b, &other] {
        one_turn(&store, k, &ANYONE);
    }
    store.set_template(&b, &ANYONE, "own", false).unwrap();
    assert_eq!(store.set_project_template(&a.project, "new default", false), 2);
    let m = store.prepare(&a, &ANYONE, None, "project", "x").unwrap();
    assert_eq!(
        (m[0].content.text().as_str(), m.len()),
        ("new default", 4),
        "history kept without reset"
    );
    let m = store.prepare(&b, &ANYONE, None, "project", "x").unwrap();
    assert_eq!(
        m[0].content, "new default",
        "replaces the sessions' own prompts, as the successor did"
    );
    let m = store.prepare(&b, &ANYONE, Some("request's"), "project", "x").unwrap();
    assert_eq!(m[0].content, "request's", "a later request's systemPrompt still wins");
    store.commit(&b, &ANYONE, "x".into(), "y".into(), Some(9));
    let m = store.prepare(&other, &ANYONE, None, "maze prompt", "x").unwrap();
    assert_eq!(m[0].content, "maze prompt");
    assert_eq!(store.set_project_template(&a.project, "newer", true), 2);
    assert!(store.history(&a).unwrap().turns.is_empty() && store.history(&b).unwrap().turns.is_empty());
    one_turn(&store, &a, &ANYONE);
    assert_eq!(store.clear_project(&a.project), 2);
    assert!(store.history(&a).unwrap().turns.is_empty());
    assert_eq!(store.history(&other).unwrap().turns.len(), 1);
    assert_eq!(store.delete_project(&a.project), 2);
    assert_eq!(store.len(), 1);
    let m = store.prepare(&a, &ANYONE, None, "project", "x").unwrap();
    assert_eq!(m[0].content, "newer", "the project template outlives the sessions");
}

#[test]
fn control_of_another_clients_session_is_refused_and_changes_nothing() {
    let store = store();
    let k = key("general", "s1");
    let (a, b) = (client("devA"), client("devB"));
    store.claim(&k, &a).unwrap();
    one_turn(&store, &k, &a);
    let before = record(&store, &k);
    assert_eq!(store.set_template(&k, &b, "evil", true), Err(OwnerRefusal::OtherOwner));
    assert_eq!(store.clear(&k, &b), Err(OwnerRefusal::OtherOwner));
    assert_eq!(store.delete(&k, &b), Err(OwnerRefusal::OtherOwner));
    assert_eq!(record(&store, &k), before);
    assert_eq!(store.history(&k).unwrap().turns.len(), 1);
    assert_eq!(store.clear(&k, &a), Ok(true));
    // A template for a new session claims it.
    let fresh = key("general", "s2");
    store.set_template(&fresh, &b, "mine", true).unwrap();
    assert_eq!(store.claim(&fresh, &a), Err(OwnerRefusal::OtherOwner));
}

#[test]
fn a_turn_running_across_a_clear_or_delete_is_not_stored() {
    let store = store();
    let k = key("general", "s1");
    one_turn(&store, &k, &ANYONE);
    // Cleared while a request runs: its turn (built on the old history) is dropped.
    store.prepare(&k, &ANYONE, None, "project", "running").unwrap();
    assert_eq!(store.clear(&k, &ANYONE), Ok(true));
    assert_eq!(store.commit(&k, &ANYONE, "running".into(), "late".into(), Some(9)), 0);
    assert!(store.history(&k).unwrap().turns.is_empty());
    // Deleted while a request runs: the turn does not bring the conversation back.
    store.set_template(&k, &ANYONE, "pirate", true).unwrap();
    store.prepare(&k, &ANYONE, None, "project", "running").unwrap();
    assert_eq!(store.delete(&k, &ANYONE), Ok(true));
    store.commit(&k, &ANYONE, "running".into(), "late".into(), Some(9));
    assert!(store.history(&k).unwrap().turns.is_empty());
    let m = store.prepare(&k, &ANYONE, None, "project", "next").unwrap();
    assert_eq!(
        (m[0].content.text().as_str(), m.len()),
        ("project", 2),
        "prompt forgotten too"
    );
    store.commit(&k, &ANYONE, "next".into(), "ok".into(), Some(9));
    assert_eq!(store.history(&k).unwrap().turns.len(), 1, "the next turn is stored");
    // A request that failed (no commit) before a clear does not make the next turn vanish.
    store.prepare(&k, &ANYONE, None, "project", "failed").unwrap();
    store.clear(&k, &ANYONE).unwrap();
    one_turn(&store, &k, &ANYONE);
    assert_eq!(store.history(&k).unwrap().turns.len(), 1);
    // Nothing running: a delete forgets the record.
    store.delete(&k, &ANYONE).unwrap();
    assert!(store.history(&k).is_none());
    // Project-wide: the same.
    let other = key("general", "s2");
    store.prepare(&other, &ANYONE, None, "project", "running").unwrap();
    assert_eq!(store.clear_project(&other.project), 1);
    store.commit(&other, &ANYONE, "running".into(), "late".into(), Some(9));
    assert!(store.history(&other).unwrap().turns.is_empty());
    store.prepare(&other, &ANYONE, None, "project", "running").unwrap();
    assert_eq!(store.delete_project(&other.project), 1);
    store.commit(&other, &ANYONE, "running".into(), "late".into(), Some(9));
    assert!(store.history(&other).unwrap().turns.is_empty());
}

#[test]
fn the_byte_total_follows_every_change() {
    let store = SessionStore::new(200, TrimSettings::default(), false);
    let check = |store: &SessionStore| {
        let state = store.state();
        let sum: usize = state.sessions.values().map(Session::bytes).sum();
        assert_eq!(state.bytes, sum);
    };
    for i in 0..30 {
        let k = key("general", &format!("s{}", i % 3));
        store
            .prepare(&k, &ANYONE, None, "project", format!("message {i}"))
            .unwrap();
        check(&store);
        store.commit(
            &k,
            &ANYONE,
            format!("message {i}"),
            "x".repeat(i * 7),
            Some(20 * i as u32),
        );
        check(&store);
    }
    assert!(store.bytes() > 0);
    store.clear(&key("general", "s0"), &ANYONE).unwrap();
    check(&store);
    store.delete(&key("general", "s1"), &ANYONE).unwrap();
    check(&store);
    store.set_project_template(&key("general", "x").project, "t", true);
    check(&store);
    assert_eq!(store.bytes(), 0);
}
