//! Game states on a state project's `{p}/state` (seed-protocol §1.3, behaviour 11): the intake's path for them, and
//! how their replies are worded.
//!
//! A state takes the chat path with three differences: it is parsed by [`parse_state`] (its user turn is the state
//! in the successor's JSON form, its reply topic `{p}/hint/{sessionId}`); it is admitted latest-wins
//! ([`Admission::admit_latest`]: a newer state of the session replaces one still waiting, which is counted in
//! `mqtt_llm_state_superseded_total` and never answered, because the clients keep only the latest hint); and every
//! reply is a JSON object, since the maze clients parse JSON only: the model's JSON object as it is, other text as
//! `{"hint": text}`, every error or refusal as `{"error": "..."}`. Like a chat exchange, an answered state becomes a
//! turn of the session's history (the state as the user turn, the model's text as the assistant turn), trimmed to
//! the same token budget.

use std::sync::Arc;
use std::time::Duration;

use super::intake::{Intake, refused};
use super::worker;
use crate::admission::{Admission, Admitted, Refusal, Refused};
use crate::config::ProjectCatalog;
use crate::metrics;
use crate::mqtt::eventloop::Inbound;
use crate::mqtt::publisher::Publisher;
use mqtt_llm_protocol::topics::ProjectName;
use mqtt_llm_protocol::wire::state::{error_payload, hint_payload};
use mqtt_llm_protocol::wire::{ChatRequest, RequestKind, WireLimits, parse_state};

impl Intake {
    /// Parse, claim, admit (latest wins) and run or refuse one message received on `{project}/state`.
    pub(super) async fn handle_state(&self, project: ProjectName, msg: Inbound) {
        metrics::request_received(project.as_str());
        let policy = self.catalog.reply_policy(project.as_str());
        let mut request = match parse_state(&project, &msg.payload, &msg.props, &self.limits, policy) {
            Ok(r) => r,
            Err(rejection) => {
                let refusal = Refusal::Invalid(rejection.error);
                refused(&project, rejection.reply.as_ref(), refusal.code());
                if let Some(target) = &rejection.reply {
                    let body = error_payload(&refusal.user_message());
                    self.publisher.json_reply(target, body, None).await;
                }
                return;
            }
        };
        if let Some(reason) = request.reply_topic_fallback {
            metrics::reply_topic_fallback(project.as_str(), reason.as_str());
        }
        if let Err(refusal) = self.claim_session(&mut request, &msg.props) {
            refused(&project, Some(&request.reply), refusal.code());
            let body = error_payload(&refusal.to_string());
            self.publisher.json_reply(&request.reply, body, None).await;
            return;
        }
        let (admitted, superseded) = self.admission.admit_latest(request);
        if superseded > 0 {
            metrics::state_superseded(project.as_str(), superseded);
            tracing::debug!(
                project = project.as_str(),
                superseded,
                "waiting states replaced by a newer one"
            );
        }
        match admitted {
            Ok(Admitted::Run(ticket)) => {
                self.workers.spawn(worker::run_lane(Arc::clone(&self.worker), *ticket));
            }
            Ok(Admitted::Queued) => {}
            Err(Refused { refusal, reply }) => {
                refused(&project, Some(&reply), refusal.code());
                let hint = refusal.hints_retry().then(|| self.admission.retry_after());
                let body = error_payload(&refusal.user_message());
                self.publisher.json_reply(&reply, body, hint).await;
            }
        }
    }
}

/// The worker's final reply: a chat answer as plain text, a state's as a JSON hint ([`hint_payload`]).
pub(super) async fn publish_answer(publisher: &Publisher, req: &ChatRequest, text: String) {
    match req.kind {
        RequestKind::Chat => publisher.reply(&req.reply, text).await,
        RequestKind::State => publisher.json_reply(&req.reply, hint_payload(&text), None).await,
    };
}

/// The worker's error reply: `reply_text` (`Error: ...`) to a chat request, `{"error": user_message}` to a state.
pub(super) async fn publish_failure(
    publisher: &Publisher,
    req: &ChatRequest,
    reply_text: String,
    user_message: &str,
    retry_after: Option<Duration>,
) {
    match req.kind {
        RequestKind::Chat => publisher.refusal(&req.reply, reply_text, retry_after).await,
        RequestKind::State => {
            publisher
                .json_reply(&req.reply, error_payload(user_message), retry_after)
                .await
        }
    };
}

/// The event loop's "overloaded" answer to a state it had no room for (see [`super::intake::overflow_handler`]):
/// `{"error": ...}` on the state's hint topic, published without waiting.
pub(super) fn overflow_state(
    publisher: &Publisher,
    project: &ProjectName,
    limits: &WireLimits,
    catalog: &ProjectCatalog,
    admission: &Admission,
    msg: &Inbound,
) {
    let policy = catalog.reply_policy(project.as_str());
    let reply = match parse_state(project, &msg.payload, &msg.props, limits, policy) {
        Ok(r) => Some(r.reply),
        Err(rejection) => rejection.reply,
    };
    let body = error_payload(&Refusal::Overloaded.user_message());
    super::intake::refuse_overflow(publisher, project, reply, &body, admission);
}
