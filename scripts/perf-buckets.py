#!/usr/bin/env python3
"""Where a process's CPU time goes, by concern: reads `perf script` output (recorded with --call-graph dwarf, e.g.
by `BENCH_PERF=FILE scripts/bench-stack.sh ...`) and prints a Markdown table of sample shares.

    perf script -i FILE | scripts/perf-buckets.py

Kernel samples are split into TCP send/receive and the rest (scheduling, epoll, futexes, timers). A user-space
sample goes to the first bucket that matches a frame, walking from the leaf to the root, so an allocation or a
memmove is charged to the code that asked for it.
"""
import collections
import re
import sys

BUCKETS = [
    ("SSE decoding (eventsource-stream, serde_json)", ["eventsource_stream", "llm::sse"]),
    ("engine request body (history to JSON)", ["llm::types", "RequestBuilder::json"]),
    ("conversation history (prepare, commit)", ["session::"]),
    ("stream frames (coalesce, JSON)", ["StreamSink", "wire::frames"]),
    ("request parsing, admission", ["parse_request", "bridge::intake", "admission"]),
    ("metrics", ["metrics"]),
    ("think filter, reply cleanup", ["ThinkFilter", "clean_reply"]),
    ("MQTT (rumqttc: encode, decode, socket I/O)", ["rumqttc", "mqtt::eventloop", "mqtt::client", "flume"]),
    ("HTTP client (reqwest, hyper: request, response, socket I/O)", ["hyper", "reqwest", "tower", "http::"]),
    ("tokio runtime (task spawn and polling, timers, channels)", ["tokio::", "tokio_util", "mio::"]),
]
NET = ("tcp_", "sock_", "skb", "ip_", "inet_", "__dev_queue_xmit", "net_rx", "writev", "recvfrom", "sendto")


def samples(lines):
    stack = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line[0] in " \t":
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                dso = re.search(r"\(([^()]*)\)$", parts[1])
                sym = re.sub(r"(\+0x[0-9a-f]+)? \(.*\)$", "", parts[1])
                stack.append((sym, dso.group(1) if dso else ""))
        else:
            stack = []
    if stack:
        yield stack


def bucket(stack):
    syms = [s for s, _ in stack]
    if stack[0][1].startswith("[kernel"):
        if any(k in s for s in syms for k in NET):
            return "kernel: TCP send and receive (loopback)"
        return "kernel: scheduling, epoll, futex, timers"
    for sym in syms:
        for name, patterns in BUCKETS:
            if any(p in sym for p in patterns):
                return name
    return "other"


def main():
    counts = collections.Counter(bucket(s) for s in samples(sys.stdin))
    total = sum(counts.values())
    if total == 0:
        sys.exit("no samples (record with --call-graph dwarf)")
    print(f"{total} samples\n\n| where | share |\n|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.0f}% |")


if __name__ == "__main__":
    main()
