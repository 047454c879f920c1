//! The tracebacks of engine death at runtime: the EngineCore's fatal step, and the API server's
//! output handler and streams failing on the dead engine.

use super::{ENGINE_DEAD, Traceback};

/// What the EngineCore logs when a step fails at runtime (`--sim-crash-after-requests`).
pub fn engine_core_fatal() -> String {
    Traceback::new()
        .frame("vllm/v1/engine/core.py", 1108, "run_engine_core", "engine_core.run_busy_loop()")
        .frame("vllm/v1/engine/core.py", 1149, "run_busy_loop", "self._process_engine_step()")
        .frame(
            "vllm/v1/engine/core.py",
            1186,
            "_process_engine_step",
            "outputs, model_executed = self.step_fn()",
        )
        .frame(
            "vllm/v1/engine/core.py",
            420,
            "step",
            "model_output = self.model_executor.execute_model(scheduler_output)",
        )
        .frame(
            "vllm/v1/executor/uniproc_executor.py",
            109,
            "execute_model",
            "output = self.collective_rpc(",
        )
        .frame(
            "vllm/v1/worker/gpu_model_runner.py",
            3561,
            "execute_model",
            "model_output = self._model_forward(",
        )
        .error(
            "torch.AcceleratorError: CUDA error: an illegal memory access was encountered\n\
             CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.\n\
             For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n\
             Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
        )
}

/// The API server's output handler failing once the EngineCore is dead.
pub fn output_handler_failed() -> String {
    Traceback::new()
        .frame(
            "vllm/v1/engine/async_llm.py",
            439,
            "output_handler",
            "outputs = await engine_core.get_output_async()",
        )
        .frame(
            "vllm/v1/engine/core_client.py",
            846,
            "get_output_async",
            "raise self._format_exception(outputs) from None",
        )
        .error(ENGINE_DEAD)
}

/// One stream's generator failing on the dead engine.
pub fn stream_generator_failed() -> String {
    Traceback::new()
        .frame(
            "vllm/entrypoints/openai/chat_completion/serving.py",
            574,
            "chat_completion_stream_generator",
            "async for res in result_generator:",
        )
        .frame(
            "vllm/v1/engine/async_llm.py",
            387,
            "generate",
            "out = q.get_nowait() or await q.get()",
        )
        .frame("vllm/v1/engine/output_processor.py", 59, "get", "raise output")
        .error(ENGINE_DEAD)
}
