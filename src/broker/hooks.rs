//! What we plug into rmqtt: retained-message storage, the password check, and the message counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::types::{AuthResult, Retain, TopicFilter, TopicName};

use super::auth::Credentials;

/// In-memory retained messages. rmqtt's core keeps none by itself (it expects its `rmqtt-retainer` plugin); its
/// `DefaultRetainStorage` has the store, and this switches it on. An empty retained publish clears the topic.
pub(super) struct MemoryRetain(pub(super) DefaultRetainStorage);

#[async_trait]
impl RetainStorage for MemoryRetain {
    fn enable(&self) -> bool {
        true
    }

    async fn set(&self, topic: &TopicName, retain: Retain, expiry: Option<Duration>) -> rmqtt::Result<()> {
        self.0.set_with_timeout(topic, retain, expiry).await
    }

    async fn get(&self, filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        self.0.get_message(filter).await
    }

    async fn count(&self) -> isize {
        self.0.count().await
    }

    async fn max(&self) -> isize {
        self.0.max().await
    }
}

/// The `ClientAuthenticate` hook: every CONNECT is checked against the password file; no user name, an unknown
/// user or a wrong password is refused with "bad user name or password".
pub(super) struct PasswordCheck {
    pub(super) users: Arc<Credentials>,
    /// The bridge's own account: a user name and a random password made at start, never written anywhere.
    pub(super) bridge: (String, String),
}

#[async_trait]
impl Handler for PasswordCheck {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let Parameter::ClientAuthenticate(connect) = param else {
            return (true, acc);
        };
        let allowed = match (connect.username(), connect.password()) {
            (Some(user), Some(password)) if &**user == self.bridge.0.as_str() => {
                &password[..] == self.bridge.1.as_bytes()
            }
            (Some(user), Some(password)) => self.users.verify(user, password),
            _ => false,
        };
        if !allowed {
            tracing::info!(client_id = %connect.client_id(), "embedded broker refused a CONNECT: bad user name or password");
        }
        let result = if allowed {
            AuthResult::Allow(false, None)
        } else {
            AuthResult::BadUsernameOrPassword
        };
        (false, Some(HookResult::AuthResult(result)))
    }
}

/// Cumulative message counters, bumped by the `MessagePublish` and `MessageDelivered` hooks.
#[derive(Debug, Default)]
pub(super) struct MessageCounters {
    pub(super) received: AtomicU64,
    pub(super) sent: AtomicU64,
}

/// Counts messages: one received per PUBLISH a client sends (wills included), one sent per delivery to a
/// subscriber. Passes every message on unchanged.
pub(super) struct CountMessages(pub(super) Arc<MessageCounters>);

#[async_trait]
impl Handler for CountMessages {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::MessagePublish(..) => {
                self.0.received.fetch_add(1, Ordering::Relaxed);
            }
            Parameter::MessageDelivered(..) => {
                self.0.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        (true, acc)
    }
}
