"""llama.cpp backend: runs a quantised GGUF model in-process on CPU through `llama-cpp-python`.

Why it exists: on a small CPU box the GGUF's native quantised kernels decode faster and in far less memory than
de-quantising the same file into float32 torch weights. Why it is optional: `llama-cpp-python` ships as a source
distribution only, so installing it compiles llama.cpp (about 10 minutes on 2 cores) and needs a C/C++ toolchain
and CMake. The import therefore happens lazily, and the error says how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fineinstructions.llm.base import Completion, LLMBackend, Request, request_seed
from fineinstructions.llm.identity import content_digest

_INSTALL_HINT = (
    "llama.cpp backend needs the optional extra: pip install 'fineinstructions[llamacpp]' "
    "(builds llama-cpp-python from source, ~10 min)"
)


class LlamaCppBackend(LLMBackend):
    """`LLMBackend` over `llama_cpp.Llama`.

    Chat requests go through `create_chat_completion`, which renders the chat template stored in the GGUF's
    metadata, so prompts match what the model was trained on; raw prompts go through `create_completion`
    unchanged. llama.cpp's high-level API decodes one sequence at a time, so `generate` loops; a failure in one
    request becomes a failed `Completion` rather than aborting the batch.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int | None = None,
        verbose: bool = False,
    ) -> None:
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"GGUF model file not found: {model_path!r}")
        try:
            import llama_cpp  # lazy: optional, compiled dependency
        except ImportError as e:
            raise ImportError(_INSTALL_HINT) from e

        self.model_path = model_path
        self.seed = seed
        threads = n_threads or os.cpu_count() or 1
        kwargs: dict[str, Any] = dict(
            model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=verbose
        )
        if seed is not None:
            kwargs["seed"] = seed
        self._llm: Any = llama_cpp.Llama(**kwargs)
        self.model_id = f"llamacpp:{os.path.basename(model_path)}:{content_digest(model_path, 12)}"

    def _call(self, req: Request) -> Completion:
        if self._llm is None:
            raise RuntimeError("LlamaCppBackend is closed")
        p = req.params
        seed = request_seed(req) if p.seed is not None else self.seed
        kwargs: dict[str, Any] = dict(
            max_tokens=p.max_tokens,
            temperature=p.temperature,  # llama-cpp-python samples greedily when temperature <= 0
            top_p=p.top_p,
            stop=list(p.stop) or None,
        )
        if seed is not None:
            kwargs["seed"] = seed
        if req.messages is not None:
            out = self._llm.create_chat_completion(messages=[dict(m) for m in req.messages], **kwargs)
            choice = out["choices"][0]
            text = choice["message"].get("content") or ""
        else:
            out = self._llm.create_completion(prompt=req.prompt, **kwargs)
            choice = out["choices"][0]
            text = choice["text"]
        usage = out.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        results: list[Completion] = []
        for req in requests:
            try:
                results.append(self._call(req))
            except Exception as e:  # noqa: BLE001 - per-request failures are data, see Completion
                results.append(Completion.failed(f"{type(e).__name__}: {e}"))
        return results

    def close(self) -> None:
        """Free the model and its KV cache; safe to call twice."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None and hasattr(llm, "close"):
            llm.close()
