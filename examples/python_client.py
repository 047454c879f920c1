#!/usr/bin/env python3
"""A device talking to mqtt-llm over MQTT 5 with paho-mqtt 2.x (see docs/protocol.md).

Three requests, one after the other, in one session:
  1. a plain request whose reply goes to a per-request `replyTopic`
     ({project}/assistant_response/{session}/{clientId}/{requestId});
  2. a streaming request (`"stream": true`): the deltas are printed as they arrive on
     {project}/assistant_stream/{session}, then the final reply;
  3. an MQTT 5 request with the Response Topic and Correlation Data properties; the reply must carry the same
     correlation data back. The Response Topic must lie under {project}/assistant_response/ (or a prefix the
     project allows with `reply_prefixes` in the server's config); any other one is ignored and the reply goes to
     the default topic.

    pip install 'paho-mqtt>=2,<3'
    python3 examples/python_client.py --host 127.0.0.1 --port 1883 --project general

Exits 0 when every request got its reply, 1 otherwise.
"""

import argparse
import json
import queue
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT_S = 60


class Device:
    """One MQTT 5 connection; every received message goes to a queue read by the main thread."""

    def __init__(self, host, port, client_id):
        self.client_id = client_id
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.acks.put(("connack", reason))
        self.client.on_subscribe = lambda _c, _u, _mid, reasons, _p: self.acks.put(("suback", reasons))
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect(host, port, keepalive=30, clean_start=True)
        self.client.loop_start()
        kind, reason = self.acks.get(timeout=TIMEOUT_S)
        if kind != "connack" or reason.is_failure:
            raise SystemExit(f"could not connect to {host}:{port}: {reason}")

    def subscribe(self, topic):
        """Subscribe at QoS 1 and wait for the SubAck, so that no reply can arrive before the subscription."""
        self.client.subscribe(topic, qos=1)
        kind, reasons = self.acks.get(timeout=TIMEOUT_S)
        if kind != "suback" or any(r.is_failure for r in reasons):
            raise SystemExit(f"subscribe {topic} failed: {reasons}")

    def publish(self, topic, payload, properties=None):
        self.client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(TIMEOUT_S)

    def next_message(self):
        try:
            return self.messages.get(timeout=TIMEOUT_S)
        except queue.Empty:
            raise SystemExit(f"no message within {TIMEOUT_S}s") from None

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def request_with_reply_topic(dev, project, session):
    """1. The reply goes to a topic of this request only (the common `replyTopic` form)."""
    request_id = uuid.uuid4().hex[:8]
    reply_topic = f"{project}/assistant_response/{session}/{dev.client_id}/{request_id}"
    dev.subscribe(reply_topic)
    dev.publish(
        f"{project}/user_input",
        json.dumps(
            {
                "message": "Hello! Who are you?",
                "sessionId": session,
                "clientId": dev.client_id,
                "requestId": request_id,
                "replyTopic": reply_topic,
            }
        ),
    )
    msg = dev.next_message()
    reply = msg.payload.decode()
    print(f"[replyTopic] {msg.topic}\n  reply: {reply}")
    return not reply.startswith("Error: ")


def streaming_request(dev, project, session):
    """2. `"stream": true`: JSON frames on the stream topic, then the plain-text reply on the reply topic."""
    request_id = uuid.uuid4().hex[:8]
    stream_topic = f"{project}/assistant_stream/{session}"
    reply_topic = f"{project}/assistant_response/{session}"
    dev.subscribe(stream_topic)
    dev.subscribe(reply_topic)
    dev.publish(
        f"{project}/user_input",
        json.dumps({"message": "Tell me a short story.", "sessionId": session, "requestId": request_id, "stream": True}),
    )
    print("[stream] ", end="", flush=True)
    streamed = []
    while True:
        msg = dev.next_message()
        if msg.topic == stream_topic:
            frame = json.loads(msg.payload)
            if frame.get("requestId") != request_id:
                continue
            if "delta" in frame:
                streamed.append(frame["delta"])
                print(frame["delta"], end="", flush=True)
            elif frame.get("done"):
                print(f"\n  done: finishReason={frame['finishReason']} usage={frame['usage']} "
                      f"ttftMs={frame['ttftMs']} totalMs={frame['totalMs']}")
            elif "error" in frame:
                print(f"\n  error frame: {frame['error']}")
        elif msg.topic == reply_topic:
            reply = msg.payload.decode()
            print(f"  final reply: {reply}")
            # The concatenated deltas are the reply before trimming.
            return not reply.startswith("Error: ") and "".join(streamed).strip() == reply


def mqtt5_request(dev, project, session):
    """3. MQTT 5 Response Topic + Correlation Data: the reply carries the correlation data back."""
    # mqtt-llm publishes only under the project's reply prefixes, never on an arbitrary topic.
    response_topic = f"{project}/assistant_response/{dev.client_id}/responses"
    correlation = uuid.uuid4().bytes
    dev.subscribe(response_topic)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    dev.publish(
        f"{project}/user_input",
        json.dumps({"message": "What did I ask first?", "sessionId": session}),
        properties=props,
    )
    msg = dev.next_message()
    reply = msg.payload.decode()
    echoed = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
    ok = echoed == correlation and msg.topic == response_topic
    print(f"[MQTT 5] {msg.topic}\n  reply: {reply}\n  on the Response Topic with the correlation data echoed: {ok}")
    return ok and not reply.startswith("Error: ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--project", default="general")
    parser.add_argument("--session", default=f"py-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()

    dev = Device(args.host, args.port, f"py-client-{uuid.uuid4().hex[:6]}")
    try:
        results = [
            request_with_reply_topic(dev, args.project, args.session),
            streaming_request(dev, args.project, args.session),
            mqtt5_request(dev, args.project, args.session),
        ]
    finally:
        dev.close()
    print("all requests answered" if all(results) else f"FAILED: {results}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
