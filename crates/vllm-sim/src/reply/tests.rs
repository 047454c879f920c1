//! Reply planning: determinism, lengths, echo format, stop strings.

use super::*;
use crate::tokenizer::tokenize;

fn spec(max_tokens: u32) -> ReplySpec<'static> {
    ReplySpec {
        echo: None,
        natural_tokens: 32,
        seed: 42,
        max_tokens,
        stop: &[],
        include_stop_str_in_output: false,
        ignore_eos: false,
        min_tokens: 0,
    }
}

fn joined(plan: &ReplyPlan) -> String {
    (0..plan.tokens() as usize).map(|i| plan.delta(i)).collect()
}

#[test]
fn lorem_is_deterministic_and_tokenizes_to_its_length() {
    let a = ReplyPlan::new(&spec(1000));
    let b = ReplyPlan::new(&spec(1000));
    assert_eq!(a.text(), b.text());
    assert_eq!(a.tokens(), 32);
    assert_eq!(a.finish_reason(), FinishReason::Stop);
    // 31 text tokens, then EOS (which adds no text).
    assert_eq!(tokenize(a.text()).len(), 31);
    assert_eq!(a.delta(31), "");
    assert_eq!(joined(&a), a.text());
    let other = ReplyPlan::new(&ReplySpec { seed: 43, ..spec(1000) });
    assert_ne!(a.text(), other.text());
}

#[test]
fn reply_seed_depends_on_prompt_and_seed() {
    assert_eq!(reply_seed(&[1, 2, 3], None), reply_seed(&[1, 2, 3], None));
    assert_ne!(reply_seed(&[1, 2, 3], None), reply_seed(&[1, 2, 4], None));
    assert_ne!(reply_seed(&[1, 2, 3], Some(1)), reply_seed(&[1, 2, 3], Some(2)));
}

#[test]
fn max_tokens_cuts_with_length() {
    let plan = ReplyPlan::new(&spec(5));
    assert_eq!(plan.tokens(), 5);
    assert_eq!(plan.finish_reason(), FinishReason::Length);
    assert_eq!(tokenize(plan.text()).len(), 5);
    assert_eq!(joined(&plan), plan.text());
}

#[test]
fn echo_line_format() {
    let msgs = [
        (
            "system",
            Cow::Borrowed("You are a helpful AI assistant. Answer briefly."),
        ),
        ("user", Cow::Borrowed("hi")),
        ("assistant", Cow::Borrowed("hello")),
        ("user", Cow::Borrowed("what next?")),
    ];
    assert_eq!(
        echo_line(&msgs, 0),
        "messages=4 roles=s,u,a,u system=You are a helpful AI assistant. user=what next?"
    );
    assert_eq!(
        echo_line(&[("user", Cow::Borrowed("<image>what is it?"))], 1),
        "messages=1 roles=u system=none images=1 user=<image>what is it?"
    );
    assert_eq!(
        echo_line(&[("user", Cow::Borrowed("x"))], 0),
        "messages=1 roles=u system=none user=x"
    );
}

#[test]
fn echo_reply_is_the_line_then_eos() {
    let line = "messages=1 roles=u system=none user=hello there";
    let plan = ReplyPlan::new(&ReplySpec {
        echo: Some(line),
        ..spec(100)
    });
    assert_eq!(plan.text(), line);
    assert_eq!(plan.tokens() as usize, tokenize(line).len() + 1);
    assert_eq!(plan.finish_reason(), FinishReason::Stop);
    let cut = ReplyPlan::new(&ReplySpec {
        echo: Some(line),
        ..spec(2)
    });
    assert_eq!(cut.text(), "messages=");
}

#[test]
fn stop_string_truncates_and_reports() {
    let line = "alpha beta gamma delta";
    let stop = vec![" gamma".to_owned()];
    let plan = ReplyPlan::new(&ReplySpec {
        echo: Some(line),
        stop: &stop,
        ..spec(100)
    });
    assert_eq!(plan.text(), "alpha beta");
    assert_eq!(plan.finish_reason(), FinishReason::Stop);
    assert_eq!(plan.stop_reason(), Some(" gamma"));
    assert_eq!(plan.tokens(), 3);
    assert_eq!(joined(&plan), "alpha beta");
    // Held back: " beta" could be the start of " gamma"? No, but the last 5 bytes are withheld.
    assert_eq!(plan.delta(0), "");
    let incl = ReplyPlan::new(&ReplySpec {
        echo: Some(line),
        stop: &stop,
        include_stop_str_in_output: true,
        ..spec(100)
    });
    assert_eq!(incl.text(), "alpha beta gamma");
}

#[test]
fn ignore_eos_and_min_tokens_extend_with_lorem() {
    let plan = ReplyPlan::new(&ReplySpec {
        ignore_eos: true,
        ..spec(50)
    });
    assert_eq!(plan.tokens(), 50);
    assert_eq!(plan.finish_reason(), FinishReason::Length);
    let plan = ReplyPlan::new(&ReplySpec {
        min_tokens: 40,
        ..spec(100)
    });
    assert_eq!(plan.tokens(), 40);
    assert_eq!(plan.finish_reason(), FinishReason::Stop);
}
