import json
import math

import pytest
import torch
import transformers

from fineinstructions.evaluate.scoring import (
    PROMPT, answer_nll, cut_at_stop, evaluate_model, generate_answers, load_qa,
)
from fineinstructions.llm.hf_local import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()  # the embedded SmolLM2 tokenizer: a real BPE with a BOS token


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return transformers.LlamaForCausalLM(config).eval()


def _manual_nll(model, tokenizer, prompt: str, answer: str) -> tuple[float, int]:
    """One unbatched forward pass, no padding: the reference the batched implementation must match."""
    bos = [tokenizer.bos_token_id]
    prompt_ids = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = bos + tokenizer(prompt + " " + answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    answer_positions = range(len(prompt_ids), len(ids))
    return -sum(logprobs[t - 1, ids[t]].item() for t in answer_positions), len(answer_positions)


ITEMS = [
    (PROMPT.format(query="who wrote he ain't heavy he's my brother lyrics"), "Bobby Scott"),
    (PROMPT.format(query="capital of France?"), "Paris"),
    (PROMPT.format(query="when was the last time anyone was on the moon"), "14 December 1972 UTC — Apollo 17 crew"),
]


def test_answer_nll_matches_a_manual_forward_pass(model, tokenizer):
    expected = [_manual_nll(model, tokenizer, p, a) for p, a in ITEMS]
    for batch_size in (1, 2, 3):  # padding next to longer and shorter neighbours must not change a score
        scored = answer_nll(model, tokenizer, ITEMS, batch_size=batch_size)
        for (nll, n_tokens, n_bytes), (want_nll, want_tokens), (_, answer) in zip(scored, expected, ITEMS):
            assert nll == pytest.approx(want_nll, abs=1e-4)
            assert n_tokens == want_tokens
            assert n_bytes == len((" " + answer).encode("utf-8"))
    assert scored[2][2] == 1 + len("14 December 1972 UTC ") + 3 + len(" Apollo 17 crew")  # "—" is 3 bytes


@pytest.mark.parametrize("prompt, answer", [("Answer:\n", " y"), ("Answer:\n", "\tz"), ("Answer: ", "")])
def test_answer_nll_boundary_merge_uses_the_prompt_alone_length(model, tokenizer, prompt, answer):
    # the prompt's trailing "\n" or space merges with the continuation's leading space into one token
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joint_ids = tokenizer(prompt + " " + answer, add_special_tokens=False)["input_ids"]
    assert joint_ids[: len(prompt_ids)] != prompt_ids  # the tokenizer really merges here
    [(nll, n_tokens, n_bytes)] = answer_nll(model, tokenizer, [(prompt, answer)])
    assert n_bytes == len(" " + answer)
    if len(joint_ids) > len(prompt_ids):
        assert n_tokens == len(joint_ids) - len(prompt_ids)
        assert nll == pytest.approx(_manual_nll(model, tokenizer, prompt, answer)[0], abs=1e-4)
    else:  # the merge swallowed the whole continuation: the merged (last) token is scored instead of nothing
        assert n_tokens == 1 and nll > 0


def test_answer_nll_leaves_the_tokenizer_as_it_was(model, tokenizer):
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    answer_nll(model, tokenizer, ITEMS[:2])
    assert (tokenizer.padding_side, tokenizer.pad_token) == (side, pad)


def test_cut_at_stop():
    assert cut_at_stop(" Paris\nInstruction: next", ("\n", "Instruction:")) == "Paris"
    assert cut_at_stop(" Paris Instruction: x\n", ("\n", "Instruction:")) == "Paris"
    assert cut_at_stop(" no stop here ", ("\n",)) == "no stop here"
    assert cut_at_stop("\nParis", ("\n",)) == ""


def test_generate_answers_is_greedy_batched_and_restores_padding(model, tokenizer):
    prompts = [p for p, _ in ITEMS]
    side = tokenizer.padding_side
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=8, stop=(), batch_size=3)
    assert tokenizer.padding_side == side
    assert batched == generate_answers(model, tokenizer, prompts, max_new_tokens=8, stop=(), batch_size=3)
    assert batched == [generate_answers(model, tokenizer, [p], max_new_tokens=8, stop=())[0] for p in prompts]
    assert all(batched)


def test_generate_answers_cuts_at_the_first_stop_string(model, tokenizer):
    prompt = ITEMS[0][0]
    [full] = generate_answers(model, tokenizer, [prompt], max_new_tokens=8, stop=())
    stop = full[len(full) // 2 :][:2]  # a piece of the model's own output
    [cut] = generate_answers(model, tokenizer, [prompt], max_new_tokens=8, stop=("never appears", stop))
    assert cut == full[: full.index(stop)].strip()


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_qa_keeps_answerable_rows_and_samples_by_seed(tmp_path):
    rows = [{"id": i, "query": f" question {i} ", "answers": [f"answer {i}", ""]} for i in range(10)]
    rows += [{"id": "no-answer", "query": "q", "answers": ["", " "]}, {"id": "no-query", "query": "", "answers": ["a"]}]
    path = _write_jsonl(tmp_path / "qa.jsonl", rows)
    loaded = load_qa(path)
    assert [r["id"] for r in loaded] == list(range(10))
    assert loaded[3]["query"] == "question 3" and loaded[3]["answers"] == ["answer 3"]
    sample = load_qa(path, limit=4, seed=1)
    assert len(sample) == 4 and sample == load_qa(path, limit=4, seed=1)
    assert [r["id"] for r in sample] == sorted(r["id"] for r in sample)  # file order
    assert sample != load_qa(path, limit=4, seed=2)
    assert len(load_qa(path, limit=50)) == 10


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"query": "q", "answers": ["a"]}\n{not json\n', r"qa\.jsonl:2: not valid JSON"),
        ('["q", "a"]\n', "expected a JSON object"),
        ('{"query": "q", "answers": []}\n\n', "no rows"),
    ],
)
def test_load_qa_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "qa.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_qa(path)


def test_evaluate_model_end_to_end(model, tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = [
        {"id": "1", "query": "capital of France?", "answers": ["Paris", "Paris, France"]},
        {"id": "2", "query": "who wrote Hamlet", "answers": ["William Shakespeare"]},
        {"id": "3", "query": "largest planet", "answers": ["Jupiter"]},
        {"id": "4", "query": "boiling point of water in celsius", "answers": ["100", "100 degrees"]},
    ]
    qa_path = _write_jsonl(tmp_path / "qa.jsonl", rows)
    result = evaluate_model(model_dir, qa_path, limit=None, max_new_tokens=4)

    items = [(PROMPT.format(query=r["query"]), r["answers"][0]) for r in rows]
    nats, tokens, n_bytes = (sum(col) for col in zip(*answer_nll(model, tokenizer, items)))
    assert result["model"] == str(model_dir) and result["n"] == 4
    assert result["nll_per_token"] == pytest.approx(nats / tokens, abs=1e-4)
    assert result["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes, abs=1e-4)
    assert result["predictions"] == generate_answers(model, tokenizer, [p for p, _ in items], max_new_tokens=4)
    assert 0.0 <= result["exact_match"] <= result["f1"] <= 1.0
    assert [e["query"] for e in result["examples"]] == [r["query"] for r in rows]
    assert result["examples"][0]["answers"] == ["Paris", "Paris, France"]
    assert result["examples"][0]["prediction"] == result["predictions"][0]


def test_evaluation_runs_on_the_training_device(model, tokenizer, tmp_path, monkeypatch):
    """Unless told otherwise, a model is scored where training runs: the GPU when there is one, not the CPU beside
    it. With CUDA reported available, evaluation really moves the model there (this CPU-only torch then refuses,
    which shows the choice without faking a result); on this machine it runs on the CPU, and says so."""
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    qa_path = _write_jsonl(tmp_path / "qa.jsonl", [{"query": "capital of France?", "answers": ["Paris"]}])
    if not torch.cuda.is_available():
        with monkeypatch.context() as m:
            m.setattr(torch.cuda, "is_available", lambda: True)
            with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
                evaluate_model(tmp_path / "model", qa_path, limit=None, max_new_tokens=2)
            assert evaluate_model(tmp_path / "model", qa_path, max_new_tokens=2, device="cpu")["device"] == "cpu"

    from fineinstructions.evaluate.scoring import resolve_device
    from fineinstructions.pretrain.loop import training_device

    result = evaluate_model(tmp_path / "model", qa_path, limit=None, max_new_tokens=2)
    assert result["device"] == resolve_device("auto") == str(training_device())
    assert result["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
