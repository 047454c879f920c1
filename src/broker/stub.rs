//! This build has no embedded broker (the `embedded-broker` feature is off): starting one says so, and `up` needs
//! `--broker`.

use std::net::SocketAddr;

use super::{BrokerError, BrokerSettings, BrokerStats};

/// Never constructed in this build.
#[derive(Debug)]
pub struct EmbeddedBroker {
    _never: std::convert::Infallible,
}

impl EmbeddedBroker {
    pub async fn start(_settings: BrokerSettings) -> Result<Self, BrokerError> {
        Err(BrokerError::Runtime(
            "this mqtt-llm was built without it (cargo feature `embedded-broker`): use --broker URL".into(),
        ))
    }

    pub fn bridge_addr(&self) -> SocketAddr {
        match self._never {}
    }

    pub fn bridge_credentials(&self) -> Option<(&'static str, &str)> {
        match self._never {}
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self._never {}
    }

    pub fn ws_addr(&self) -> Option<SocketAddr> {
        match self._never {}
    }

    pub async fn stats(&self) -> BrokerStats {
        match self._never {}
    }

    pub async fn shutdown(self) {
        match self._never {}
    }
}
