//! Re-creations of the clients of the server mqtt-llm replaces, written from the wire-compatibility reference
//! (`seed-protocol.md` §4 "Clients and what they depend on", §1.3, §2, §3): each one publishes exactly the topics,
//! payloads and QoS its original does, subscribes to exactly its original's filters, parses replies and correlates
//! them as the original does, and bounds its waits by the original's timeouts. They speak MQTT 3.1.1, as the
//! originals (paho-mqtt, mqtt.js) do.
//!
//! What an original would silently drop or misattribute (a reply under its wildcard that matches no pending request,
//! a non-JSON hint) is kept in the client's `extras`, so that a test can assert that the client got exactly the
//! messages it expects and nothing extra.
//!
//! Assumptions about features being built elsewhere are named constants here, so they can be adjusted in one
//! place: [`CHAT_NOTICE_TOPIC`], [`VISION_UP_ARGS`], [`PROJECTS`].
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::WAIT;

/// `--projects` for every compatibility test: the chat projects the clients use and `maze` (state topics).
pub const PROJECTS: &str = "general,maze,prompt_portal";

/// ASSUMPTION (the control-topics feature picks it): where a chat project (not `maze`) publishes the notices
/// `{"hint":"Template updated"}` / `{"hint":"History cleared"}` for a session. It must not be under
/// `{project}/assistant_response/`, which OwOGPT and prompt-portal subscribe to with `#`. `{project}` and
/// `{sessionId}` are replaced.
pub const CHAT_NOTICE_TOPIC: &str = "{project}/control_notice/{sessionId}";

/// The chat notice topic of `session` in `project` (see [`CHAT_NOTICE_TOPIC`]).
pub fn chat_notice_topic(project: &str, session: &str) -> String {
    CHAT_NOTICE_TOPIC
        .replace("{project}", project)
        .replace("{sessionId}", session)
}

/// The `mqtt-llm up` arguments that make the simulated model a vision model (vllm-sim's `--sim-multimodal on`; a
/// real vLLM knows from the checkpoint) with vLLM's image budget.
pub const VISION_UP_ARGS: &[&str] = &[
    "--limit-mm-per-prompt",
    r#"{"image":4,"video":0}"#,
    "--engine-arg=--sim-multimodal=on",
];

/// What vllm-sim's echo shows in place of an image part (Qwen-VL's placeholder tokens).
pub const IMAGE_PLACEHOLDER: &str = "<|vision_start|><|image_pad|><|vision_end|>";

/// A 1x1 PNG as a data URL, as OwOGPT's frontend uploads images.
pub const PNG_DATA_URL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// `n` random lowercase hex digits.
pub fn hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap())
        .collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------------------------------
// MQTT 3.1.1 link

/// A message a client received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn segments(&self) -> Vec<&str> {
        self.topic.split('/').collect()
    }

    /// The payload as a JSON object, if it is one.
    pub fn json_object(&self) -> Option<Map<String, Value>> {
        match serde_json::from_slice(&self.payload) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    }
}

/// One MQTT 3.1.1 connection (clean session, as paho's default), its received messages in order.
pub struct Link {
    pub client: AsyncClient,
    pub id: String,
    rx: mpsc::UnboundedReceiver<Msg>,
    subacks: mpsc::UnboundedReceiver<()>,
    _task: JoinSet<()>,
}

impl Link {
    pub async fn connect(port: u16, id: &str, will: Option<LastWill>) -> Self {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(60)).set_clean_session(true);
        if let Some(will) = will {
            opts.set_last_will(will);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subacks) = mpsc::unbounded_channel();
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
        let mut task = JoinSet::new();
        task.spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = conn_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, conn_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{id} could not connect"));
        Self {
            client,
            id: id.to_owned(),
            rx,
            subacks,
            _task: task,
        }
    }

    /// Subscribe and wait for the SubAck (the originals subscribe in `on_connect`, before they publish).
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        tokio::time::timeout(WAIT, self.subacks.recv())
            .await
            .unwrap_or_else(|_| panic!("no SubAck for {filter}"));
    }

    pub async fn publish(&self, topic: &str, qos: QoS, payload: &Value) {
        self.client
            .publish(topic, qos, false, serde_json::to_vec(payload).unwrap())
            .await
            .unwrap();
    }

    pub async fn publish_raw(&self, topic: &str, qos: QoS, payload: Vec<u8>) {
        self.client.publish(topic, qos, false, payload).await.unwrap();
    }

    /// The next message, waiting at most `bound` (the client's own timeout).
    pub async fn next(&mut self, bound: Duration) -> Option<Msg> {
        tokio::time::timeout(bound, self.rx.recv()).await.ok().flatten()
    }

    /// The next message before `deadline`.
    pub async fn next_before(&mut self, deadline: Instant) -> Option<Msg> {
        self.next(deadline.saturating_duration_since(Instant::now())).await
    }
}

/// Connect, publish one message, disconnect (what the pygame maze does for every state, with paho's
/// `publish.single`): returns once the DISCONNECT is written, and closes the socket then, as paho does after writing
/// a DISCONNECT (the server need not close it: MQTT 3.1.1 §3.14.4 makes that the client's duty). TCP delivers the
/// PUBLISH before the DISCONNECT and the close.
pub async fn publish_once(port: u16, topic: &str, qos: QoS, payload: &Value) {
    let mut opts = MqttOptions::new(format!("paho-{}", hex(12)), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(opts, 8);
    client
        .publish(topic, qos, false, serde_json::to_vec(payload).unwrap())
        .await
        .unwrap();
    client.disconnect().await.unwrap();
    let done = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    // Dropping the event loop closes the socket.
    drop(eventloop);
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("one-shot publish to {topic} failed: {e}"),
        Err(_) => panic!("one-shot publish to {topic}: the DISCONNECT was never written"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reply parsing shared by the clients

/// prompt-portal's backend (`PP/backend/app/mqtt.py` 235-253): a JSON object → its `response`, else `content`,
/// else `hint` (the first that is a non-empty string); anything else → the raw text.
pub fn prompt_portal_content(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload).into_owned();
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) {
        for key in ["response", "content", "hint"] {
            if let Some(Value::String(s)) = m.get(key)
                && !s.is_empty()
            {
                return s.clone();
            }
        }
    }
    text
}

/// OwOGPT (`OWO/mqtt_client.py` 48-62, 173-177, `OWO/routers/chat.py` 313-326): the payload is JSON-decoded, or
/// taken as `{"response": text}` when it is not JSON; the content is `response` | `content` | `hint` of an object;
/// JSON that is not an object, or an object lacking those keys, becomes "(no response)".
pub fn owogpt_content(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload).into_owned();
    let data = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!({ "response": text }));
    match data {
        Value::Object(m) => ["response", "content", "hint"]
            .iter()
            .find_map(|k| match m.get(*k) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "(no response)".to_owned()),
        _ => "(no response)".to_owned(),
    }
}

/// What vllm-sim in echo mode says it saw: `messages=N roles=r,... system=<first 6 words> user=<last user turn>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    pub messages: usize,
    pub roles: String,
    pub system: String,
    pub user: String,
}

impl Echo {
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("messages=")?;
        let (n, rest) = rest.split_once(" roles=")?;
        let (roles, rest) = rest.split_once(" system=")?;
        let (system, user) = rest.split_once(" user=")?;
        Some(Self {
            messages: n.parse().ok()?,
            roles: roles.to_owned(),
            system: system.to_owned(),
            user: user.to_owned(),
        })
    }

    pub fn of(text: &str) -> Self {
        Self::parse(text).unwrap_or_else(|| panic!("not an echo reply: {text:?}"))
    }
}

/// The first six words of a prompt, as the echo shows a system prompt.
pub fn six_words(prompt: &str) -> String {
    prompt.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------------------------
// Chat parameters

/// The optional generation fields the chat clients send (camelCase on the wire).
#[derive(Debug, Clone, Default)]
pub struct ChatParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
    pub system_prompt: Option<String>,
}

impl ChatParams {
    fn add_to(&self, payload: &mut Map<String, Value>) {
        if let Some(t) = self.temperature {
            payload.insert("temperature".into(), json!(t));
        }
        if let Some(p) = self.top_p {
            payload.insert("topP".into(), json!(p));
        }
        if let Some(n) = self.max_tokens {
            payload.insert("maxTokens".into(), json!(n));
        }
        if let Some(s) = &self.system_prompt {
            payload.insert("systemPrompt".into(), json!(s));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// llama3/deployment/vllm_test_client.py (HEAD)

/// Per reply (vllm_test_client.py 362-370).
pub const TEST_CLIENT_REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Minimum interval between two requests (vllm_test_client.py 29).
pub const TEST_CLIENT_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The interactive test client: publishes `{p}/user_input` at QoS 0 with `sessionId, message, replyTopic,
/// clientId, requestId` (+ optional params); subscribes `{p}/assistant_response/{sid}/{clientId}/#` and, per
/// request, the exact `…/{sid}/{clientId}/{requestId}`; accepts a message only with ≥ 5 topic segments, segment 3
/// equal to its clientId, deduplicated by segment 4 (its own overlapping subscriptions may deliver a reply twice);
/// replies are plain text; `clear` is local only (the server session goes on).
pub struct VllmTestClient {
    pub link: Link,
    pub project: String,
    pub session_id: String,
    pub client_id: String,
    answered: Vec<String>,
    last_sent: Option<Instant>,
    /// Copies of already-answered requests (dropped by the original's dedupe).
    pub duplicates: Vec<Msg>,
    /// Messages the original would not take as a reply to anything.
    pub extras: Vec<Msg>,
    /// The replies it accepted, in order.
    pub replies: Vec<Msg>,
    /// The local transcript (`clear` empties it).
    pub transcript: Vec<(String, String)>,
}

impl VllmTestClient {
    pub async fn start(port: u16, project: &str) -> Self {
        let client_id = format!("vllm-test-{}", hex(8));
        let session_id = format!("session-{}", hex(8));
        let mut link = Link::connect(port, &client_id, None).await;
        link.subscribe(
            &format!("{project}/assistant_response/{session_id}/{client_id}/#"),
            QoS::AtLeastOnce,
        )
        .await;
        Self {
            link,
            project: project.to_owned(),
            session_id,
            client_id,
            answered: Vec::new(),
            last_sent: None,
            duplicates: Vec::new(),
            extras: Vec::new(),
            replies: Vec::new(),
            transcript: Vec::new(),
        }
    }

    /// The `clear` command: local only.
    pub fn clear(&mut self) {
        self.transcript.clear();
    }

    /// Send `message` and wait (at most 60 s) for its reply; `None` on timeout.
    pub async fn ask(&mut self, message: &str, params: &ChatParams) -> Option<String> {
        let request_id = hex(12);
        let (p, sid, cid) = (&self.project, &self.session_id, &self.client_id);
        let reply_topic = format!("{p}/assistant_response/{sid}/{cid}/{request_id}");
        self.link.subscribe(&reply_topic, QoS::AtLeastOnce).await;
        let mut payload = Map::new();
        payload.insert("sessionId".into(), json!(sid));
        payload.insert("message".into(), json!(message));
        payload.insert("replyTopic".into(), json!(reply_topic));
        payload.insert("clientId".into(), json!(cid));
        payload.insert("requestId".into(), json!(request_id));
        params.add_to(&mut payload);
        // The client's own pacing: a request at most every 100 ms.
        if let Some(last) = self.last_sent {
            tokio::time::sleep_until((last + TEST_CLIENT_MIN_INTERVAL).into()).await;
        }
        self.last_sent = Some(Instant::now());
        self.link
            .publish(&format!("{p}/user_input"), QoS::AtMostOnce, &Value::Object(payload))
            .await;
        let deadline = Instant::now() + TEST_CLIENT_REPLY_TIMEOUT;
        while let Some(m) = self.link.next_before(deadline).await {
            let seg = m.segments();
            if seg.len() < 5 || seg[3] != self.client_id {
                self.extras.push(m);
                continue;
            }
            let rid = seg[4].to_owned();
            if self.answered.contains(&rid) {
                self.duplicates.push(m);
            } else if rid == request_id {
                self.answered.push(rid);
                let text = m.text();
                self.transcript.push((message.to_owned(), text.clone()));
                self.replies.push(m);
                return Some(text);
            } else {
                self.extras.push(m);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------------------------
// llama3/KG-LLM-NEW/kg_llm_new/llm/client.py (HEAD)

pub const KG_REPLY_TIMEOUT: Duration = Duration::from_secs(120);
pub const KG_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The knowledge-graph client: one fixed session for all its questions; publishes `{p}/user_input` at QoS 0 with
/// `replyTopic={p}/assistant_response/{sid}/{clientId}/{requestId}`; subscribes `…/{sid}/{clientId}/#` at QoS 1;
/// the request id of a reply is its topic's last segment; plain text; 120 s per question.
pub struct KgClient {
    pub link: Link,
    pub project: String,
    pub session_id: String,
    pub client_id: String,
    pending: Vec<String>,
    last_sent: Option<Instant>,
    pub answers: HashMap<String, String>,
    pub extras: Vec<Msg>,
}

impl KgClient {
    pub async fn start(port: u16, project: &str) -> Self {
        let client_id = format!("kg-llm-{}", hex(8));
        let session_id = format!("kg-{}", hex(8));
        let mut link = Link::connect(port, &client_id, None).await;
        link.subscribe(
            &format!("{project}/assistant_response/{session_id}/{client_id}/#"),
            QoS::AtLeastOnce,
        )
        .await;
        Self {
            link,
            project: project.to_owned(),
            session_id,
            client_id,
            pending: Vec::new(),
            last_sent: None,
            answers: HashMap::new(),
            extras: Vec::new(),
        }
    }

    /// Publish a question without waiting for its answer (its worker threads ask concurrently); its request id.
    pub async fn send(&mut self, question: &str, system_prompt: Option<&str>) -> String {
        let request_id = hex(16);
        let (p, sid, cid) = (&self.project, &self.session_id, &self.client_id);
        let mut payload = json!({
            "sessionId": sid,
            "message": question,
            "replyTopic": format!("{p}/assistant_response/{sid}/{cid}/{request_id}"),
            "clientId": cid,
            "requestId": request_id,
        });
        if let Some(s) = system_prompt {
            payload["systemPrompt"] = json!(s);
        }
        if let Some(last) = self.last_sent {
            tokio::time::sleep_until((last + KG_MIN_INTERVAL).into()).await;
        }
        self.last_sent = Some(Instant::now());
        self.link
            .publish(&format!("{p}/user_input"), QoS::AtMostOnce, &payload)
            .await;
        self.pending.push(request_id.clone());
        request_id
    }

    /// Wait (each at most 120 s) until every pending question is answered; false on a timeout.
    pub async fn wait_all(&mut self) -> bool {
        while !self.pending.is_empty() {
            let Some(m) = self.link.next(KG_REPLY_TIMEOUT).await else {
                return false;
            };
            let rid = m.topic.rsplit('/').next().unwrap_or_default().to_owned();
            if let Some(i) = self.pending.iter().position(|p| *p == rid) {
                self.pending.remove(i);
                self.answers.insert(rid, m.text());
            } else {
                self.extras.push(m);
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------------------------
// llama3/llamacppWeb/static/js/app.js@be63f70 (the llama.cpp web chat; mqtt.js over WebSockets)

pub const WEB_APP_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The llama.cpp web chat: publishes `{p}/user_input` (mqtt.js default QoS 0) with `{sessionId, message, project,
/// temperature, topP, maxTokens, replyTopic={p}/assistant_response/{sid}, systemPrompt?}`; subscribes
/// `{p}/assistant_response/{sid}`; takes a message whose topic contains `assistant_response` and its session id,
/// JSON-decoded when it parses, else the text; 60 s. (The original speaks MQTT over WebSockets; the broker carries
/// the same packets over TCP here.) The earlier `vllm_test_client.py` versions (`0ed67e0`..`a27639e`) put the same
/// `replyTopic` on the wire, without `project`.
pub struct WebChatApp {
    pub link: Link,
    pub project: String,
    pub session_id: String,
    pub extras: Vec<Msg>,
}

impl WebChatApp {
    pub async fn start(port: u16, project: &str) -> Self {
        let session_id = format!("web-{}", hex(10));
        let mut link = Link::connect(port, &format!("mqttjs_{}", hex(8)), None).await;
        link.subscribe(&format!("{project}/assistant_response/{session_id}"), QoS::AtMostOnce)
            .await;
        Self {
            link,
            project: project.to_owned(),
            session_id,
            extras: Vec::new(),
        }
    }

    /// Send and wait (60 s) for the reply: JSON when it parses, else the text.
    pub async fn send(&mut self, message: &str, system_prompt: Option<&str>) -> Option<Result<Value, String>> {
        let (p, sid) = (&self.project, &self.session_id);
        let mut payload = json!({
            "sessionId": sid,
            "message": message,
            "project": p,
            "temperature": 0.7,
            "topP": 0.9,
            "maxTokens": 512,
            "replyTopic": format!("{p}/assistant_response/{sid}"),
        });
        if let Some(s) = system_prompt {
            payload["systemPrompt"] = json!(s);
        }
        self.link
            .publish(&format!("{p}/user_input"), QoS::AtMostOnce, &payload)
            .await;
        let deadline = Instant::now() + WEB_APP_REPLY_TIMEOUT;
        while let Some(m) = self.link.next_before(deadline).await {
            if m.topic.contains("assistant_response") && m.topic.contains(sid.as_str()) {
                return Some(serde_json::from_slice(&m.payload).map_err(|_| m.text()));
            }
            self.extras.push(m);
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------------------------
// prompt-portal backend PP/backend/app/mqtt.py@e684f8f (chat for ChatStudio, and the maze bridge)

/// `publish_chat`'s default timeout (mqtt.py).
pub const PP_CHAT_TIMEOUT: Duration = Duration::from_secs(45);
/// The timeout the chatbot router passes (chatbot.py 431, 675).
pub const PP_CHATBOT_TIMEOUT: Duration = Duration::from_secs(90);

/// How prompt-portal matched a reply to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// The request id in the topic.
    RequestId,
    /// The oldest pending request of the session named by the topic (the fallback).
    Fifo,
}

#[derive(Debug, Clone)]
pub struct PpReply {
    pub content: String,
    pub matched_by: MatchedBy,
    pub topic: String,
}

struct PpPending {
    request_id: String,
    session_id: String,
}

/// The prompt-portal backend's MQTT client: subscribes `prompt_portal/assistant_response/#`, the base topic
/// `prompt_portal/assistant_response` and `maze/hint/+`. Chat requests go to `prompt_portal/user_input` at QoS 1
/// with `sessionId:"user{id}-{10hex}"` and `replyTopic=…/{sid}/{clientId}/{requestId}`; a reply is matched by the
/// request id in its topic, else to the oldest pending request of its session; its content is
/// `response`|`content`|`hint` of a JSON object, else the raw text. Hints (`maze/hint/{sid}`) are stored as the
/// session's last hint: a JSON object as is, anything else as `{"raw": text}`, plus a `timestamp`; only the
/// latest per session survives (the browser polls it every 500 ms).
pub struct PromptPortalBackend {
    pub link: Link,
    pub client_id: String,
    pending: VecDeque<PpPending>,
    /// `LAST_HINTS`: the latest hint per session.
    pub last_hints: HashMap<String, Value>,
    /// Every hint message in arrival order: (session, stored value).
    pub hint_log: Vec<(String, Value)>,
    /// Replies that matched no pending request.
    pub extras: Vec<Msg>,
}

impl PromptPortalBackend {
    pub async fn start(port: u16) -> Self {
        let client_id = format!("prompt-portal-backend-{}", hex(8));
        let mut link = Link::connect(port, &client_id, None).await;
        link.subscribe("maze/hint/+", QoS::AtLeastOnce).await;
        link.subscribe("prompt_portal/assistant_response/#", QoS::AtLeastOnce)
            .await;
        link.subscribe("prompt_portal/assistant_response", QoS::AtLeastOnce)
            .await;
        Self {
            link,
            client_id,
            pending: VecDeque::new(),
            last_hints: HashMap::new(),
            hint_log: Vec::new(),
            extras: Vec::new(),
        }
    }

    /// The chat session id of prompt-portal user `user_id` (chatbot.py 416-431).
    pub fn chat_session(user_id: u32) -> String {
        format!("user{user_id}-{}", hex(10))
    }

    /// `send_chat_message`: publish and wait at most `timeout` for the reply; `None` on timeout.
    pub async fn chat(
        &mut self,
        session_id: &str,
        message: &str,
        params: &ChatParams,
        timeout: Duration,
    ) -> Option<PpReply> {
        let request_id = hex(12);
        let reply_topic = format!(
            "prompt_portal/assistant_response/{session_id}/{}/{request_id}",
            self.client_id
        );
        let mut payload = Map::new();
        payload.insert("sessionId".into(), json!(session_id));
        payload.insert("message".into(), json!(message));
        params.add_to(&mut payload);
        payload.insert("requestId".into(), json!(request_id));
        payload.insert("clientId".into(), json!(self.client_id));
        payload.insert("replyTopic".into(), json!(reply_topic));
        self.pending.push_back(PpPending {
            request_id: request_id.clone(),
            session_id: session_id.to_owned(),
        });
        self.link
            .publish("prompt_portal/user_input", QoS::AtLeastOnce, &Value::Object(payload))
            .await;
        let deadline = Instant::now() + timeout;
        while let Some(m) = self.link.next_before(deadline).await {
            if let Some(reply) = self.on_message(m)
                && self.pending.iter().all(|p| p.request_id != request_id)
            {
                return Some(reply);
            }
        }
        self.pending.retain(|p| p.request_id != request_id);
        None
    }

    /// `_on_message`: a hint, or a chat reply (returned when it resolved a pending request).
    pub fn on_message(&mut self, m: Msg) -> Option<PpReply> {
        let seg = m.segments();
        if seg.len() == 3 && seg[0] == "maze" && seg[1] == "hint" {
            let session = seg[2].to_owned();
            let mut value = match m.json_object() {
                Some(o) => Value::Object(o),
                None => json!({ "raw": m.text() }),
            };
            value["timestamp"] = json!(now_secs());
            self.last_hints.insert(session.clone(), value.clone());
            self.hint_log.push((session, value));
            return None;
        }
        let by_id = (seg.len() >= 5)
            .then(|| self.pending.iter().position(|p| p.request_id == seg[4]))
            .flatten();
        let (index, matched_by) = match by_id {
            Some(i) => (Some(i), MatchedBy::RequestId),
            None => {
                let session = seg.get(2).copied();
                (
                    self.pending.iter().position(|p| Some(p.session_id.as_str()) == session),
                    MatchedBy::Fifo,
                )
            }
        };
        let Some(index) = index else {
            self.extras.push(m);
            return None;
        };
        self.pending.remove(index);
        Some(PpReply {
            content: prompt_portal_content(&m.payload),
            matched_by,
            topic: m.topic,
        })
    }

    /// The next hint stored, waiting at most `bound` (chat replies arriving meanwhile are extras).
    pub async fn next_hint(&mut self, bound: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + bound;
        let before = self.hint_log.len();
        while self.hint_log.len() == before {
            let m = self.link.next_before(deadline).await?;
            if self.on_message(m).is_some() {
                panic!("a chat reply resolved a request nobody made");
            }
        }
        self.hint_log.last().cloned()
    }
}

impl PromptPortalBackend {
    /// `publish_template_update` of the chat (mqtt.py 201-225): to `MQTT_TOPIC_TEMPLATE`, whose config default is
    /// `maze/template` (config.py 25), at QoS 1 with `{sessionId, systemPrompt, template:{content}, reset:false}`.
    pub async fn publish_chat_template(&self, session_id: &str, system_prompt: &str) {
        let body = json!({
            "sessionId": session_id,
            "systemPrompt": system_prompt,
            "template": {"content": system_prompt},
            "reset": false,
        });
        self.link.publish("maze/template", QoS::AtLeastOnce, &body).await;
    }
}

/// A prompt template of prompt-portal (`models.PromptTemplate`).
#[derive(Debug, Clone)]
pub struct Template {
    pub title: String,
    pub content: String,
    pub version: u32,
    pub user_id: u32,
}

/// The maze bridge (`PP/backend/app/routers/mqtt_bridge.py@e684f8f`) on top of [`PromptPortalBackend`].
impl PromptPortalBackend {
    /// `publish_state` (bridge 116-131): the browser's state plus `sessionId` and `prompt_template`, to
    /// `maze/state` at QoS 0.
    pub async fn publish_state(&self, session_id: &str, state: &Value, template: &Template) {
        let mut state = state.clone();
        state["sessionId"] = json!(session_id);
        state["prompt_template"] = json!({
            "title": template.title,
            "content": template.content,
            "version": template.version,
            "user_id": template.user_id,
        });
        self.link.publish("maze/state", QoS::AtMostOnce, &state).await;
    }

    /// `publish_template` (bridge 492-537): `maze/template` (or `maze/template/{sid}` when a session is given) at
    /// QoS 1 with `{template, title, version, user_id, reset, max_breaks}`.
    pub async fn publish_template(&self, template: &Template, session_id: Option<&str>, reset: bool) {
        let topic = match session_id {
            Some(sid) => format!("maze/template/{sid}"),
            None => "maze/template".to_owned(),
        };
        let body = json!({
            "template": template.content,
            "title": template.title,
            "version": template.version,
            "user_id": template.user_id,
            "reset": reset,
            "max_breaks": Value::Null,
        });
        self.link.publish(&topic, QoS::AtLeastOnce, &body).await;
    }
}

/// The chatbot router fake-streams the single reply as SSE chunks of 10 characters (chatbot.py 660-684).
pub fn sse_chunks(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(10).map(|c| c.iter().collect()).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The web game (PP/frontend/src/pages/WebGame.tsx@e684f8f) state loop

/// The web game's default `mqttSendRate` (WebGame 88-93; 0.5 s to 60 s).
pub const WEB_GAME_SEND_RATE_ORIGINAL: Duration = Duration::from_secs(3);
/// The rate the tests run the loop at: the original's 3 s shortened so that a few iterations take well under a
/// second of real time; what the server sees is the same sequence of states.
pub const WEB_GAME_SEND_RATE: Duration = Duration::from_millis(150);

/// The state the web game sends on tick `tick`: the player walks east one cell per tick from (1,1).
pub fn web_game_state(tick: u32, map_size: usize) -> Value {
    let n = map_size;
    let map: Vec<Vec<u8>> = (0..n)
        .map(|y| {
            (0..n)
                .map(|x| u8::from(!(x == 0 || y == 0 || x == n - 1 || y == n - 1)))
                .collect()
        })
        .collect();
    json!({
        "player_pos": [1 + tick, 1],
        "exit_pos": [n - 2, n - 2],
        "visible_map": map,
        "germs": [{"x": 3, "y": 2}],
        "oxygenPellets": [{"x": 2, "y": 3}],
        "oxygenCollected": tick,
        "tick": tick,
        "health": 100,
        "oxygen": 90 - tick,
        "timestamp": now_secs(),
    })
}

/// The player position a maze hint was generated from: the hint text is the echo of the engine's input, whose
/// user turn is the state converted to JSON (`{player_pos, exit_pos, visible_map, ...}`, L:1498-1535). Accepts
/// `[x, y]` and `{"x":..,"y":..}`.
pub fn hint_player_pos(hint_text: &str) -> Option<(i64, i64)> {
    let at = hint_text.find("\"player_pos\"")?;
    let rest = hint_text[at + "\"player_pos\"".len()..].trim_start();
    let rest = rest.strip_prefix(':')?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    match values.next()?.ok()? {
        Value::Array(a) if a.len() == 2 => Some((a[0].as_i64()?, a[1].as_i64()?)),
        Value::Object(o) => Some((o.get("x")?.as_i64()?, o.get("y")?.as_i64()?)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The pygame maze: llama3/Hackathon/ui.py + maze_lam_client.py (HEAD)

/// The pygame game sends a state when the player moved and 10 s passed since the last one, or every 30 s
/// (ui.py 285-315): far longer than a hint takes, so each state's hint is in before the next state.
pub const PYGAME_MIN_STATE_INTERVAL_ORIGINAL: Duration = Duration::from_secs(10);

/// The pygame maze grid (`Maze(21, 15)`): 15 rows of 21 cells, walls (1) around, floor (0) inside.
pub fn pygame_grid() -> Vec<Vec<u8>> {
    (0..15)
        .map(|y| {
            (0..21)
                .map(|x| u8::from(x == 0 || y == 0 || x == 20 || y == 14))
                .collect()
        })
        .collect()
}

/// `GameScreen.send_lam_state`: a fresh connection per state, `maze/state` at QoS 0 with
/// `{sessionId, player_pos, exit_pos, visible_map}` (tuples become JSON arrays), then disconnect.
pub async fn pygame_send_state(port: u16, session_id: &str, player_pos: (i64, i64), exit_pos: (i64, i64)) {
    let state = json!({
        "sessionId": session_id,
        "player_pos": [player_pos.0, player_pos.1],
        "exit_pos": [exit_pos.0, exit_pos.1],
        "visible_map": pygame_grid(),
    });
    publish_once(port, "maze/state", QoS::AtMostOnce, &state).await;
}

/// `MazeLAMHintReceiver` (ui.py 131-158) / `MazeLAMClient` (maze_lam_client.py): subscribes `maze/hint/{sid}` at
/// QoS 0 (paho's default), JSON only (a non-JSON message is logged and dropped); reads `hint` (default ""),
/// `path` (default []), `break_wall` (as a tuple, when present) and `breaks_remaining` (kept when absent).
pub struct PygameHintReceiver {
    pub link: Link,
    pub session_id: String,
    pub hint: String,
    pub path: Vec<Value>,
    pub break_wall: Option<Vec<Value>>,
    pub breaks_remaining: i64,
    /// What the original drops: non-JSON payloads, and JSON that is not an object (`data.get` would raise).
    pub dropped: Vec<Msg>,
}

impl PygameHintReceiver {
    pub fn new_session_id() -> String {
        format!("maze-{}", hex(8))
    }

    pub async fn start(port: u16, session_id: &str) -> Self {
        let mut link = Link::connect(port, &format!("maze-hint-{session_id}"), None).await;
        link.subscribe(&format!("maze/hint/{session_id}"), QoS::AtMostOnce)
            .await;
        Self {
            link,
            session_id: session_id.to_owned(),
            hint: String::new(),
            path: Vec::new(),
            break_wall: None,
            breaks_remaining: 0,
            dropped: Vec::new(),
        }
    }

    /// Wait (the game has no timeout; bounded by `bound`) for the next guidance it accepts; returns it.
    pub async fn next_guidance(&mut self, bound: Duration) -> Option<Map<String, Value>> {
        let deadline = Instant::now() + bound;
        loop {
            let m = self.link.next_before(deadline).await?;
            let Some(data) = m.json_object() else {
                self.dropped.push(m);
                continue;
            };
            self.hint = data.get("hint").and_then(Value::as_str).unwrap_or_default().to_owned();
            self.path = data.get("path").and_then(Value::as_array).cloned().unwrap_or_default();
            self.break_wall = data.get("break_wall").map(|b| match b {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            });
            if let Some(n) = data.get("breaks_remaining").and_then(Value::as_i64) {
                self.breaks_remaining = n;
            }
            return Some(data);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// llama3/Meta-LLAMA3/lam_mqtt_hackathon_test.py (HEAD)

/// The tester's spacing between its three states (1 s); the tests shorten it to [`LAM_TEST_SPACING`].
pub const LAM_TEST_SPACING_ORIGINAL: Duration = Duration::from_secs(1);
pub const LAM_TEST_SPACING: Duration = Duration::from_millis(100);
/// `wait_for_response(timeout=15)` in `run_comprehensive_test` (30 s default).
pub const LAM_TEST_RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// The LAM hackathon tester: a publisher and a subscriber connection; the subscriber takes `maze/hint/{sid}`
/// (`sid = "test-{8hex}"`, QoS 0); the publisher sends `maze/state` at QoS 0 as pretty-printed JSON (`indent=2`)
/// `{sessionId, player_pos:[1,1], exit_pos:[5,5], visible_map (7x7), test_number, timestamp}`; every message is
/// recorded and shown JSON-decoded when it parses, else raw.
pub struct LamTester {
    pub publisher: Link,
    pub subscriber: Link,
    pub session_id: String,
    pub messages_received: Vec<Msg>,
}

impl LamTester {
    pub async fn start(port: u16) -> Self {
        let session_id = format!("test-{}", hex(8));
        let publisher = Link::connect(port, &format!("test-publisher-{}", hex(8)), None).await;
        let mut subscriber = Link::connect(port, &format!("test-subscriber-{}", hex(8)), None).await;
        subscriber
            .subscribe(&format!("maze/hint/{session_id}"), QoS::AtMostOnce)
            .await;
        Self {
            publisher,
            subscriber,
            session_id,
            messages_received: Vec::new(),
        }
    }

    /// `send_test_state(test_number)`; `player_pos` is [1, 1] in the original (other values mark a state).
    pub async fn send_test_state(&self, test_number: u32, player_pos: (i64, i64)) {
        let state = json!({
            "sessionId": self.session_id,
            "player_pos": [player_pos.0, player_pos.1],
            "exit_pos": [5, 5],
            "visible_map": [
                [0, 0, 0, 0, 0, 0, 0],
                [0, 1, 1, 0, 1, 1, 0],
                [0, 1, 0, 0, 0, 1, 0],
                [0, 1, 1, 1, 1, 1, 0],
                [0, 0, 0, 0, 0, 1, 0],
                [0, 1, 1, 1, 1, 1, 0],
                [0, 0, 0, 0, 0, 0, 0]
            ],
            "test_number": test_number,
            "timestamp": format!("2025-10-21T12:00:{test_number:02}.000000"),
        });
        let pretty = serde_json::to_vec_pretty(&state).unwrap();
        self.publisher.publish_raw("maze/state", QoS::AtMostOnce, pretty).await;
    }

    /// `wait_for_response(timeout)`: true once one more message than before arrived.
    pub async fn wait_for_response(&mut self, timeout: Duration) -> bool {
        match self.subscriber.next(timeout).await {
            Some(m) => {
                self.messages_received.push(m);
                true
            }
            None => false,
        }
    }

    /// `print_status`: each message JSON-decoded when it parses, else its raw text.
    pub fn shown(&self) -> Vec<Result<Value, String>> {
        self.messages_received
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).map_err(|_| m.text()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// OwOGPT backend: OWO/mqtt_client.py + OWO/providers/mqtt_provider.py (HEAD)

pub const OWO_CHAT_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Debug, Clone)]
pub struct OwoReply {
    pub request_id: String,
    pub raw: Value,
    /// What the chat router shows (`(no response)` when the reply has no content).
    pub content: String,
}

/// OwOGPT's backend: client id `{MQTT_CLIENT_ID}_{8hex}`, LWT `prompt_portal/status`
/// `{"clientId","status":"offline"}` QoS 1, heartbeat `prompt_portal/heartbeat/{clientId}` `{"ts"}` QoS 0;
/// subscribes `prompt_portal/assistant_response/#` QoS 1; chat to `prompt_portal/user_input` QoS 1 with
/// `{sessionId, message, systemPrompt?, temperature?, topP?, maxTokens?, images?, requestId, clientId,
/// replyTopic=…/{sid}/{clientId}/{requestId}}`; a reply's request id is its JSON `requestId`/`request_id`, else the
/// topic's last segment (≥ 5 segments); 45 s. Persona change: `prompt_portal/template`
/// `{sessionId, systemPrompt, template:{content}, reset}` QoS 1; session delete:
/// `prompt_portal/delete_session/{sid}` `{sessionId, target}` QoS 1.
pub struct OwoGpt {
    pub link: Link,
    pub client_id: String,
    /// Messages under its wildcard that resolved nothing (the original ignores them).
    pub unresolved: Vec<Msg>,
}

impl OwoGpt {
    /// A conversation's session key.
    pub fn new_session_key() -> String {
        format!("owo-conv-{}", hex(12))
    }

    pub async fn start(port: u16) -> Self {
        let client_id = format!("owogpt-backend_{}", hex(8));
        let will = LastWill::new(
            "prompt_portal/status",
            serde_json::to_vec(&json!({"clientId": client_id, "status": "offline"})).unwrap(),
            QoS::AtLeastOnce,
            false,
        );
        let mut link = Link::connect(port, &client_id, Some(will)).await;
        link.subscribe("prompt_portal/assistant_response/#", QoS::AtLeastOnce)
            .await;
        Self {
            link,
            client_id,
            unresolved: Vec::new(),
        }
    }

    /// One beat of the heartbeat thread (it beats every 30 s while connected).
    pub async fn heartbeat(&self) {
        self.link
            .publish(
                &format!("prompt_portal/heartbeat/{}", self.client_id),
                QoS::AtMostOnce,
                &json!({"ts": now_secs()}),
            )
            .await;
    }

    /// `MQTTProvider.chat` → `publish_chat`; `None` on the 45 s timeout.
    pub async fn chat(
        &mut self,
        session_key: &str,
        message: &str,
        params: &ChatParams,
        images: &[&str],
    ) -> Option<OwoReply> {
        let mut payload = Map::new();
        payload.insert("sessionId".into(), json!(session_key));
        payload.insert("message".into(), json!(message));
        if let Some(s) = params.system_prompt.as_deref().filter(|s| !s.is_empty()) {
            payload.insert("systemPrompt".into(), json!(s));
        }
        ChatParams {
            system_prompt: None,
            ..params.clone()
        }
        .add_to(&mut payload);
        if !images.is_empty() {
            payload.insert("images".into(), json!(images));
        }
        let request_id = hex(16);
        payload.insert("requestId".into(), json!(request_id));
        payload.insert("clientId".into(), json!(self.client_id));
        payload.insert(
            "replyTopic".into(),
            json!(format!(
                "prompt_portal/assistant_response/{session_key}/{}/{request_id}",
                self.client_id
            )),
        );
        self.link
            .publish("prompt_portal/user_input", QoS::AtLeastOnce, &Value::Object(payload))
            .await;
        let deadline = Instant::now() + OWO_CHAT_TIMEOUT;
        while let Some(m) = self.link.next_before(deadline).await {
            let text = m.text();
            let data = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!({ "response": text }));
            let from_payload = data
                .get("requestId")
                .or_else(|| data.get("request_id"))
                .and_then(|v| v.as_str().map(str::to_owned))
                .filter(|s| !s.is_empty());
            let seg = m.segments();
            let from_topic = (seg.len() >= 5).then(|| seg[seg.len() - 1].to_owned());
            if from_payload.or(from_topic).as_deref() == Some(request_id.as_str()) {
                return Some(OwoReply {
                    request_id,
                    content: owogpt_content(&m.payload),
                    raw: data,
                });
            }
            self.unresolved.push(m);
        }
        None
    }

    /// `publish_template_update` (persona change).
    pub async fn update_template(&self, session_key: &str, system_prompt: &str, reset: bool) {
        let payload = json!({
            "sessionId": session_key,
            "systemPrompt": system_prompt,
            "template": {"content": system_prompt},
            "reset": reset,
        });
        self.link
            .publish("prompt_portal/template", QoS::AtLeastOnce, &payload)
            .await;
    }

    /// `publish_session_delete`.
    pub async fn delete_session(&self, session_key: &str) {
        let payload = json!({"sessionId": session_key, "target": session_key});
        self.link
            .publish(
                &format!("prompt_portal/delete_session/{session_key}"),
                QoS::AtLeastOnce,
                &payload,
            )
            .await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// An observer for "nothing extra under the wildcard"

/// A separate connection subscribed once to `filter`: every message published under it arrives exactly once, so
/// it shows server-side duplicates that a client's own dedupe would hide.
pub struct Watch {
    pub link: Link,
    pub seen: Vec<Msg>,
}

impl Watch {
    pub async fn start(port: u16, filter: &str) -> Self {
        let mut link = Link::connect(port, &format!("watch-{}", hex(8)), None).await;
        link.subscribe(filter, QoS::AtLeastOnce).await;
        Self { link, seen: Vec::new() }
    }

    /// Messages up to and including the first on `topic` whose text satisfies `last` (the marker's reply).
    pub async fn until(&mut self, topic: &str, last: impl Fn(&str) -> bool) -> Vec<Msg> {
        let mut got = Vec::new();
        loop {
            let m = self
                .link
                .next(WAIT)
                .await
                .unwrap_or_else(|| panic!("the watcher never saw the marker on {topic}; saw {got:?}"));
            self.seen.push(m.clone());
            let done = m.topic == topic && last(&m.text());
            got.push(m);
            if done {
                return got;
            }
        }
    }

    /// The next message, bounded by [`WAIT`].
    pub async fn next(&mut self) -> Msg {
        let m = self.link.next(WAIT).await.expect("the watcher saw nothing");
        self.seen.push(m.clone());
        m
    }
}
