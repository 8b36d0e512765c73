"""LLM backends behind one interface (see `base.py`), plus the factory the stages and the CLI use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fineinstructions.llm.base import Completion, LLMBackend, Message, Request, SamplingParams, fingerprint
from fineinstructions.llm.cache import CachedBackend, RequestCache, default_cache_path

BACKENDS = ("transformers", "openai", "vllm", "serve", "llamacpp")


@dataclass
class LLMConfig:
    """Which model answers, and how. The same keys appear in YAML (`llm:` section) and as `--llm-*` CLI flags."""

    backend: str = "transformers"  # transformers | openai | vllm | serve | llamacpp
    model: str | None = None  # hub name, local dir or .gguf; None = embedded default (SmolLM2-135M-Instruct)
    revision: str | None = None  # hub revision; for openai/serve, a user-given label of the served weights
    #: a PEFT (LoRA) adapter folder applied on top of the model (transformers: merged; vllm: LoRA requests; serve:
    #: vllm's --enable-lora --lora-modules); "auto": the package's
    #: distilled student of the stage for the embedded default model (none for any other model); "none": no adapter
    adapter: str | None = "auto"
    base_url: str = "http://127.0.0.1:8000/v1"  # openai backend only
    api_key: str | None = None  # openai backend only (default: $OPENAI_API_KEY)
    concurrency: int = 16  # openai backend: requests in flight
    timeout: float = 120.0  # openai backend: seconds per request
    max_retries: int = 5  # openai backend
    server_command: str | None = None  # serve backend: vllm (default) | sglang | llama-server | transformers | a command line
    server_args: str = ""  # serve backend: extra server arguments, e.g. "--tensor-parallel-size 2 --max-model-len 8192"
    server_timeout: float = 900.0  # serve backend: seconds to wait for the server to load the model
    server_log_dir: str | None = None  # serve backend: server logs (default: ~/.cache/fineinstructions/servers)
    batch_size: int = 16  # transformers backend: sequences per forward pass (measured: 3.4x one at a time on 2 CPU cores)
    num_threads: int | None = None  # transformers backend: torch CPU threads
    cache: bool = True  # request-level cache (rerun re-sends only what is missing)
    #: default: ~/.cache/fineinstructions/llm_cache.sqlite ($FINEINSTRUCTIONS_CACHE); on slurm/ray executors one file
    #: per task under the stage's output folder (DIR/llm_cache/), never a shared SQLite file across nodes
    cache_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to the backend constructor


def preflight(cfg: LLMConfig) -> None:
    """Check the model/server exists before any task starts, so a typo is one line, not a task traceback."""
    from fineinstructions.errors import UserError

    adapter = adapter_folder(cfg)
    if adapter:
        if cfg.backend not in ("transformers", "vllm", "serve"):
            raise UserError(f"--llm-adapter needs the transformers, vllm or serve backend, not {cfg.backend!r}: "
                            "an external server loads adapters itself (e.g. vllm serve MODEL --enable-lora "
                            "--lora-modules NAME=DIR); pass --llm-model NAME")
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise UserError(f"--llm-adapter {adapter}: not a PEFT adapter folder (no adapter_config.json)")
    try:
        if cfg.backend in ("transformers", "llamacpp"):
            from fineinstructions.llm.hf_local import resolve_model

            resolve_model(cfg.model, cfg.revision)
        elif cfg.backend == "openai":
            from fineinstructions.llm.openai_server import check_server

            try:
                check_server(cfg.base_url, timeout=min(cfg.timeout, 10.0), api_key=cfg.api_key)
            except ConnectionError as e:
                if str(e).startswith("cannot reach"):
                    raise  # nothing listens there; a server without /models is fine
        elif cfg.backend == "serve":
            from fineinstructions.llm.managed_server import check_command, server_argv

            try:
                check_command(server_argv(cfg.server_command, cfg.model or "", cfg.server_args, cfg.revision,
                                          adapter))
            except ValueError as e:
                raise UserError(str(e)) from e

        elif cfg.backend not in BACKENDS:
            raise UserError(f"unknown llm backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
    except (FileNotFoundError, ConnectionError) as e:
        raise UserError(str(e)) from e


def student_path(stage: str) -> Path | None:
    """The distilled student shipped in the package for `stage` (an adapter for the embedded model, or for the
    judge a classifier), if any."""
    from importlib import resources

    folder = Path(str(resources.files("fineinstructions"))) / "students" / stage
    return folder if any((folder / f).is_file() for f in ("adapter_config.json", "classifier.json")) else None


def resolve_adapter(cfg: LLMConfig, stage: str) -> LLMConfig:
    """`cfg` with `adapter` made concrete for `stage`: a folder, or None. "auto" means the stage's shipped student
    when the model is the embedded default on the transformers backend, and no adapter otherwise."""
    from dataclasses import replace

    if cfg.adapter in (None, "", "none"):
        return replace(cfg, adapter=None)
    if cfg.adapter == "auto":
        path = student_path(stage) if cfg.backend == "transformers" and not cfg.model else None
        return replace(cfg, adapter=str(path) if path else None)
    return cfg


def adapter_folder(cfg: LLMConfig) -> str | None:
    """The adapter folder to load, if any ("auto" is resolved per stage by `resolve_adapter` before this)."""
    return None if cfg.adapter in (None, "", "auto", "none") else cfg.adapter


def make_backend(cfg: LLMConfig) -> LLMBackend:
    """Build the configured backend, wrapped in the request cache unless disabled."""
    if cfg.backend == "transformers":
        from fineinstructions.llm.hf_local import TransformersBackend

        backend: LLMBackend = TransformersBackend(
            cfg.model, revision=cfg.revision, batch_size=cfg.batch_size, num_threads=cfg.num_threads,
            adapter=adapter_folder(cfg), **cfg.extra
        )
    elif cfg.backend == "openai":
        from fineinstructions.llm.openai_server import OpenAIServerBackend

        if not cfg.model:
            raise ValueError("the openai backend needs --llm-model (the model name the server serves)")
        backend = OpenAIServerBackend(
            base_url=cfg.base_url, model=cfg.model, api_key=cfg.api_key, concurrency=cfg.concurrency,
            timeout=cfg.timeout, max_retries=cfg.max_retries,
            **{"model_id": f"openai:{cfg.model}" + (f"@{cfg.revision}" if cfg.revision else ""), **cfg.extra},
        )
    elif cfg.backend == "vllm":
        from fineinstructions.llm.vllm_engine import VLLMBackend

        if not cfg.model:
            raise ValueError("the vllm backend needs --llm-model (a hub name or local directory)")
        backend = VLLMBackend(cfg.model, revision=cfg.revision, adapter=adapter_folder(cfg), **cfg.extra)
    elif cfg.backend == "serve":
        from fineinstructions.llm.managed_server import ManagedServerBackend

        if not cfg.model:
            raise ValueError("the serve backend needs --llm-model (the model the server loads)")
        backend = ManagedServerBackend(
            cfg.model, revision=cfg.revision, command=cfg.server_command, server_args=cfg.server_args,
            startup_timeout=cfg.server_timeout, log_dir=cfg.server_log_dir, api_key=cfg.api_key,
            concurrency=cfg.concurrency, timeout=cfg.timeout, max_retries=cfg.max_retries, adapter=adapter_folder(cfg),
            **cfg.extra,
        )
    elif cfg.backend == "llamacpp":
        from fineinstructions.llm.hf_local import default_model_path
        from fineinstructions.llm.llamacpp import LlamaCppBackend

        backend = LlamaCppBackend(cfg.model or default_model_path(), **cfg.extra)
    else:
        raise ValueError(f"unknown llm backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
    if cfg.cache:
        from fineinstructions.llm.identity import model_identity

        backend = CachedBackend(backend, RequestCache(cfg.cache_path or default_cache_path()), model_identity(cfg))
    return backend


__all__ = [
    "BACKENDS", "CachedBackend", "Completion", "LLMBackend", "LLMConfig", "Message", "Request", "RequestCache",
    "SamplingParams", "fingerprint", "make_backend",
]
