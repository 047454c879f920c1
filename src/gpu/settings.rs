//! The GPU settings of a launch: whether to run the pre-flight memory check, and how the sampler samples.
//! `config` builds them.

use std::time::Duration;

use super::SamplerConfig;

/// GPU pre-flight and sampling (launch mode).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSettings {
    pub skip_check: bool,
    pub sample_interval: Duration,
    /// Warn when a GPU's free memory falls below this.
    pub low_free_bytes: u64,
}

impl GpuSettings {
    /// What the sampler runs with.
    pub fn sampler(&self) -> SamplerConfig {
        SamplerConfig {
            interval: self.sample_interval,
            low_free_bytes: self.low_free_bytes,
        }
    }
}
