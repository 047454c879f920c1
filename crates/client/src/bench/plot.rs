//! `--plot FILE.svg`: latency CDFs (TTFT and end-to-end, per phase) and, with `--per-turn`, TTFT by turn.
//! Plain SVG text: a few polylines need no plotting library.

use std::fmt::Write;

use super::stats::{Record, RecordOutcome, TurnStats};

const W: f64 = 640.0;
const H: f64 = 360.0;
const M: f64 = 50.0;
const COLORS: &[&str] = &["steelblue", "darkorange", "seagreen", "crimson"];

/// One line of a chart: label and (x, y) points.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// The sorted latencies of completed requests as CDF points (ms, fraction).
fn cdf(mut ms: Vec<f64>) -> Vec<(f64, f64)> {
    ms.sort_by(f64::total_cmp);
    let n = ms.len() as f64;
    ms.into_iter()
        .enumerate()
        .map(|(i, x)| (x, (i + 1) as f64 / n))
        .collect()
}

fn chart(out: &mut String, y0: f64, title: &str, x_label: &str, y_label: &str, series: &[Series]) {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0_f64, f64::max).max(1e-9);
    let y_max = all.map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9);
    let (pw, ph) = (W - 2.0 * M, H - 2.0 * M);
    let _ = writeln!(
        out,
        r#"<g transform="translate(0,{y0})"><text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>"#,
        W / 2.0
    );
    let _ = writeln!(
        out,
        r#"<rect x="{M}" y="{M}" width="{pw}" height="{ph}" fill="none" stroke="gray"/>
<text x="{}" y="{}" text-anchor="middle" font-size="11">{x_label} (max {x_max:.1})</text>
<text x="12" y="{}" font-size="11" transform="rotate(-90 12 {})" text-anchor="middle">{y_label} (max {y_max:.2})</text>"#,
        W / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", M + x / x_max * pw, M + ph - y / y_max * ph))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>
<text x="{}" y="{}" font-size="11" fill="{color}">{}</text>"#,
            pts.join(" "),
            M + 8.0,
            M + 14.0 + 14.0 * i as f64,
            s.label
        );
    }
    out.push_str("</g>\n");
}

/// The SVG document. `phases`: (name, records) for each phase run.
pub fn render(phases: &[(&str, &[Record])], per_turn: Option<&[TurnStats]>) -> String {
    let mut series = Vec::new();
    for (name, records) in phases {
        let ok = || records.iter().filter(|r| r.outcome == RecordOutcome::Ok);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        series.push(Series {
            label: format!("{name} TTFT"),
            points: cdf(ok().filter_map(|r| r.ttft).map(ms).collect()),
        });
        series.push(Series {
            label: format!("{name} end-to-end"),
            points: cdf(ok().filter_map(|r| r.e2e).map(ms).collect()),
        });
    }
    let charts = if per_turn.is_some() { 2.0 } else { 1.0 };
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
"#,
        H * charts
    );
    chart(&mut out, 0.0, "Latency CDF", "latency ms", "fraction", &series);
    if let Some(turns) = per_turn {
        let line = |label: &str, f: fn(&TurnStats) -> f64| Series {
            label: label.to_owned(),
            points: turns.iter().map(|t| (f64::from(t.turn), f(t))).collect(),
        };
        let per = [line("TTFT p50", |t| t.ttft_p50_ms), line("TTFT p99", |t| t.ttft_p99_ms)];
        chart(&mut out, H, "TTFT by turn", "turn", "ms", &per);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_svg_with_a_line_per_series() {
        let r = Record {
            turn: 0,
            outcome: RecordOutcome::Ok,
            ttft: Some(std::time::Duration::from_millis(5)),
            e2e: Some(std::time::Duration::from_millis(9)),
            itl: Vec::new(),
            completion_tokens: 1,
            prompt_tokens: 1,
            cached_tokens: None,
            message_bytes: 0,
            reply_bytes: 0,
            violations: 0,
        };
        let turns = [TurnStats {
            turn: 0,
            completed: 1,
            ttft_p50_ms: 5.0,
            ttft_p90_ms: 5.0,
            ttft_p99_ms: 5.0,
            prompt_tokens_mean: 1.0,
            cached_tokens_mean: 0.0,
            cached_share: Some(0.0),
        }];
        let svg = render(&[("mqtt", std::slice::from_ref(&r))], Some(&turns));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
    }
}
