//! The text table `mqtt-llm bench` prints: each phase's percentiles, throughput and errors, then the flood,
//! overhead and per-turn figures when they were measured.

use std::fmt::Write as _;

use super::Report;
use super::stats::{Isolation, PhaseStats};

/// The whole report as text, one line per figure group.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    if let Some(m) = &report.mqtt {
        phase_table(&mut out, "mqtt", m);
    }
    if let Some(i) = &report.isolation {
        isolation_table(&mut out, i);
    }
    if let Some(d) = &report.direct {
        phase_table(&mut out, "direct", d);
    }
    if let Some(o) = &report.overhead {
        let _ = writeln!(
            out,
            "overhead: {}; throughput ratio {:.3}",
            o.latency.describe(),
            o.throughput_ratio
        );
    }
    if let Some(turns) = &report.per_turn {
        let _ = writeln!(
            out,
            "  {:<6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "turn", "ttft p50", "ttft p90", "ttft p99", "prompt", "cached"
        );
        for t in turns {
            let _ = writeln!(
                out,
                "  {:<6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                t.turn, t.ttft_p50_ms, t.ttft_p90_ms, t.ttft_p99_ms, t.prompt_tokens_mean, t.cached_tokens_mean
            );
        }
    }
    out
}

fn phase_table(out: &mut String, name: &str, s: &PhaseStats) {
    let _ = writeln!(
        out,
        "{name}: {} requests, {} completed, {} violations, {:.1} s\n  {:<10} {:>9} {:>9} {:>9} {:>9}",
        s.requests, s.completed, s.violations, s.wall_s, "ms", "p50", "p90", "p99", "max"
    );
    for (label, p) in [("ttft", &s.ttft_ms), ("e2e", &s.e2e_ms), ("itl", &s.itl_ms)] {
        let _ = writeln!(
            out,
            "  {label:<10} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            p.p50, p.p90, p.p99, p.max
        );
    }
    let _ = writeln!(
        out,
        "  {:.1} tokens/s, {:.2} replies/s",
        s.tokens_per_s, s.replies_per_s
    );
    if !s.errors.is_empty() {
        let errors: Vec<String> = s.errors.iter().map(|(c, n)| format!("{c}={n}")).collect();
        let _ = writeln!(out, "  errors: {}", errors.join(", "));
    }
    let share = s
        .cached_share
        .map_or_else(|| "n/a".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let _ = writeln!(
        out,
        "  prompt tokens from cache (usage): {share} ({} of {})",
        s.cached_tokens, s.prompt_tokens
    );
    if let Some(p) = &s.prefix_cache {
        let _ = writeln!(out, "  engine prefix-cache hit rate: {}", p.describe());
    }
}

fn isolation_table(out: &mut String, i: &Isolation) {
    phase_table(out, "idle", &i.idle);
    phase_table(out, "flooded", &i.flooded);
    let outcomes: Vec<String> = i.flood.outcomes.iter().map(|(c, n)| format!("{c}={n}")).collect();
    let _ = writeln!(
        out,
        "flood: {} requests at {}/s to one session, {} violations; {}",
        i.flood.sent,
        i.flood_rate,
        i.flood.violations,
        outcomes.join(", ")
    );
    let _ = writeln!(out, "added by the flood: {}", i.added.describe());
}
