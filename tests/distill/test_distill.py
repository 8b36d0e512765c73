"""`fineinstructions distill` on a tiny base model (seconds): the loss goes down, the student is a loadable adapter
that changes the backend's answers and its cache key, the best dev epoch is kept, a killed run resumes; teacher
data from a gold file and from a stage's output folder; the compact contract's parser on student-style outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fineinstructions.cli import main
from fineinstructions.distill.examples import compress_check, from_gold, from_stage, student_format
from fineinstructions.llm import LLMConfig, Request, SamplingParams, make_backend

ROOT = Path(__file__).resolve().parents[2]
GOLD = ROOT / "data" / "gold"


def few(stage: str, split: str, n: int, tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in (GOLD / split / f"{stage}.jsonl").open()][:n]
    path = tmp_path / split / f"{stage}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").open()]


@pytest.mark.slow
def test_a_tiny_distill_run_learns_and_writes_a_loadable_student(tmp_path):
    """Six gold rows, two epochs of LoRA on the real embedded model: the target loss falls, and the adapter loads
    in the transformers backend, changes its answers and its cache key."""
    teacher = tmp_path / "teacher.jsonl"  # not under train/: no dev split, the last epoch is kept
    teacher.write_text(few("templatize", "train", 6, tmp_path).read_text())
    out = tmp_path / "student"
    assert main(["distill", "--stage", "templatize", "--input", str(teacher), "--output", str(out), "--epochs", "2",
                 "--lr", "0.002", "--batch-size", "2", "--no-progress"]) == 0
    log = losses(out)
    assert len(log) == 6 and log[-1] < 0.7 * log[0]  # 3 steps an epoch; the target loss falls
    meta = json.loads((out / "student.json").read_text())
    assert meta["dev"] is None and meta["best"]["epoch"] == 2 and meta["prompt_format"] == "compact"
    assert meta["teacher"]["examples"] == 6 and meta["settings"]["teacher_fingerprint"]
    assert (out / "adapter_model.safetensors").is_file() and "fineinstructions templatize student" in (
        out / "README.md").read_text()

    prompt = [Request.chat([{"role": "user", "content": "who painted the mona lisa"}], SamplingParams(max_tokens=24))]
    with make_backend(LLMConfig(adapter="none", cache_path=str(tmp_path / "c"))) as base:
        plain = base.generate(prompt)[0]
    with make_backend(LLMConfig(adapter=str(out), cache_path=str(tmp_path / "c"))) as student:
        taught = student.generate(prompt)[0]
    assert not taught.cached and taught.text != plain.text  # another model: other answers, another cache key


def test_each_epoch_is_scored_on_dev_and_the_best_is_kept(tmp_path, tiny_model):
    teacher = few("templatize", "train", 4, tmp_path)
    few("templatize", "dev", 2, tmp_path)  # picked up as the dev split: dev/ beside train/
    out = tmp_path / "student"
    assert main(["distill", "--stage", "templatize", "--input", str(teacher), "--output", str(out),
                 "--base-model", str(tiny_model), "--epochs", "2", "--batch-size", "2", "--no-progress"]) == 0
    meta = json.loads((out / "student.json").read_text())
    assert meta["dev"].endswith("dev/templatize.jsonl") and [h["epoch"] for h in meta["history"]] == [1, 2]
    assert all(set(h["metrics"]) == {"n", "valid_rate", "slot_f1"} and h["metrics"]["n"] == 2
               for h in meta["history"])
    assert meta["best"]["score"] == max(h["score"] for h in meta["history"])
    assert (out / "eval" / "epoch-2" / "predictions.jsonl").is_file()
    # the same command again finds its settings and its finished epochs: nothing to train, the time is kept
    assert main(["distill", "--stage", "templatize", "--input", str(teacher), "--output", str(out),
                 "--base-model", str(tiny_model), "--epochs", "2", "--batch-size", "2", "--no-progress"]) == 0
    assert len(losses(out)) == 4
    assert json.loads((out / "student.json").read_text())["seconds"] == meta["seconds"] > 0
    # other settings are refused unless --overwrite
    assert main(["distill", "--stage", "templatize", "--input", str(teacher), "--output", str(out),
                 "--base-model", str(tiny_model), "--epochs", "3", "--no-progress"]) == 2


def test_a_killed_run_resumes_after_its_last_finished_epoch(tmp_path, tiny_model):
    """`fit` stopped after one epoch (as a kill after the checkpoint would), then run again: the same losses as
    an uninterrupted run, step for step."""
    from fineinstructions.distill.train import encode, fit, with_lora
    from fineinstructions.llm.hf_local import load_model

    fmt = student_format("templatize")
    data_rows = from_gold("templatize", few("templatize", "train", 6, tmp_path), fmt).examples

    def run(out: Path, stop: int | None):
        import torch

        model, tok, _ = load_model(str(tiny_model))
        torch.manual_seed(0)
        model = with_lora(model, 4, 8, 0.0, None)
        data, _ = encode(data_rows, tok, 512)
        return fit(model, tok, data, out=out, method="lora", epochs=3, lr=0.01, batch_size=3, grad_accum=1,
                   warmup=0.1, seed=0, evaluate=lambda epoch, student: (float(-epoch), {}), progress=False,
                   stop_after_epochs=stop)

    run(tmp_path / "a", None)
    first = run(tmp_path / "b", 1)
    assert [h["epoch"] for h in first["history"]] == [1]
    second = run(tmp_path / "b", None)
    assert [h["epoch"] for h in second["history"]] == [1, 2, 3] and second["best_epoch"] == 1
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), rel=1e-5)


def test_teacher_data_from_a_stage_output_folder(tmp_path):
    """A templatize run's kept rows and an instantiate run's kept pairs and null rejects (the teacher's own
    excerpt shorthand, the window rebuilt from the documents) become examples in the student's contract."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineinstructions import schemas

    def shard(folder: Path, schema, rows, name="part-00000.parquet"):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema),
                       folder / name)

    shard(tmp_path / "t", schemas.TEMPLATES, [{"template_id": "1", "query": "who wrote hamlet",
                                               "template": "who wrote <fi>a play</fi>",
                                               "compatible_document_description": "A page about a play."}])
    t = from_stage("templatize", tmp_path / "t", student_format("templatize"))
    assert json.loads(t.examples[0].target) == {"template": "who wrote <fi>a play</fi>",
                                                "compatible_document_description": "A page about a play."}
    assert t.examples[0].messages[-1]["content"] == "who wrote hamlet"
    doc = "Hamlet is a tragedy. It was written by William Shakespeare around 1600."
    shard(tmp_path / "i", schemas.PAIRS, [{"pair_id": "p", "document_id": "d1", "chunk": 0, "status": "ok",
                                           "template": "who wrote <fi>a play</fi>",
                                           "instruction": "who wrote Hamlet",
                                           "answer_raw": "<excerpt>It was written<...>around 1600.</excerpt>"}])
    shard(tmp_path / "i" / "rejects", schemas.PAIRS_REJECTS, [{"pair_id": "q", "document_id": "d1", "chunk": 0,
                                                              "template": "how tall is <fi>a tower</fi>",
                                                              "reason": "null"}], "part-00000.parquet")
    i = from_stage("instantiate", tmp_path / "i", student_format("instantiate"), documents={"d1": doc})
    assert [json.loads(e.target) for e in i.examples] == [
        {"instantiated_instruction": "who wrote Hamlet", "answer": "<excerpt>It was written<...>around 1600.</excerpt>"},
        None]
    assert json.loads(i.examples[0].messages[-1]["content"]) == {"instruction_template": "who wrote <fi>a play</fi>",
                                                                 "document": doc}


def test_gold_answers_become_compact_excerpts_that_expand_back():
    fmt = student_format("instantiate")
    data = from_gold("instantiate", GOLD / "dev" / "instantiate.jsonl", fmt)
    assert data.examples and not data.skipped
    nulls = [e for e in data.examples if e.target == "null"]
    assert nulls and len(nulls) < len(data.examples)
    for e in data.examples:
        if e.target != "null":
            assert compress_check(e)  # expands against its own document to a >= 80 % grounded answer


@pytest.mark.parametrize("stage, output, expect", [
    ("templatize", '{"template": "who wrote <fi>a play</fi>", "compatible_document_description": "A page about a '
                   'play and its author."}', ("who wrote <fi>a play</fi>", None)),
    ("instantiate", '{"instantiated_instruction": "who wrote Hamlet", "answer": "<excerpt>It was written<...>around '
                    '1600.</excerpt>"}', "who wrote Hamlet"),
    ("instantiate", "null", None),
    ("judge", '{"score": 4}', 4),
])
def test_the_compact_parsers_read_student_outputs(stage, output, expect):
    from fineinstructions.parsing import is_null_answer, parse_score

    parsed = student_format(stage).parse(output)
    if stage == "templatize":
        assert parsed["template"] == expect[0] and parsed["compatible_document_description"].startswith("A page")
    elif expect is None:
        assert is_null_answer(output)
    elif stage == "instantiate":
        assert parsed["instruction"] == expect and parsed["answer"].startswith("<excerpt>")
    else:
        assert parse_score(parsed["score"]) == expect


def test_a_student_continues_from_a_finished_adapter(tmp_path, tiny_model):
    """`--init-adapter`: training resumes from a finished student's LoRA weights (more epochs or more data), so
    its first loss is the finished student's level, not a fresh adapter's."""
    teacher = few("templatize", "train", 4, tmp_path)
    common = ["distill", "--stage", "templatize", "--input", str(teacher), "--base-model", str(tiny_model),
              "--batch-size", "2", "--lr", "0.01", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "a"), "--epochs", "3"]) == 0
    assert main([*common, "--output", str(tmp_path / "b"), "--epochs", "1",
                 "--init-adapter", str(tmp_path / "a")]) == 0
    fresh, continued = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert continued[0] < fresh[0] and continued[0] == pytest.approx(fresh[-1], rel=0.5)
    assert json.loads((tmp_path / "b" / "adapter_config.json").read_text())["r"] == 8  # the finished one's rank


def test_the_target_loss_equals_the_full_logits_loss(tmp_path, tiny_model):
    """Logits only from the first target position on (memory) give exactly the loss over full logits."""
    import torch
    import torch.nn.functional as F

    from fineinstructions.distill.train import IGNORE, collate, encode, target_loss
    from fineinstructions.llm.hf_local import load_model

    model, tok, _ = load_model(str(tiny_model))
    data, _ = encode(from_gold("templatize", few("templatize", "train", 3, tmp_path),
                               student_format("templatize")).examples, tok, 512)
    ids, labels, mask = collate(data, tok.pad_token_id or 0)
    with torch.no_grad():
        loss, count = target_loss(model, ids, labels, mask)
        logits = model(input_ids=ids, attention_mask=mask).logits
        shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE).reshape(-1)
        full = F.cross_entropy(logits.reshape(-1, logits.size(-1)), shifted, ignore_index=IGNORE, reduction="sum")
    assert count == int((shifted != IGNORE).sum()) > 0 and float(loss) == pytest.approx(float(full), rel=1e-5)


def test_balance_repeats_rarer_judge_scores_up_to_the_commonest(tmp_path, tiny_model):
    from collections import Counter

    teacher = few("judge", "train", 12, tmp_path)
    scores = Counter(json.loads(line)["score"] for line in teacher.read_text().splitlines())
    out = tmp_path / "student"
    assert main(["distill", "--stage", "judge", "--input", str(teacher), "--output", str(out), "--balance",
                 "--base-model", str(tiny_model), "--epochs", "1", "--batch-size", "4", "--no-progress"]) == 0
    meta = json.loads((out / "student.json").read_text())
    assert meta["teacher"]["examples"] == len(scores) * max(scores.values()) and meta["settings"]["balance"]


def test_a_classifier_judge_distils_from_a_gold_file_and_from_a_judge_folder(tmp_path):
    """`--method classifier`: each C of the grid is scored on dev through the judge stage; the best is written with
    its card; a judge stage's output (kept and rejected pairs) is teacher data too."""
    from fineinstructions.distill.classifier import GRID, judge_pairs
    from fineinstructions.judge_classifier import JudgeClassifier

    train, dev = few("judge", "train", 60, tmp_path), few("judge", "dev", 12, tmp_path)
    out = tmp_path / "student"
    assert main(["distill", "--stage", "judge", "--method", "classifier", "--input", str(train), "--output",
                 str(out), "--no-progress"]) == 0
    meta = json.loads((out / "student.json").read_text())
    assert meta["dev"] == str(dev) and [h["c"] for h in meta["history"]] == list(GRID)
    assert meta["best"]["score"] == max(h["score"] for h in meta["history"])
    assert meta["teacher"]["examples"] == 60 and meta["best"]["metrics"]["n"] == 12
    JudgeClassifier.load(out)  # loads
    assert "scikit-learn" in (out / "README.md").read_text()
    # the student judges a copy of the dev pairs as a stage; its output is teacher data for another classifier
    assert main(["goldeval", "judge", "--input", str(dev), "--output", str(tmp_path / "ge"), "--llm-adapter",
                 str(out), "--no-progress"]) == 0
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineinstructions import schemas
    gold = [json.loads(line) for line in train.open()]
    folder = tmp_path / "judged"
    (folder / "rejects").mkdir(parents=True)
    for where, rows in ((folder, gold[:30]), (folder / "rejects", gold[30:])):
        pq.write_table(pa.Table.from_pylist([{"pair_id": r["id"], "instruction": r["instruction"],
                                              "answer": r["answer"], "score": r["score"]} for r in rows],
                                            schema=schemas.JUDGED), where / "part-00000.parquet")
    pairs, skipped = judge_pairs(folder)
    assert len(pairs) == 60 and not skipped
    assert main(["distill", "--stage", "judge", "--method", "classifier", "--input", str(folder), "--output",
                 str(tmp_path / "from-stage"), "--dev", str(dev), "--no-progress"]) == 0
    assert main(["distill", "--stage", "templatize", "--method", "classifier", "--input", str(train), "--output",
                 str(tmp_path / "x")]) == 2
