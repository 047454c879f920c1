//! The tracebacks of a failed start: the API server's socket, the model lookup, the EngineCore
//! exiting or running out of memory while it starts, and SIGTERM during start-up.

use super::Traceback;

/// `OSError` from binding the API server's socket (`setup_server` → `create_server_socket`).
/// `errno`/`strerror` as Python prints them: `[Errno 98] Address already in use`.
pub fn bind_failed(errno: i32, strerror: &str) -> String {
    Traceback::new()
        .cli()
        .frame(
            "vllm/entrypoints/launchers/api_server/entry.py",
            164,
            "run_server",
            "listen_address, sock = setup_server(args)",
        )
        .frame(
            "vllm/entrypoints/launchers/api_server/entry.py",
            140,
            "setup_server",
            "sock = create_server_socket(sock_addr)",
        )
        .frame(
            "vllm/entrypoints/launchers/api_server/entry.py",
            112,
            "create_server_socket",
            "sock.bind(addr)",
        )
        .error(&format!("OSError: [Errno {errno}] {strerror}"))
}

/// The port-in-use failure, the one a real conflict produces too.
pub fn port_in_use() -> String {
    bind_failed(98, "Address already in use")
}

/// The frames from `run_server` into `build_async_engine_client`, shared by every start-up failure.
fn into_engine_client(tb: Traceback) -> Traceback {
    tb.frame(
        "vllm/entrypoints/launchers/api_server/entry.py",
        201,
        "run_server",
        "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)",
    )
    .frame(
        "vllm/entrypoints/launchers/api_server/entry.py",
        220,
        "run_server_worker",
        "async with build_async_engine_client(",
    )
    .frame(
        "/usr/lib/python3.12/contextlib.py",
        210,
        "__aenter__",
        "return await anext(self.gen)",
    )
}

/// The frames from `run_server` into building the engine config (model resolution).
fn into_engine_config(tb: Traceback) -> Traceback {
    into_engine_client(tb)
        .frame(
            "vllm/entrypoints/openai/api_server.py",
            154,
            "build_async_engine_client_from_engine_args",
            "vllm_config = engine_args.create_engine_config(usage_context=usage_context)",
        )
        .frame(
            "vllm/engine/arg_utils.py",
            1512,
            "create_engine_config",
            "model_config = self.create_model_config()",
        )
        .frame(
            "vllm/engine/arg_utils.py",
            1371,
            "create_model_config",
            "return ModelConfig(",
        )
        .frame("vllm/config/model.py", 512, "__post_init__", "hf_config = get_config(")
}

/// `--sim-fail-start model-not-found`: the model id resolves to neither a Hugging Face repository
/// nor a local directory. The root cause is huggingface_hub's `RepositoryNotFoundError`, or with
/// `HF_HUB_OFFLINE=1` the "couldn't connect" `OSError`; vLLM re-raises it as the `ValueError`.
pub fn model_not_found(model: &str, offline: bool) -> String {
    let url = format!("https://huggingface.co/api/models/{model}/revision/main");
    let root = if offline {
        Traceback::new()
            .frame(
                "vllm/transformers_utils/config.py",
                560,
                "file_or_path_exists",
                "cached_filepath = try_to_load_from_cache(",
            )
            .frame(
                "huggingface_hub/utils/_validators.py",
                114,
                "_inner_fn",
                "return fn(*args, **kwargs)",
            )
            .error(
                "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.\n\
                 Check your internet connection or see how to run the library in offline mode at 'https://huggingface.co/docs/transformers/installation#offline-mode'.",
            )
    } else {
        let http = Traceback::new()
            .frame(
                "huggingface_hub/utils/_http.py",
                657,
                "hf_raise_for_status",
                "response.raise_for_status()",
            )
            .frame(
                "httpx/_models.py",
                829,
                "raise_for_status",
                "raise HTTPStatusError(message, request=request, response=self)",
            )
            .error(&format!(
                "httpx.HTTPStatusError: Client error '401 Unauthorized' for url '{url}'\n\
                 For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401"
            ));
        let hub = Traceback::new()
            .frame(
                "vllm/transformers_utils/config.py",
                565,
                "file_or_path_exists",
                "return file_exists(",
            )
            .frame(
                "huggingface_hub/hf_api.py",
                3104,
                "file_exists",
                "get_hf_file_metadata(url, token=token)",
            )
            .frame(
                "huggingface_hub/utils/_http.py",
                746,
                "hf_raise_for_status",
                "raise _format(RepositoryNotFoundError, message, response) from e",
            )
            .error(&format!(
                "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-6651a2f0-3c5e7a1b2d4f6e8a0b1c2d3e;4f1d0e2c-9a8b-4c7d-8e6f-5a4b3c2d1e0f)\n\
                 \n\
                 Repository Not Found for url: {url}.\n\
                 Please make sure you specified the correct `repo_id` and `repo_type`.\n\
                 If you are trying to access a private or gated repo, make sure you are authenticated. For more details, see https://huggingface.co/docs/huggingface_hub/authentication\n\
                 Invalid username or password."
            ));
        format!("{http}\nThe above exception was the direct cause of the following exception:\n\n{hub}")
    };
    let outer = into_engine_config(Traceback::new().cli())
        .frame(
            "vllm/transformers_utils/config.py",
            923,
            "get_config",
            "raise ValueError(error_message) from e",
        )
        .error(&format!(
            "ValueError: Invalid repository ID or local directory specified: '{model}'.\n\
             Please verify the following requirements:\n\
             1. Provide a valid Hugging Face repository ID.\n\
             2. Specify a local directory that contains a recognized configuration file.\n   \
             - For Hugging Face models: ensure the presence of a 'config.json'.\n   \
             - For Mistral models: ensure the presence of a 'params.json'.\n"
        ));
    format!("{root}\nThe above exception was the direct cause of the following exception:\n\n{outer}")
}

/// The frames from `run_server` to the API server waiting for the EngineCore's handshake.
fn into_engine_startup(tb: Traceback) -> Traceback {
    into_engine_client(tb)
        .frame(
            "vllm/entrypoints/openai/api_server.py",
            180,
            "build_async_engine_client_from_engine_args",
            "async_llm = AsyncLLM.from_vllm_config(",
        )
        .frame("vllm/v1/engine/async_llm.py", 232, "from_vllm_config", "return cls(")
        .frame(
            "vllm/v1/engine/async_llm.py",
            151,
            "__init__",
            "self.engine_core = EngineCoreClient.make_async_mp_client(",
        )
        .frame(
            "vllm/v1/engine/core_client.py",
            124,
            "make_async_mp_client",
            "return AsyncMPClient(*client_args)",
        )
        .frame("vllm/v1/engine/core_client.py", 835, "__init__", "super().__init__(")
        .frame(
            "vllm/v1/engine/core_client.py",
            490,
            "__init__",
            "with launch_core_engines(vllm_config, executor_class, log_stats) as (",
        )
        .frame("/usr/lib/python3.12/contextlib.py", 144, "__exit__", "next(self.gen)")
        .frame(
            "vllm/v1/engine/utils.py",
            1401,
            "launch_core_engines",
            "wait_for_engine_startup(",
        )
}

/// The API server's error when the EngineCore exits during start-up; `exitcode` is Python's
/// `Process.exitcode` (the exit status, or minus the signal number).
pub fn engine_core_init_failed(exitcode: i32) -> String {
    into_engine_startup(Traceback::new().cli())
        .frame("vllm/v1/engine/utils.py", 1473, "wait_for_engine_startup", "raise RuntimeError(")
        .error(&format!(
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{'EngineCore': {exitcode}}}"
        ))
}

/// SIGTERM/SIGINT while the engine loads: the pre-uvicorn handler raises `KeyboardInterrupt`.
pub fn interrupted_during_startup() -> String {
    into_engine_startup(Traceback::new().cli())
        .frame(
            "vllm/v1/engine/utils.py",
            1450,
            "wait_for_engine_startup",
            "events = poller.poll(STARTUP_POLL_PERIOD_MS)",
        )
        .frame(
            "zmq/sugar/poll.py",
            106,
            "poll",
            "return zmq_poll(self.sockets, timeout=timeout)",
        )
        .frame(
            "vllm/entrypoints/launchers/api_server/entry.py",
            171,
            "_interrupt_init",
            "raise KeyboardInterrupt(\"terminated\")",
        )
        .error("KeyboardInterrupt: terminated")
}

/// What the EngineCore logs when the model does not fit: a CUDA OOM in the profiling run.
pub fn engine_core_oom() -> String {
    Traceback::new()
        .frame(
            "vllm/v1/engine/core.py",
            1082,
            "run_engine_core",
            "engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)",
        )
        .frame("vllm/v1/engine/core.py", 848, "__init__", "super().__init__(")
        .frame(
            "vllm/v1/engine/core.py",
            124,
            "__init__",
            "kv_cache_config = self._initialize_kv_caches(vllm_config)",
        )
        .frame(
            "vllm/v1/engine/core.py",
            245,
            "_initialize_kv_caches",
            "available_gpu_memory = self.model_executor.determine_available_memory()",
        )
        .frame(
            "vllm/v1/executor/abstract.py",
            136,
            "determine_available_memory",
            "return self.collective_rpc(\"determine_available_memory\")",
        )
        .frame(
            "vllm/v1/worker/gpu_worker.py",
            340,
            "determine_available_memory",
            "self.model_runner.profile_run()",
        )
        .frame(
            "vllm/v1/worker/gpu_model_runner.py",
            5012,
            "profile_run",
            "hidden_states, last_hidden_states = self._dummy_run(",
        )
        .frame("vllm/v1/worker/gpu_model_runner.py", 4790, "_dummy_run", "outputs = self.model(")
        .frame(
            "torch/nn/modules/module.py",
            1786,
            "_call_impl",
            "return forward_call(*args, **kwargs)",
        )
        .error(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.32 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.12 GiB memory in use. Of the allocated memory 75.90 GiB is allocated by PyTorch, and 1.52 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
        )
}
