//! The session store's settings: the history budget and trimming, idle expiry, the caps on conversations and
//! bytes kept, and persistence. `config` builds them.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use super::TrimSettings;

#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// Token budget of a request's prompt (system prompt + kept turns + new message), before the model's context
    /// lowers it.
    pub max_history_tokens: NonZeroU32,
    /// How histories over budget are trimmed.
    pub trim: TrimSettings,
    /// Forget a conversation after this long without requests.
    pub idle_timeout: Duration,
    /// Conversations kept in memory; beyond it the least recently used are forgotten.
    pub max_sessions: NonZeroUsize,
    /// History bytes kept in memory; beyond it the least recently used conversations are forgotten.
    pub max_bytes: NonZeroUsize,
    /// Where and how often conversations are persisted; `None` with `--no-persist`.
    pub persist: Option<PersistSettings>,
}

/// `--state-dir` and `--persist-interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistSettings {
    pub dir: PathBuf,
    pub interval: Duration,
}
