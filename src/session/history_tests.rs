use super::*;
use proptest::prelude::*;

fn stable() -> TrimSettings {
    TrimSettings::default()
}

fn sliding() -> TrimSettings {
    TrimSettings {
        policy: TrimPolicy::Sliding,
        ..TrimSettings::default()
    }
}

fn counted(prompt: u32, completion: u32) -> Option<Counted> {
    Some(Counted {
        prompt_tokens: prompt,
        completion_tokens: completion,
    })
}

fn push(h: &mut History, system: &str, i: usize, c: Option<Counted>) {
    h.push(&Arc::from(system), format!("u{i}").into(), format!("a{i}").into(), c);
}

#[test]
fn an_image_turn_is_stored_as_placeholders_and_text() {
    assert_eq!(user_turn_text("what is this?", 1), "[image] what is this?");
    assert_eq!(user_turn_text("", 2), "[image] [image]");
    assert_eq!(user_turn_text("plain", 0), "plain");
}

#[test]
fn counts_follow_the_engines_usage() {
    let mut h = History::default();
    // Turn 0: prompt 50 (system + "u0"), reply 10: the user message is estimated (5), the rest is the system's.
    push(&mut h, "sys", 0, counted(50, 10));
    assert_eq!(h.turns[0].tokens, 15);
    assert_eq!(h.system_tokens("sys"), 45);
    assert_eq!(h.context_tokens(), 60);
    // Turn 1 on the unchanged history: its tokens are the exact difference.
    push(&mut h, "sys", 1, counted(66, 12));
    assert_eq!(h.turns[1].tokens, 18);
    assert_eq!(h.context_tokens(), 78);
    // Dropping the oldest turn takes its tokens only; the system's share stays.
    assert_eq!(h.drop_oldest(1), 1);
    assert_eq!(h.context_tokens(), 63);
    assert_eq!(h.system_tokens("sys"), 45);
    // Another system prompt is estimated until a count comes.
    assert_eq!(
        h.system_tokens("a different prompt"),
        estimate_message("a different prompt")
    );
    assert_eq!(h.system_tokens(""), 0);
}

#[test]
fn without_usage_turns_are_estimated() {
    let mut h = History::default();
    h.push(&Arc::from(""), "abcd".repeat(10).into(), "xy".into(), None);
    assert_eq!(h.turns[0].tokens, 10 + 1 + 2 * MESSAGE_FRAMING_TOKENS);
}

#[test]
fn the_turns_json_is_kept_in_step_with_the_turns() {
    let mut h = History::default();
    push(&mut h, "", 0, None);
    let first = h.turns_json().to_owned();
    assert_eq!(
        first,
        r#",{"role":"user","content":"u0"},{"role":"assistant","content":"a0"}"#
    );
    h.push(&Arc::from(""), "say \"hi\"\n".into(), "ok".into(), None);
    push(&mut h, "", 2, None);
    h.drop_oldest(1);
    let kept = h.turns_json().to_owned();
    h.release_cache();
    assert_eq!(h.cache_bytes(), 0);
    assert_eq!(h.turns_json(), kept, "the cache equals a fresh build");
    let parsed: serde_json::Value = serde_json::from_str(&format!("[{}]", &kept[1..])).unwrap();
    assert_eq!(parsed[0]["content"], "say \"hi\"\n");
    assert_eq!(parsed.as_array().unwrap().len(), 4);
}

#[test]
fn stable_drops_to_the_low_water_mark_in_one_step() {
    // Budget 1000, system 100, ten turns of 100: 1100 > 1000.
    let turns = [100; 10];
    // Low water 600: keep system + 5 turns.
    assert_eq!(turns_to_drop(100, turns, 0, 1000, &stable()), 5);
    // Sliding drops the one turn that makes it fit.
    assert_eq!(turns_to_drop(100, turns, 0, 1000, &sliding()), 1);
    // Under budget, nothing goes.
    assert_eq!(turns_to_drop(100, [100; 9], 0, 1000, &stable()), 0);
    // The incoming message counts.
    assert_eq!(turns_to_drop(100, [100; 9], 50, 1000, &sliding()), 1);
}

#[test]
fn the_following_turns_share_one_prefix_with_stable() {
    // A conversation of 30 turns of 100 tokens under a budget of 1000: stable trims rarely, sliding every turn
    // once full.
    let mut trims = [0usize; 2];
    for (i, settings) in [stable(), sliding()].iter().enumerate() {
        let mut h = History::default();
        for turn in 0..30 {
            let dropped = h.trim("", 100, 1000, settings);
            if dropped > 0 {
                trims[i] += 1;
            }
            h.push(&Arc::from(""), format!("u{turn}").into(), "a".into(), None);
            // Make each turn 100 tokens.
            if let Some(t) = h.turns.back_mut() {
                h.turn_tokens = h.turn_tokens - t.tokens + 100;
                t.tokens = 100;
            }
        }
    }
    assert!(trims[0] <= 6, "stable trimmed {} times", trims[0]);
    assert!(trims[1] >= 20, "sliding trimmed {} times", trims[1]);
}

#[test]
fn max_turns_applies_with_both_policies() {
    let five = TrimSettings {
        max_turns: NonZeroU32::new(5),
        ..stable()
    };
    assert_eq!(
        turns_to_drop(0, [1; 6], 0, 1000, &five),
        3,
        "stable: down to 60% of 5 turns"
    );
    let five_sliding = TrimSettings {
        policy: TrimPolicy::Sliding,
        ..five
    };
    assert_eq!(turns_to_drop(0, [1; 6], 0, 1000, &five_sliding), 1);
    assert_eq!(turns_to_drop(0, [1; 5], 0, 1000, &five), 0);
}

#[test]
fn restored_histories_keep_their_counts() {
    let turns = vec![
        Turn {
            user: "u".into(),
            assistant: "a".into(),
            tokens: 30,
        },
        Turn {
            user: "v".into(),
            assistant: "b".into(),
            tokens: 20,
        },
    ];
    let h = History::restored(Some(Arc::from("sys")), turns, 90);
    assert_eq!(h.context_tokens(), 90);
    assert_eq!(h.system_tokens("sys"), 40);
    assert_eq!(h.text_bytes(), 4);
}

fn policy() -> impl Strategy<Value = TrimSettings> {
    (any::<bool>(), 1u32..100, proptest::option::of(1u32..40)).prop_map(|(stable, low, turns)| TrimSettings {
        policy: if stable {
            TrimPolicy::Stable
        } else {
            TrimPolicy::Sliding
        },
        low_water: low as f32 / 100.0,
        max_turns: turns.and_then(NonZeroU32::new),
    })
}

proptest! {
    /// Whatever the turns, the budget and the policy: the kept turns are a suffix (order kept, whole turns, the
    /// newest last), the budget is met unless the system prompt and the new message alone exceed it, the turn cap
    /// is met, and nothing is dropped while everything fits.
    #[test]
    fn trimming_keeps_a_suffix_within_budget(
        fixed in 0u32..500,
        turns in proptest::collection::vec(1u32..400, 0..60),
        incoming in 0u32..300,
        budget in 1u32..4000,
        settings in policy(),
    ) {
        let dropped = turns_to_drop(fixed, turns.iter().copied(), incoming, budget, &settings);
        prop_assert!(dropped <= turns.len());
        let kept = &turns[dropped..];
        let total: u64 = u64::from(fixed) + u64::from(incoming) + kept.iter().map(|&t| u64::from(t)).sum::<u64>();
        if u64::from(fixed) + u64::from(incoming) <= u64::from(budget) {
            prop_assert!(total <= u64::from(budget), "kept {total} over budget {budget}");
        } else {
            prop_assert!(kept.is_empty(), "the fixed part alone is over budget: every turn goes");
        }
        if let Some(max) = settings.max_turns {
            prop_assert!(kept.len() <= max.get() as usize);
        }
        let whole: u64 = u64::from(fixed) + u64::from(incoming) + turns.iter().map(|&t| u64::from(t)).sum::<u64>();
        let turns_fit = settings.max_turns.is_none_or(|m| turns.len() <= m.get() as usize);
        if whole <= u64::from(budget) && turns_fit {
            prop_assert_eq!(dropped, 0);
        }
        // Sliding drops the fewest: keeping one more turn would not fit.
        if settings.policy == TrimPolicy::Sliding && dropped > 0 {
            let one_more = total + u64::from(turns[dropped - 1]);
            let turn_cap = settings.max_turns.map_or(usize::MAX, |m| m.get() as usize);
            prop_assert!(one_more > u64::from(budget) || kept.len() + 1 > turn_cap);
        }
        // Stable, once it trims, leaves room: at most the low-water share of the budget.
        if settings.policy == TrimPolicy::Stable && dropped > 0 && !kept.is_empty() {
            prop_assert!(total as f64 <= f64::from(budget) * f64::from(settings.low_water) + 1.0);
        }
    }

    /// The history's accounting (tokens, bytes, JSON cache) stays equal to a rebuild through pushes and trims, and
    /// the system prompt is never dropped by a trim.
    #[test]
    fn history_bookkeeping_matches_its_turns(
        ops in proptest::collection::vec((0u32..200, 0u32..60, 1u32..3000), 1..40),
        settings in policy(),
    ) {
        let mut h = History::default();
        for (i, (prompt, completion, budget)) in ops.into_iter().enumerate() {
            h.trim("sys", 10, budget, &settings);
            let c = (prompt > 0).then_some(Counted { prompt_tokens: prompt, completion_tokens: completion });
            h.push(&Arc::from("sys"), format!("user {i} \"q\"").into(), format!("reply {i}").into(), c);
            let sum: u32 = h.turns.iter().map(|t| t.tokens).sum();
            prop_assert_eq!(h.turn_tokens, sum);
            prop_assert_eq!(h.text_bytes(), h.turns.iter().map(Turn::text_bytes).sum::<usize>());
            let cached = h.turns_json().to_owned();
            let mut fresh = h.clone();
            fresh.release_cache();
            prop_assert_eq!(fresh.turns_json(), cached.as_str());
            prop_assert!(h.turns.iter().all(|t| t.tokens >= 1));
        }
    }
}
