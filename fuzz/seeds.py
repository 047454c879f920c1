#!/usr/bin/env python3
"""Write the committed seed corpus of the fuzz targets (fuzz/corpus/<target>/), one meaningful input per file.

    python3 fuzz/seeds.py        # rewrites fuzz/corpus/{parse_request,topic_rules,sse_decoder}/seed-*

Input formats are described at the top of each fuzz_targets/*.rs. The corpus is small on purpose: libFuzzer grows
its own from these in a temporary copy (scripts/fuzz.sh), never in the repository.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def deep(levels):
    return "[" * levels + "]" * levels


def parse_request_seeds():
    """Flags byte (bit 0: a Response Topic follows as length + bytes; bits 1-3: extra prefixes; bit 4: small
    limits), then the payload."""

    def plain(payload):
        return b"\x00" + payload.encode()

    def v5(topic, payload, flags=0x01):
        t = topic.encode()
        return bytes([flags, len(t)]) + t + payload.encode()

    req = lambda **f: json.dumps(f, separators=(",", ":"))
    return {
        "request": plain(req(sessionId="s1", message="hello there")),
        "request-full": plain(
            req(
                sessionId="user 1",
                message="Where is the exit?",
                temperature=0,
                topP=0.9,
                maxTokens=512,
                systemPrompt="You are a maze guide.",
                replyTopic="general/assistant_response/user 1/c1/r1",
                stream=True,
                streamTopic="general/assistant_stream/user 1/c1",
                requestId="r1",
                clientId="c1",
                images=[],
            )
        ),
        "plain-text": plain("What is the capital of France?"),
        "numeric-session": plain('{"sessionId":42,"message":"hi","requestId":7}'),
        "deep-5000": plain('{"sessionId":"n1","message":"hi","x":' + deep(5000) + "}"),
        "deep-33": plain('{"sessionId":"n1","message":"hi","x":' + deep(32) + "}"),
        "truncated": plain('{"sessionId":"s1","message":"hi'),
        "escaped-quotes": plain('{"message":"say \\"[[{\\" \\\\","sessionId":"s1","x":["\\"]"]}'),
        "array-truncated": plain("[1,2"),
        "wildcard-reply": plain(req(sessionId="s1", message="hi", replyTopic="general/assistant_response/#")),
        "foreign-reply": plain(req(sessionId="s1", message="hi", replyTopic="other/assistant_response/s1")),
        "v5-response-topic": v5("general/assistant_response/v5", req(sessionId="s1", message="hi")),
        "v5-actuator": v5("home/door/set", req(sessionId="s1", message="open")),
        "v5-extra-prefix": v5("devices/d1/reply", req(sessionId="s1", message="hi"), flags=0x03),
        "v5-sys": v5("$SYS/broker/x", "[1,2"),
        "small-limits": bytes([0x10]) + req(sessionId="s1", message="x" * 80).encode(),
        "not-utf8": b"\x00" + b'{"sessionId":"s1","message":"\xc3\x28"}',
    }


def topic_rules_seeds():
    """Fields separated by 0xff: project, candidate topic, up to three reply prefixes."""

    def seed(*fields):
        return b"\xff".join(f.encode() for f in fields)

    return {
        "default": seed("general", "general/assistant_response/s1"),
        "deeper": seed("general", "general/assistant_response/s1/c1/r1/"),
        "stream": seed("general", "general/assistant_stream/s1"),
        "wildcards": seed("general", "general/assistant_response/+/#"),
        "nul": seed("general", "general/assistant_response/s\x001"),
        "only-slashes": seed("general", "general/assistant_response///"),
        "other-project": seed("general", "other/assistant_response/s1"),
        "prefix-lookalike": seed("general", "general/assistant_responsex/s1"),
        "dollar": seed("general", "$SYS/broker/load", "$SYS/"),
        "extra-prefix": seed("maze", "devices/d1/responses", "devices", "maze/extra/"),
        "extra-lookalike": seed("maze", "devices-other/x", "devices"),
        "dotdot": seed("general", "general/assistant_response/../../home/door/set"),
        "json-number": seed("general", "42"),
        "json-string": seed("general", '"general/assistant_response/s1"'),
        "whitespace": seed("general", "  general/assistant_response/s1 \t"),
    }


VLLM_CHUNK = (
    'data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,'
    '"model":"qwen3","choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]}\n\n'
)


def chunk(delta, finish=None):
    return VLLM_CHUNK % (json.dumps(delta), json.dumps(finish))


USAGE = (
    'data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3",'
    '"choices":[],"usage":{"prompt_tokens":12,"total_tokens":17,"completion_tokens":5,'
    '"prompt_tokens_details":{"cached_tokens":0}}}\n\n'
)
DONE = "data: [DONE]\n\n"


def sse_decoder_seeds():
    hello = chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hello"})
    return {
        "vllm": hello + chunk({"content": ""}, "stop") + DONE,
        "vllm-usage": hello + chunk({"content": " wörld 世界 🎉"}) + chunk({"content": ""}, "length") + USAGE + DONE,
        "in-stream-error": hello
        + 'data: {"error":{"message":"Internal server error","type":"InternalServerError","param":null,"code":500}}\n\n'
        + DONE,
        "disconnected": hello,
        "cut-mid-event": hello + 'data: {"id":"chatcmpl-1","choi',
        "keepalive-comments": ": keep-alive\n\n" + hello + ": ping\n\n" + DONE,
        "crlf": (hello + DONE).replace("\n", "\r\n"),
        "multiline-data": 'data: {"choices":\ndata: [{"delta":{"content":"x"}}]}\n\n' + DONE,
        "not-json": "data: hello\n\n" + DONE,
        "done-only": DONE,
        "event-and-id-lines": "event: message\nid: 1\nretry: 10\n" + chunk({"content": "a"}) + DONE,
        "no-space": 'data:{"choices":[{"delta":{"content":"tight"}}]}\n\n' + DONE,
        "think": chunk({"content": "<think>hmm</think>"}) + chunk({"content": "answer"}, "stop") + DONE,
    }


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith("seed-"):
            os.remove(os.path.join(folder, name))
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(folder, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("parse_request", parse_request_seeds())
    write("topic_rules", topic_rules_seeds())
    write("sse_decoder", sse_decoder_seeds())
