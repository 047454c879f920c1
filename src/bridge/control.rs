//! Control messages: `{p}/template[/sid]`, `{p}/clear_history[/sid]`, `{p}/delete_session[/sid]` for every served
//! project, handled on the intake task (they change the session store and publish one notice; nothing waits for
//! the engine).
//!
//! Order of checks: the project's `control_topics` (a disabled action is ignored, counted, and gets no notice, as
//! if it were not subscribed); the payload ([`parse_control`]); session ownership (the payload's `clientId`, else
//! the MQTT 5 `clientId` user property; a project-wide action under `client` ownership is refused, since it would
//! touch other clients' sessions); then the store. Every message ends in exactly one counted outcome and, unless
//! disabled, one notice on [`ProjectCatalog::notice_topic`]: `{"hint":"Template updated"}`,
//! `{"hint":"History cleared"}`, `{"hint":"Session deleted"}` or `{"error":"..."}`.

use serde_json::json;

use super::intake::Intake;
use crate::metrics;
use crate::mqtt::eventloop::Inbound;
use crate::session::{Owner, OwnerMode, OwnerRefusal, SessionKey};
use mqtt_llm_protocol::topics::{ALL_SESSIONS, ControlAction, ControlTopic, ProjectName};
use mqtt_llm_protocol::wire::control::{ControlCommand, ControlOp, ControlTarget, notice_session, parse_control};

/// Why a valid control message was not carried out.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Owner(#[from] OwnerRefusal),
    #[error("a project-wide control message cannot be used while sessions belong to their clients")]
    ProjectWideOwned,
}

impl Refused {
    fn code(&self) -> &'static str {
        match self {
            Self::Owner(r) => r.code(),
            Self::ProjectWideOwned => "project_wide_owned",
        }
    }
}

impl Intake {
    /// Handle one message on a control topic of a served project.
    pub(super) async fn control(&self, topic: ControlTopic<'_>, msg: &Inbound) {
        let (project, action) = (topic.project, topic.action);
        if !self.catalog.control_allowed(project.as_str(), action) {
            metrics::control_message(project.as_str(), action.as_str(), "disabled");
            tracing::debug!(
                project = project.as_str(),
                action = action.as_str(),
                "control topic disabled for this project"
            );
            return;
        }
        let cmd = match parse_control(action, topic.suffix, &msg.payload, self.limits.max_payload_bytes) {
            Ok(cmd) => cmd,
            Err(e) => {
                // An oversized payload is not read, not even for its session.
                let readable = msg.payload.len() <= self.limits.max_payload_bytes;
                let suffix = notice_session(topic.suffix, if readable { &msg.payload } else { &[] });
                let suffix = suffix.as_ref().map_or(ALL_SESSIONS, |s| s.as_str());
                self.control_refused(project, action, suffix, e.code(), &e.to_string())
                    .await;
                return;
            }
        };
        let suffix = cmd.target.suffix().to_owned();
        match self.apply(project, &cmd, msg) {
            Ok(hint) => {
                metrics::control_message(project.as_str(), action.as_str(), "ok");
                tracing::info!(
                    project = project.as_str(),
                    action = action.as_str(),
                    target = suffix,
                    "control message applied"
                );
                let topic = self.catalog.notice_topic(project, &suffix);
                self.publisher.notice(topic, &json!({ "hint": hint })).await;
            }
            Err(refused) => {
                self.control_refused(project, action, &suffix, refused.code(), &refused.to_string())
                    .await;
            }
        }
    }

    /// Carry out `cmd`; the notice's hint text.
    fn apply(&self, project: &ProjectName, cmd: &ControlCommand, msg: &Inbound) -> Result<&'static str, Refused> {
        let mode = self.catalog.session_owner(project.as_str());
        let hint = hint(cmd.op.action());
        let session = match &cmd.target {
            ControlTarget::All if mode == OwnerMode::Client => return Err(Refused::ProjectWideOwned),
            ControlTarget::All => {
                let count = match &cmd.op {
                    ControlOp::Template { prompt, reset } => {
                        self.sessions.set_project_template(project, prompt, *reset)
                    }
                    ControlOp::ClearHistory => self.sessions.clear_project(project),
                    ControlOp::DeleteSession => self.sessions.delete_project(project),
                };
                tracing::debug!(project = project.as_str(), sessions = count, "project-wide control");
                metrics::sessions(self.sessions.len());
                return Ok(hint);
            }
            ControlTarget::Session(session) => session,
        };
        let owner = match mode {
            OwnerMode::None => Owner::Unchecked,
            OwnerMode::Client => {
                let client = match (&cmd.client_id, &msg.props.client_id) {
                    (Some(a), Some(b)) if a != b => return Err(OwnerRefusal::ConflictingClientIds.into()),
                    (a, b) => a.as_deref().or(b.as_deref()),
                };
                Owner::of(mode, client)
            }
        };
        let key = SessionKey {
            project: project.clone(),
            session: session.clone(),
        };
        match &cmd.op {
            ControlOp::Template { prompt, reset } => self.sessions.set_template(&key, &owner, prompt, *reset)?,
            ControlOp::ClearHistory => {
                self.sessions.clear(&key, &owner)?;
            }
            ControlOp::DeleteSession => {
                self.sessions.delete(&key, &owner)?;
            }
        }
        metrics::sessions(self.sessions.len());
        Ok(hint)
    }

    async fn control_refused(
        &self,
        project: &ProjectName,
        action: ControlAction,
        suffix: &str,
        code: &'static str,
        error: &str,
    ) {
        metrics::control_message(project.as_str(), action.as_str(), code);
        tracing::info!(
            project = project.as_str(),
            action = action.as_str(),
            reason = code,
            "control message refused"
        );
        let topic = self.catalog.notice_topic(project, suffix);
        self.publisher.notice(topic, &json!({ "error": error })).await;
    }
}

/// The successor's notice texts (L:1600-1613), and one for a deleted session (the successor sent none).
fn hint(action: ControlAction) -> &'static str {
    match action {
        ControlAction::Template => "Template updated",
        ControlAction::ClearHistory => "History cleared",
        ControlAction::DeleteSession => "Session deleted",
    }
}
