#!/usr/bin/env python3
"""The P3 trimming table from `mqtt-llm bench --per-turn --engine-metrics ... --json` reports, one per policy.

    scripts/bench-p3-table.py LABEL=REPORT.json [LABEL=REPORT.json ...]

Prints a markdown table (turns are 1-based: turn 1 is the first request of a conversation, the JSON's turn 0):
TTFT p50 at turns 1, 2, 10, 20, 29, 30 (P3_TURNS to change them), the turn-30/turn-2 TTFT ratio (last/second of
those), the engine's prefix-cache hit rate (vllm:prefix_cache_hits_total / queries_total over the phase), the share of
prompt tokens served from cache according to the per-request usage (cached_tokens / prompt_tokens), the mean prompt at
turn 10 and at the last turn, and the first turn whose mean prompt grew by less than half of what turn 2 added (the
first request that saw a trimmed history).
Used by scripts/bench-p3.sh and scripts/bench-p3-real-vllm.sh.
"""
import json
import os
import sys


def pct(x):
    return "n/a" if x is None else f"{x * 100:.1f}%"


def main(args):
    shown = [int(t) for t in os.environ.get("P3_TURNS", "1 2 10 20 29 30").split()]
    head = ["policy"] + [f"TTFT p50 t{t} (ms)" for t in shown]
    head += [f"t{shown[-1]}/t{shown[1]}", "engine prefix-cache hit rate", "cached/prompt tokens (usage)",
             f"mean prompt t{shown[2]} / t{shown[-1]}", "trimmed from turn", "completed / requests"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for arg in args:
        label, path = arg.split("=", 1)
        report = json.load(open(path))
        phase = report.get("mqtt") or report.get("direct")
        turns = {t["turn"] + 1: t for t in report.get("per_turn") or []}

        def ttft(t):
            return turns[t]["ttft_p50_ms"] if t in turns else None

        def prompt(t):
            return turns[t]["prompt_tokens_mean"] if t in turns else None

        row = [label] + ["n/a" if ttft(t) is None else f"{ttft(t):.1f}" for t in shown]
        a, b = ttft(shown[-1]), ttft(shown[1])
        row.append("n/a" if not (a and b) else f"{a / b:.2f}")
        pc = phase.get("prefix_cache")
        if pc and pc.get("hit_rate") is not None:
            row.append(f"{pct(pc['hit_rate'])} ({pc['hits']:,} / {pc['queries']:,})")
        else:
            row.append("n/a")
        row.append(f"{pct(phase.get('cached_share'))} ({phase.get('cached_tokens', 0):,} / {phase['prompt_tokens']:,})")
        p10, plast = prompt(shown[2]), prompt(shown[-1])
        row.append(" / ".join("n/a" if p is None else f"{p:,.0f}" for p in (p10, plast)))
        # The first turn whose prompt grew by less than half of what turn 2 added: its history was trimmed.
        step = (prompt(2) - prompt(1)) if prompt(1) is not None and prompt(2) is not None else None
        trim = next((t for t in sorted(turns) if t > 2 and t - 1 in turns and step
                     and turns[t]["prompt_tokens_mean"] - turns[t - 1]["prompt_tokens_mean"] < step / 2), None)
        row.append("none" if trim is None else str(trim))
        row.append(f"{phase['completed']} / {phase['requests']}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2 or "=" not in sys.argv[1]:
        sys.exit(__doc__)
    main(sys.argv[1:])
