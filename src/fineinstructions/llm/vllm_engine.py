"""In-process vLLM for GPU machines (optional extra `fineinstructions[vllm]`).

vLLM does its own continuous batching, so the whole request list goes in at once. The import is deferred so the
package stays importable on CPU-only machines; constructing the backend without vLLM gives a one-line fix.
Engine options (`tensor_parallel_size`, `max_model_len`, `gpu_memory_utilization`, `enforce_eager`, ...) come from
`llm.extra` and go to `vllm.LLM` unchanged.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

from fineinstructions.llm.base import Completion, LLMBackend, Request, request_seed
from fineinstructions.llm.hf_local import resolve_model

__all__ = ["VLLMBackend"]


class VLLMBackend(LLMBackend):
    def __init__(self, model: str, revision: str | None = None, adapter: str | None = None, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(
                "the vllm backend needs a CUDA machine and the optional extra: pip install 'fineinstructions[vllm]'"
            ) from e
        self.model_id = resolve_model(model, revision)[2]
        if revision:  # vLLM loads the tokenizer from `main` unless told otherwise
            engine_kwargs.setdefault("tokenizer_revision", revision)
        self.lora = None
        if adapter:  # a LoRA request on every generate call; the engine must be built with LoRA enabled
            from vllm.lora.request import LoRARequest

            from fineinstructions.llm.managed_server import ADAPTER_NAME, lora_rank

            engine_kwargs.setdefault("enable_lora", True)
            engine_kwargs.setdefault("max_lora_rank", lora_rank(adapter))
            self.lora = LoRARequest(ADAPTER_NAME, 1, str(adapter))
        self.llm = LLM(model=model, revision=revision, **engine_kwargs)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        for is_chat in (True, False):
            idxs = [i for i, r in enumerate(requests) if (r.messages is not None) == is_chat]
            if idxs:
                for i, c in zip(idxs, self._run([requests[i] for i in idxs], is_chat)):
                    out[i] = c
        return out  # type: ignore[return-value]

    def _run(self, requests: list[Request], is_chat: bool) -> list[Completion]:
        """All requests in one engine call (vLLM batches continuously). vLLM validates a batch as a whole (one
        prompt over `max_model_len` rejects all of them), so on failure the batch is halved until the bad requests
        are alone: a few extra calls per bad request, never one call per request. A dead engine is re-raised:
        recorded as failures it would mark the task done with every answer missing."""
        from vllm import SamplingParams as VSampling

        params = [
            VSampling(max_tokens=r.params.max_tokens, temperature=r.params.temperature, top_p=r.params.top_p,
                      stop=list(r.params.stop) or None, seed=request_seed(r))
            for r in requests
        ]
        try:
            if is_chat:
                results = self.llm.chat([list(r.messages) for r in requests], params, use_tqdm=False,
                                        lora_request=self.lora)
            else:
                results = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False,
                                            lora_request=self.lora)
        except Exception as e:  # noqa: BLE001 - errors become data
            if type(e).__name__ == "EngineDeadError":
                raise
            if len(requests) == 1:
                return [Completion.failed(f"{type(e).__name__}: {e}")]
            half = len(requests) // 2
            return self._run(requests[:half], is_chat) + self._run(requests[half:], is_chat)
        return [
            Completion(
                text=res.outputs[0].text,
                finish_reason=res.outputs[0].finish_reason or "stop",
                prompt_tokens=len(res.prompt_token_ids or []),
                completion_tokens=len(res.outputs[0].token_ids),
            )
            for res in results
        ]

    def close(self) -> None:
        """Free the GPU now, not at garbage collection: a worker runs its tasks one after another, and the next
        task's engine needs the memory this one holds. Best effort across vLLM versions."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(llm, "shutdown", None) or getattr(engine_core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:  # noqa: BLE001 - older/newer vLLM without it: the engine is gone either way
            pass
