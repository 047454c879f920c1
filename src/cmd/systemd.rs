//! systemd's readiness protocol (`Type=notify`): `READY=1` once `up` serves (engine ready, MQTT subscribed),
//! `STOPPING=1` when the drain starts, and a `STATUS=` line for each milestone (`systemctl status` shows it, so an
//! operator sees "engine: loading weights" during a long start). Nothing happens without `$NOTIFY_SOCKET`.

use mqtt_llm::app::AppEvent;
use sd_notify::NotifyState;

/// Tell systemd about `event` (when run under it).
pub fn app_event(event: &AppEvent) {
    let status;
    let states: Vec<NotifyState<'_>> = match event {
        AppEvent::HttpListening(_) | AppEvent::BrokerListening { .. } | AppEvent::Stopped => return,
        AppEvent::EngineLaunched { .. } => vec![NotifyState::Status("engine launched")],
        AppEvent::EnginePhase { phase, .. } => {
            status = format!("engine: {phase}");
            vec![NotifyState::Status(&status)]
        }
        AppEvent::EngineReady { model, .. } => {
            status = format!("engine ready, serving {model}; connecting to MQTT");
            vec![NotifyState::Status(&status)]
        }
        AppEvent::MqttReady => vec![NotifyState::Ready, NotifyState::Status("ready")],
        AppEvent::Draining => vec![NotifyState::Stopping, NotifyState::Status("draining")],
    };
    if let Err(e) = sd_notify::notify(&states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}
