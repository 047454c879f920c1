//! `mqtt-llm gpus`: each GPU (memory, utilisation, the processes holding memory) and the host's memory.
//!
//! The rendering is pure ([`render_text`], [`render_json`]); `run` only reads NVML and prints.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use serde::Serialize;

use super::output;
use crate::cli::GpusArgs;
use mqtt_llm::gpu::{GpuInfo, GpuSource, NvmlSource, explain_unavailable, gib, host_memory, mib};

/// Host memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostMemory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Print the GPUs; exit 1 (after one sentence on stderr) when NVML cannot be used or lists no GPU.
pub async fn run(args: &GpusArgs) -> ExitCode {
    // NVML and /proc reads block for well under a second, and nothing else runs in this command.
    let snapshot = NvmlSource::init().and_then(|nvml| nvml.snapshot());
    let (total_bytes, available_bytes) = host_memory();
    let host = HostMemory {
        total_bytes,
        available_bytes,
    };
    let gpus = match snapshot {
        Ok(gpus) => gpus,
        Err(e) => {
            output::failure(&explain_unavailable(&e), &[]);
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        render_json(&gpus, host)
    } else {
        render_text(&gpus, host)
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    if gpus.is_empty() {
        output::failure("NVML lists no GPU on this machine", &[]);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The table: one line per GPU, one indented line per process, then host memory.
pub fn render_text(gpus: &[GpuInfo], host: HostMemory) -> String {
    let name_width = gpus.iter().map(|g| g.name.len()).max().unwrap_or(0).max("NAME".len());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<4} {:<name_width$}  {:>17}  {:>4}",
        "GPU", "NAME", "MEMORY USED/TOTAL", "UTIL"
    );
    for g in gpus {
        let memory = format!("{} / {} GiB", gib(g.memory_used), gib(g.memory_total));
        let util = g
            .utilization_percent
            .map_or_else(|| "-".to_owned(), |u| format!("{u}%"));
        let _ = writeln!(s, "{:<4} {:<name_width$}  {memory:>17}  {util:>4}", g.index, g.name);
        for p in &g.processes {
            let name = p.name.as_deref().unwrap_or("(not visible here)");
            let used = p.used_bytes.map_or_else(|| "?".to_owned(), mib);
            let _ = writeln!(s, "     pid {:<8} {name:<18} {used:>7} MiB", p.pid);
        }
    }
    if gpus.is_empty() {
        let _ = writeln!(s, "(no GPU)");
    }
    let _ = writeln!(
        s,
        "host memory: {} GiB available of {} GiB",
        gib(host.available_bytes),
        gib(host.total_bytes)
    );
    s
}

/// One JSON object and a newline: `{"gpus": [GpuInfo...], "host": HostMemory}`.
pub fn render_json(gpus: &[GpuInfo], host: HostMemory) -> String {
    #[derive(Serialize)]
    struct Report<'a> {
        gpus: &'a [GpuInfo],
        host: HostMemory,
    }
    let mut s = serde_json::to_string(&Report { gpus, host }).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_llm::gpu::GpuProcess;
    use mqtt_llm::gpu::fake::{gpu, process};

    const HOST: HostMemory = HostMemory {
        total_bytes: 24 << 30,
        available_bytes: 12_884_901_888, // 12 GiB
    };

    fn snapshot() -> Vec<GpuInfo> {
        let mut g0 = gpu(0, 80, 10);
        g0.utilization_percent = Some(37);
        g0.processes = vec![
            process(4242, "VLLM::EngineCor", 9_728),
            GpuProcess {
                pid: 77,
                name: None,
                used_bytes: None,
            },
        ];
        let mut g1 = gpu(1, 80, 0);
        g1.name = "NVIDIA A100-SXM4-80GB".to_owned();
        vec![g0, g1]
    }

    #[test]
    fn text_golden() {
        let expected = "\
GPU  NAME                   MEMORY USED/TOTAL  UTIL
0    NVIDIA H100 80GB HBM3    10.0 / 80.0 GiB   37%
     pid 4242     VLLM::EngineCor       9728 MiB
     pid 77       (not visible here)       ? MiB
1    NVIDIA A100-SXM4-80GB     0.0 / 80.0 GiB     -
host memory: 12.0 GiB available of 24.0 GiB
";
        assert_eq!(render_text(&snapshot(), HOST), expected);
    }

    #[test]
    fn text_without_gpus() {
        assert_eq!(
            render_text(&[], HOST),
            "GPU  NAME  MEMORY USED/TOTAL  UTIL\n(no GPU)\nhost memory: 12.0 GiB available of 24.0 GiB\n"
        );
    }

    /// Pins the no-driver path (this machine, CI): one sentence on stderr and exit 1, no panic.
    #[tokio::test]
    async fn without_a_driver_the_command_fails_cleanly() {
        if std::path::Path::new("/proc/driver/nvidia/version").exists() {
            return;
        }
        assert_eq!(run(&GpusArgs::default()).await, ExitCode::FAILURE);
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&snapshot(), HOST)).unwrap();
        assert_eq!(v["host"]["total_bytes"], 24u64 << 30);
        assert_eq!(v["gpus"][0]["index"], 0);
        assert_eq!(v["gpus"][0]["memory_total"], 80u64 << 30);
        assert_eq!(v["gpus"][0]["utilization_percent"], 37);
        assert_eq!(v["gpus"][0]["processes"][0]["pid"], 4242);
        assert_eq!(v["gpus"][0]["processes"][1]["name"], serde_json::Value::Null);
        assert_eq!(v["gpus"][1]["utilization_percent"], serde_json::Value::Null);
    }
}
