//! The intake task: event loop → parse → refuse or admit into the session's lane.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::failure::Refusal;
use super::{Job, Shared, worker};
use crate::admission::Submit;
use crate::metrics;
use crate::mqtt::client::{MqttClient, Outgoing};
use crate::mqtt::eventloop::Inbound;
use crate::session::SessionKey;
use mqtt_llm_protocol::topics::{ProjectName, request_filter_project};
use mqtt_llm_protocol::wire::{ReplyTarget, WireLimits, parse_request};

/// Run until the event loop's sender is gone or `cancel` fires.
pub async fn run(shared: Arc<Shared>, mut inbound: mpsc::Receiver<Inbound>, cancel: CancellationToken) {
    loop {
        let msg = tokio::select! {
            msg = inbound.recv() => msg,
            _ = cancel.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        handle(&shared, msg).await;
    }
}

async fn handle(shared: &Arc<Shared>, msg: Inbound) {
    let Some(project) = request_filter_project(&msg.topic, &shared.projects).cloned() else {
        tracing::warn!(topic = msg.topic, "message on a topic we do not serve");
        return;
    };
    metrics::request_received(project.as_str());
    let request = match parse_request(&project, &msg.payload, &msg.props, &shared.cfg.limits) {
        Ok(r) => r,
        Err(rejection) => {
            refuse(
                shared,
                &project,
                rejection.reply.as_ref(),
                Refusal::Invalid(rejection.error),
            )
            .await;
            return;
        }
    };
    if let Some(reason) = request.reply_topic_fallback {
        metrics::reply_topic_fallback(project.as_str(), reason.as_str());
    }
    if shared.draining.load(Ordering::SeqCst) {
        refuse(shared, &project, Some(&request.reply), Refusal::ShuttingDown).await;
        return;
    }
    let Some(permit) = shared.admission.try_accept() else {
        refuse(shared, &project, Some(&request.reply), Refusal::Overloaded).await;
        return;
    };
    let key = SessionKey {
        project: project.clone(),
        session: request.session.clone(),
    };
    let job = Job {
        request,
        accepted_at: Instant::now(),
        _permit: permit,
    };
    match shared.lanes.submit(&key, job) {
        Submit::Run(job) => {
            shared.workers.spawn(worker::run_lane(Arc::clone(shared), key, job));
        }
        Submit::Queued => {}
        Submit::Full(job) => refuse(shared, &project, Some(&job.request.reply), Refusal::SessionQueueFull).await,
    }
}

/// Count a refusal and answer it when a reply topic is known.
async fn refuse(shared: &Shared, project: &ProjectName, reply: Option<&ReplyTarget>, refusal: Refusal) {
    metrics::request_rejected(project.as_str(), refusal.code());
    match reply {
        Some(target) => {
            tracing::info!(
                project = project.as_str(),
                reason = refusal.code(),
                topic = target.topic,
                "request refused"
            );
            shared.publish_text(target, refusal.reply_text()).await;
        }
        None => {
            tracing::warn!(
                project = project.as_str(),
                reason = refusal.code(),
                "request refused; no reply topic"
            );
        }
    }
}

/// Answer a message the intake had no room for, from the event-loop task: parse it just enough to find its reply
/// topic, then publish the overload text without waiting.
pub fn overflow(client: &MqttClient, projects: &[ProjectName], limits: &WireLimits, msg: Inbound) {
    let Some(project) = request_filter_project(&msg.topic, projects) else {
        return;
    };
    metrics::request_received(project.as_str());
    metrics::request_rejected(project.as_str(), Refusal::Overloaded.code());
    let reply = match parse_request(project, &msg.payload, &msg.props, limits) {
        Ok(r) => Some(r.reply),
        Err(rejection) => rejection.reply,
    };
    let Some(target) = reply else {
        tracing::warn!(
            project = project.as_str(),
            "overloaded; request dropped with no reply topic"
        );
        return;
    };
    let out = Outgoing {
        topic: target.topic,
        payload: Refusal::Overloaded.reply_text().into(),
        correlation_data: target.correlation_data,
        content_type: "text/plain",
    };
    if let Err(e) = client.try_publish(out) {
        metrics::mqtt_publish_error();
        tracing::error!(error = %e, "overloaded and cannot even say so");
    }
}
