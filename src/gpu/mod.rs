//! The GPUs the engine runs on, read through NVML, and the host's memory and process tree.
//!
//! - [`nvml`]: [`NvmlSource`], NVML loaded at run time (`libnvidia-ml.so.1`); no driver means
//!   [`GpuError::Unavailable`], never a panic;
//! - [`fake`]: [`FakeSource`], a scripted source for tests;
//! - [`mod@preflight`]: the check before launching vLLM: each chosen GPU must have `utilization × total` free;
//! - [`host`]: host memory and the engine's process group (sysinfo and `getpgid`);
//! - [`sampler`]: the task that samples the GPUs into metrics and warns when free memory runs low;
//! - [`settings`]: [`GpuSettings`], the pre-flight and sampling settings of a launch, built by `config`.
//!
//! Everything here reads; nothing changes a GPU's settings.

pub mod fake;
pub mod host;
pub mod nvml;
pub mod preflight;
pub mod sampler;
pub mod settings;

pub use fake::FakeSource;
pub use host::{host_memory, process_group_members};
pub use nvml::NvmlSource;
pub use preflight::{
    DEFAULT_GPU_MEMORY_UTILIZATION, LaunchGpuCheck, LaunchGpuRequest, PreflightError, check_launch, preflight,
};
pub use sampler::{GpuMonitor, GpuReading, GpuStatus, SamplerConfig, spawn_sampler};
pub use settings::GpuSettings;

use serde::Serialize;

/// A process holding memory on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    /// The process's name on this host (sysinfo); None when the pid is not visible here (another PID namespace)
    /// or has exited since NVML listed it.
    pub name: Option<String>,
    /// None when the driver does not say (no permission, or a Windows display driver).
    pub used_bytes: Option<u64>,
}

/// One GPU as NVML sees it at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuInfo {
    /// NVML's index (PCI bus order; matches CUDA's numbering when `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_used: u64,
    /// Unallocated memory as the driver reports it: what `cudaMemGetInfo` (and so vLLM's own start-up check)
    /// sees. Not always `total - used`: the driver reserves some.
    pub memory_free: u64,
    pub memory_total: u64,
    /// Percent of the last sample period a kernel ran; None when the device does not report it.
    pub utilization_percent: Option<u32>,
    pub processes: Vec<GpuProcess>,
}

/// Why the GPUs could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No NVIDIA driver or library here: NVML could not be loaded or initialised.
    #[error("NVML unavailable: {0}")]
    Unavailable(String),
    /// NVML is there but a query failed.
    #[error("NVML error: {0}")]
    Nvml(String),
    #[error("no GPU with index {index} (this machine has {count})")]
    NoSuchGpu { index: u32, count: u32 },
    /// A `CUDA_VISIBLE_DEVICES` entry that names no GPU here.
    #[error("CUDA_VISIBLE_DEVICES names {0:?}, which matches no GPU here")]
    UnknownDevice(String),
}

/// Where GPU snapshots come from: [`NvmlSource`] on a real machine, [`FakeSource`] in tests.
///
/// `snapshot` blocks (NVML calls and a few `/proc` reads, milliseconds); async callers run it on a blocking thread.
pub trait GpuSource: Send + Sync + 'static {
    fn snapshot(&self) -> Result<Vec<GpuInfo>, GpuError>;
}

/// One sentence for a person who asked for GPUs where NVML cannot give them (what `gpus` and `up` print).
pub fn explain_unavailable(err: &GpuError) -> String {
    match err {
        GpuError::Unavailable(reason) => format!(
            "NVML unavailable: {reason}; no NVIDIA driver on this machine? vLLM needs an NVIDIA GPU unless you \
             attach to another server with --engine-url or launch a different --vllm-bin"
        ),
        GpuError::Nvml(reason) => format!("cannot read the GPUs through NVML: {reason}"),
        GpuError::NoSuchGpu { .. } | GpuError::UnknownDevice(_) => err.to_string(),
    }
}

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Bytes as GiB with one decimal, e.g. `79.6`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / GIB)
}

/// Bytes as whole MiB, e.g. `9728`.
pub fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_unavailable_names_the_way_out() {
        let s = explain_unavailable(&GpuError::Unavailable("libnvidia-ml.so.1: cannot open".into()));
        assert_eq!(
            s,
            "NVML unavailable: libnvidia-ml.so.1: cannot open; no NVIDIA driver on this machine? vLLM needs an \
             NVIDIA GPU unless you attach to another server with --engine-url or launch a different --vllm-bin"
        );
        let s = explain_unavailable(&GpuError::Nvml("GPU lost".into()));
        assert_eq!(s, "cannot read the GPUs through NVML: GPU lost");
    }

    #[test]
    fn sizes_format() {
        assert_eq!(gib(80 << 30), "80.0");
        assert_eq!(gib(0), "0.0");
        assert_eq!(mib(9728 << 20), "9728");
    }
}
