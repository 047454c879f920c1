//! The session store's settings: the history budget, idle expiry and the cap on conversations kept. `config`
//! builds them.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Token budget of a session's history (system prompt + turns); oldest whole turns are dropped beyond it.
    pub max_history_tokens: NonZeroU32,
    /// Forget a conversation after this long without requests.
    pub idle_timeout: Duration,
    /// Conversations kept in memory; beyond it the least recently used are forgotten.
    pub max_sessions: NonZeroUsize,
}
