#!/usr/bin/env python3
"""Run llama.cpp's native OpenAI-compatible HTTP server (via the xllamacpp wheel) in the foreground until
SIGTERM/SIGINT (or, with --exit-on-stdin-eof, until its stdin closes: the test that started it is gone).

mqtt-llm embeds this file and runs it as its supervised engine under `mqtt-llm up --engine llamacpp`
(PYTHON serve_llamacpp.py MODEL.gguf --host 127.0.0.1 --port P --threads N --ctx N --parallel N --alias NAME);
tests/llamacpp_e2e.rs runs it directly. scripts/setup-cpu-engine.sh prepares a venv with xllamacpp and the model.

usage: serve_llamacpp.py MODEL.gguf [--host 127.0.0.1] [--port 8080] [--ctx 4096]
                         [--parallel 2] [--threads 1] [--alias NAME] [--exit-on-stdin-eof]

--ctx is the total KV context, split across the --parallel slots. Keep --threads 1 on small machines: with 2 threads
llama.cpp collapses whenever anything else runs.
"""
import argparse
import signal
import sys
import threading

import xllamacpp as xlc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ctx", type=int, default=4096, help="total KV context (split across slots)")
    ap.add_argument("--parallel", type=int, default=2, help="concurrent slots")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alias", default=None, help="model id reported by /v1/models")
    ap.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin reaches end of file")
    a = ap.parse_args()

    p = xlc.CommonParams()
    p.model.path = a.model
    p.hostnames = [a.host]
    p.port = a.port
    p.n_ctx = a.ctx
    p.n_parallel = a.parallel
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.endpoint_metrics = True      # /metrics (Prometheus)
    p.endpoint_props = True        # /props
    p.ui = False                   # no web UI assets needed
    p.offline = True               # never try to reach a model hub
    if a.alias:
        p.model_alias = {a.alias}

    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    if a.exit_on_stdin_eof:
        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    server = xlc.Server(p)         # loads the model, starts HTTP in a background thread
    print(f"listening on {server.listening_address}", flush=True)

    stop.wait()
    # A clean stop takes milliseconds, but was once seen to hang past mqtt-llm's grace: let the kernel end the
    # process if it is still here in 5 s (SIGALRM's default action; needs no Python thread to run).
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(5)
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
