//! The intake: event loop → parse → claim the session ([`SessionStore::claim`], under `--session-owner client`)
//! → [`Admission::admit`] → spawn the session's lane worker, or refuse.
//!
//! The claim comes before admission, on this one task, so a request is bound to its session's owner before it can
//! be queued: of two first requests for a session from different clients, exactly one is admitted.
//!
//! Messages on the control topics (`{p}/template[/sid]`, ...) are handled here too, by [`super::control`].
//!
//! Every refusal is counted and, when a reply topic is known, answered with an `Error: ...` text through the
//! [`Publisher`]. [`overflow_handler`] is the same refusal on the event-loop task, for a message the intake had
//! no room for: parsed just enough to find its reply topic, answered without waiting.
//!
//! Messages on a state project's `{p}/state` take the same path in [`super::state`], with JSON replies and
//! latest-wins admission.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::overflow_state;
use super::worker::{self, Worker};
use crate::admission::{Admission, Admitted, Refusal, Refused};
use crate::config::ProjectCatalog;
use crate::metrics;
use crate::mqtt::eventloop::{Inbound, Overflow};
use crate::mqtt::publisher::Publisher;
use crate::session::owner::resolve_client_id;
use crate::session::{Owner, OwnerMode, OwnerRefusal, SessionKey, SessionStore};
use mqtt_llm_protocol::topics::{ProjectName, control_topic, request_filter_project, state_filter_project};
use mqtt_llm_protocol::wire::{ChatRequest, ReplyTarget, V5Props, WireLimits, parse_request};

/// The intake task, built by [`Bridge::new`](super::Bridge::new) with what it uses.
#[derive(Debug)]
pub struct Intake {
    pub(super) projects: Vec<ProjectName>,
    /// The state projects among `projects`, whose `{p}/state` messages go to [`super::state`].
    pub(super) state_projects: Vec<ProjectName>,
    pub(super) limits: WireLimits,
    /// Where sessions are claimed for their owners.
    pub(super) sessions: SessionStore,
    /// Each project's `reply_prefixes` (where its MQTT 5 Response Topic may point) and session ownership.
    pub(super) catalog: ProjectCatalog,
    pub(super) admission: Admission,
    pub(super) publisher: Publisher,
    /// Lane workers; drained on shutdown.
    pub(super) workers: TaskTracker,
    pub(super) worker: Arc<Worker>,
}

impl Intake {
    /// Run on `tracker` until the event loop's sender is gone or `cancel` fires.
    pub fn spawn(self, inbound: mpsc::Receiver<Inbound>, tracker: &TaskTracker, cancel: CancellationToken) {
        tracker.spawn(self.run(inbound, cancel));
    }

    async fn run(self, mut inbound: mpsc::Receiver<Inbound>, cancel: CancellationToken) {
        loop {
            let msg = tokio::select! {
                msg = inbound.recv() => msg,
                _ = cancel.cancelled() => None,
            };
            let Some(msg) = msg else { break };
            self.handle(msg).await;
        }
    }

    async fn handle(&self, msg: Inbound) {
        if let Some(topic) = control_topic(&msg.topic, &self.projects) {
            return self.control(topic, &msg).await;
        }
        let Some(project) = request_filter_project(&msg.topic, &self.projects).cloned() else {
            if let Some(project) = state_filter_project(&msg.topic, &self.state_projects).cloned() {
                return self.handle_state(project, msg).await;
            }
            tracing::warn!(topic = msg.topic, "message on a topic we do not serve");
            return;
        };
        metrics::request_received(project.as_str());
        let policy = self.catalog.reply_policy(project.as_str());
        let mut request = match parse_request(&project, &msg.payload, &msg.props, &self.limits, policy) {
            Ok(r) => r,
            Err(rejection) => {
                let refusal = Refusal::Invalid(rejection.error);
                refused(&project, rejection.reply.as_ref(), refusal.code());
                if let Some(target) = &rejection.reply {
                    self.publisher.reply(target, refusal.reply_text()).await;
                }
                return;
            }
        };
        if let Some(reason) = request.reply_topic_fallback {
            metrics::reply_topic_fallback(project.as_str(), reason.as_str());
        }
        if let Err(refusal) = self.claim_session(&mut request, &msg.props) {
            // Answered like every refusal, on the request's reply topic. Without a replyTopic of its own that is the
            // session's default topic, where the owner may listen too: it then learns that another client tried.
            refused(&project, Some(&request.reply), refusal.code());
            self.publisher.reply(&request.reply, refusal.reply_text()).await;
            return;
        }
        match self.admission.admit(request) {
            Ok(Admitted::Run(ticket)) => {
                self.workers.spawn(worker::run_lane(Arc::clone(&self.worker), *ticket));
            }
            Ok(Admitted::Queued) => {}
            Err(Refused { refusal, reply }) => {
                refused(&project, Some(&reply), refusal.code());
                let hint = refusal.hints_retry().then(|| self.admission.retry_after());
                self.publisher.refusal(&reply, refusal.reply_text(), hint).await;
            }
        }
    }

    /// Under `client` ownership, resolve who the request speaks for, keep it in `request.client_id` (where the
    /// lane worker reads it to check the session again) and claim the session for it. A refusal changes nothing.
    pub(super) fn claim_session(&self, request: &mut ChatRequest, props: &V5Props) -> Result<(), OwnerRefusal> {
        let mode = self.catalog.session_owner(request.project.as_str());
        if mode == OwnerMode::None {
            return Ok(());
        }
        request.client_id = resolve_client_id(request, props)?;
        let key = SessionKey {
            project: request.project.clone(),
            session: request.session.clone(),
        };
        self.sessions
            .claim(&key, &Owner::of(mode, request.client_id.as_deref()))
    }
}

/// Count a refusal (`reason`: its stable code) and log it; the caller answers it when a reply topic is known.
pub(super) fn refused(project: &ProjectName, reply: Option<&ReplyTarget>, reason: &'static str) {
    metrics::request_rejected(project.as_str(), reason);
    match reply {
        Some(target) => tracing::info!(
            project = project.as_str(),
            reason,
            topic = target.topic,
            "request refused"
        ),
        None => tracing::warn!(project = project.as_str(), reason, "request refused; no reply topic"),
    }
}

/// The event loop's answer to a message the intake had no room for: "overloaded", published without waiting.
/// `catalog` gives each project's reply prefixes, as for the [`Intake`]; `admission` the retry hint.
pub fn overflow_handler(
    projects: Vec<ProjectName>,
    limits: WireLimits,
    catalog: ProjectCatalog,
    admission: Admission,
) -> Overflow {
    let state_projects = catalog.state_projects(&projects);
    Arc::new(move |publisher: &Publisher, msg: Inbound| {
        if let Some(project) = state_filter_project(&msg.topic, &state_projects) {
            return overflow_state(publisher, project, &limits, &catalog, &admission, &msg);
        }
        overflow(publisher, &projects, &limits, &catalog, &admission, msg)
    })
}

fn overflow(
    publisher: &Publisher,
    projects: &[ProjectName],
    limits: &WireLimits,
    catalog: &ProjectCatalog,
    admission: &Admission,
    msg: Inbound,
) {
    if let Some(control) = control_topic(&msg.topic, projects) {
        // Dropped unanswered: the intake, which owns the session store, has no room (the notice would have to wait).
        metrics::control_message(control.project.as_str(), control.action.as_str(), "overloaded");
        tracing::warn!(topic = msg.topic, "overloaded; control message dropped");
        return;
    }
    let Some(project) = request_filter_project(&msg.topic, projects) else {
        return;
    };
    let policy = catalog.reply_policy(project.as_str());
    let reply = match parse_request(project, &msg.payload, &msg.props, limits, policy) {
        Ok(r) => Some(r.reply),
        Err(rejection) => rejection.reply,
    };
    refuse_overflow(publisher, project, reply, &Refusal::Overloaded.reply_text(), admission);
}

/// Count the overload refusal of a message the intake had no room for, and say so on `reply` (without waiting)
/// with the retry hint; `body` is the refusal in the topic's form (plain text, or JSON on a state's hint topic).
pub(super) fn refuse_overflow(
    publisher: &Publisher,
    project: &ProjectName,
    reply: Option<ReplyTarget>,
    body: &str,
    admission: &Admission,
) {
    metrics::request_received(project.as_str());
    metrics::request_rejected(project.as_str(), Refusal::Overloaded.code());
    let Some(target) = reply else {
        tracing::warn!(project = project.as_str(), "overloaded; dropped with no reply topic");
        return;
    };
    if !publisher.try_reply(target, body, Some(admission.retry_after())) {
        tracing::error!("overloaded and cannot even say so");
    }
}
