"""What makes two models answer differently, as data: the key of the request cache and of `stage.json`.

A cached answer may only be reused for the same weights, adapter and generation options. Names are not enough: a
user fine-tunes into the same folder twice, or a hub branch moves. So local weights are identified by a hash of
their *content* (every file of a model or adapter folder, or the .gguf file), hub models by the commit their
revision resolves to, and served models by the served name plus an optional user-given revision (a server's
weights cannot be seen from the client). Hashing a multi-GB model costs seconds, so each file's digest is
remembered under the cache home, keyed by its path, size, mtime and inode.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.llm.base import fingerprint

#: files in a model folder that cannot change what it generates
_IGNORED_SUFFIXES = (".md", ".txt", ".png", ".jpg")
#: `LLMConfig.extra` keys that change how requests are run, not what comes back (everything else counts)
_TRANSPORT_EXTRA = {"min_prefix_tokens", "backoff", "max_backoff", "gpu_memory_utilization", "max_num_seqs",
                    "enforce_eager", "swap_space", "device"}


def _memo_path(path: Path, st: os.stat_result) -> Path:
    from fineinstructions.llm.cache import cache_home

    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()).hexdigest()
    return cache_home() / "digests" / key


def file_content_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered until the file changes (size, mtime or inode)."""
    path = Path(path)
    st = path.stat()
    memo = _memo_path(path, st)
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        atomic.write_text(memo, digest)
    except OSError:  # a read-only home only costs speed
        pass
    return digest


def content_digest(path: str | os.PathLike, length: int = 16) -> str:
    """Digest of a file, or of every file in a folder (relative names + contents; docs and dotfiles skipped)."""
    root = Path(path)
    if root.is_file():
        return file_content_digest(root)[:length]
    parts = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.lower().endswith(_IGNORED_SUFFIXES):
                continue
            file = Path(folder) / name
            parts.append((str(file.relative_to(root)), file_content_digest(file)))
    return fingerprint(parts, length=length)


def hub_commit(model: str, revision: str | None) -> str | None:
    """The commit a hub model's revision points to: from the local Hugging Face cache (offline), else asked of the
    hub; None when neither knows (then the revision name stands in)."""
    try:
        from huggingface_hub import constants

        refs = Path(constants.HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / (revision or "main")
        if refs.is_file():
            return refs.read_text().strip()
        if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
            return revision
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
            return None
        from huggingface_hub import model_info

        return model_info(model, revision=revision, timeout=10).sha
    except Exception:  # noqa: BLE001 - offline, gated, unknown: the name and revision must do
        return None


def model_identity(cfg) -> dict[str, Any]:
    """Everything about an `LLMConfig` that changes the answers: the weights (by content or commit), the adapter
    (by content), the engine family and its generation-relevant options."""
    from fineinstructions.llm.hf_local import resolve_model

    family = {"serve": "openai"}.get(cfg.backend, cfg.backend)  # a managed server is an OpenAI-compatible one
    if cfg.backend in ("openai", "serve"):
        weights = f"served:{cfg.model}" + (f"@{cfg.revision}" if cfg.revision else "")
    else:
        name, gguf_file, model_id = resolve_model(cfg.model, cfg.revision)
        local = Path(name) / gguf_file if gguf_file else Path(name)
        # local weights by content alone: the same files under another folder name are the same model
        weights = f"local:{content_digest(local)}" if local.exists() else model_id
    extra = {k: v for k, v in (cfg.extra or {}).items() if k not in _TRANSPORT_EXTRA and k != "model_id"}
    identity: dict[str, Any] = {"family": family, "weights": weights, "options": extra}
    if cfg.backend == "serve" and ((cfg.server_command or "vllm") != "vllm" or cfg.server_args.strip()):
        # another engine, or engine options (--dtype, --quantization, ...): other answers. A plain `vllm serve`
        # shares its cache with the `openai` backend talking to one started by hand
        identity["server"] = [cfg.server_command or "vllm", cfg.server_args]
    from fineinstructions.llm import adapter_folder

    if adapter_folder(cfg):
        identity["adapter"] = content_digest(cfg.adapter)
    return identity
