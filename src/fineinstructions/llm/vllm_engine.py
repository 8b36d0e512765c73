"""In-process vLLM for GPU machines (optional extra `fineinstructions[vllm]`).

vLLM does its own continuous batching, so the whole request list goes in at once. The import is deferred so the
package stays importable on CPU-only machines; constructing the backend without vLLM gives a one-line fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from fineinstructions.llm.base import Completion, LLMBackend, Request


class VLLMBackend(LLMBackend):
    def __init__(self, model: str, revision: str | None = None, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(
                "the vllm backend needs a CUDA machine and the optional extra: pip install 'fineinstructions[vllm]'"
            ) from e
        self.model_id = f"hf:{model}@{revision or 'main'}"
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
        """All requests in one engine call (vLLM batches continuously); on failure, isolate the bad request."""
        from vllm import SamplingParams as VSampling

        params = [
            VSampling(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p, stop=list(p.stop) or None,
                      seed=p.seed)
            for p in (r.params for r in requests)
        ]
        try:
            if is_chat:
                results = self.llm.chat([list(r.messages) for r in requests], params, use_tqdm=False)
            else:
                results = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        except Exception as e:  # noqa: BLE001 - errors become data
            if len(requests) == 1:
                return [Completion.failed(f"{type(e).__name__}: {e}")]
            return [c for r in requests for c in self._run([r], is_chat)]
        return [
            Completion(
                text=res.outputs[0].text,
                finish_reason=res.outputs[0].finish_reason or "stop",
                prompt_tokens=len(res.prompt_token_ids or []),
                completion_tokens=len(res.outputs[0].token_ids),
            )
            for res in results
        ]
