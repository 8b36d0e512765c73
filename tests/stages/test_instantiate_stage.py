"""Stage `instantiate` against a real local HTTP server playing the model, plus its pure parts."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from llm_stage_helpers import serving, stub_llm, table, write_jsonl, write_shard

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.llm.base import FillTemplate
from fineinstructions.prompts import load_format
from fineinstructions.stages.instantiate import InstantiateConfig, document_window, pair_id, run

DOC = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
       "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. The tower is 330 "
       "metres tall, about the same height as an 81-storey building.")

# template -> what the scripted model answers (JSON unless it is a bare string)
SCRIPT = {
    "who designed <fi>landmark</fi>": {"instruction": "who designed the Eiffel Tower",
                                       "answer": "<excerpt>It is named after<...>from 1887 to 1889.</excerpt>"},
    "how tall is <fi>landmark</fi>": {"instruction": "how tall is the Eiffel Tower",
                                      "answer": "<excerpt>The tower is 330<...>81-storey building.</excerpt> Roughly."},
    "what is the population of <fi>city</fi>": "null",
    "what is <fi>thing</fi> made of": {"instruction": "what is <fi>thing</fi> made of", "answer": "<excerpt>wrought-iron</excerpt>"},
    "who built <fi>landmark</fi>": {"instruction": "who built the Eiffel Tower",
                                    "answer": "<excerpt>It was built by<...>engineers.</excerpt>"},
    "where is <fi>landmark</fi>": {"instruction": "where is the Eiffel Tower",
                                   "answer": "It stands in a well known European capital city that many tourists "
                                             "visit each year, namely <excerpt>Paris, France.</excerpt>"},
    "describe <fi>landmark</fi>": "I am not sure what you mean.",
    "how old is <fi>a famous landmark</fi>": {"instruction": "how old is a famous landmark",
                                              "answer": "<excerpt>It is named after<...>from 1887 to 1889.</excerpt>"},
}


def scripted(text: str) -> str:
    template = re.search(r"Template: (.*)", text).group(1).strip()
    answer = SCRIPT[template]
    return answer if isinstance(answer, str) else json.dumps(answer)


@pytest.fixture
def stub():
    with serving(scripted) as server:
        yield server


def setup_inputs(tmp_path):
    templates = [{"template_id": f"t{i}", "template": t, "num_slots": 1} for i, t in enumerate(SCRIPT)]
    tdir = write_shard(tmp_path / "templatize", schemas.TEMPLATES, templates)
    matches = [{"document_id": "eiffel", "template_id": t["template_id"], "chunk": 0, "score": 0.5, "rank": r}
               for r, t in enumerate(templates, 1)]
    matches.append({"document_id": "eiffel", "template_id": "gone", "chunk": 0, "score": 0.4, "rank": 99})
    mdir = write_shard(tmp_path / "match", schemas.MATCHES, matches, stage={"tasks": 1, "k": 5})
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "eiffel", "text": DOC}, {"id": "unmatched", "text": "Other."}])
    return tdir, mdir, docs


def test_every_pair_is_kept_or_rejected_with_its_reason(tmp_path, stub):
    tdir, mdir, docs = setup_inputs(tmp_path)
    cfg = InstantiateConfig(input=mdir, templates=tdir, documents=docs, output=str(tmp_path / "out"),
                            prompt_format="fewshot", llm=stub_llm(stub), progress=False)
    summary = run(cfg)
    kept = {r["template"]: r for r in table(tmp_path / "out")}
    rejected = {r["template_id"] if r["template"] is None else r["template"]: r for r in table(tmp_path / "out", "rejects")}
    assert set(kept) == {"who designed <fi>landmark</fi>", "how tall is <fi>landmark</fi>"}
    ok = kept["who designed <fi>landmark</fi>"]
    assert ok["answer"] == ("It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
                            "from 1887 to 1889.")
    assert ok["grounding"] == pytest.approx(1.0) and ok["status"] == "ok" and ok["excerpts"] == 1
    assert ok["answer_raw"].startswith("<excerpt>It is named after<...>")
    assert ok["pair_id"] == pair_id("eiffel", "t0") and ok["model_id"] == "openai:stub"
    tall = kept["how tall is <fi>landmark</fi>"]
    span = "The tower is 330 metres tall, about the same height as an 81-storey building."
    assert tall["answer"] == span + " Roughly." and tall["grounding"] == pytest.approx(len(span) / len(span + " Roughly."))
    reasons = {k: r["reason"] for k, r in rejected.items()}
    assert reasons == {
        "what is the population of <fi>city</fi>": "null",
        "what is <fi>thing</fi> made of": "unfilled_slot",
        "who built <fi>landmark</fi>": "excerpt_missing",
        "where is <fi>landmark</fi>": "low_grounding",
        "describe <fi>landmark</fi>": "unparseable",
        "how old is <fi>a famous landmark</fi>": "slot_description_copied",
        "gone": "unknown_template",
    }
    assert all(r["status"] == r["reason"] for r in rejected.values())
    assert rejected["where is <fi>landmark</fi>"]["grounding"] < 0.8
    assert rejected["describe <fi>landmark</fi>"]["raw_output"] == "I am not sure what you mean."
    assert summary.rows_in == 9 and summary.rows_out == 2 and sum(summary.rejects.values()) == 7
    assert summary.skips == {"documents_without_matches": 1}
    assert summary.distributions["grounding"] == {"0.9-1.0": 1, "0.8-0.9": 1, "0.1-0.2": 1}


def test_released_format_sends_the_json_contract(tmp_path, stub):
    fmt = load_format("instantiate", "released")
    req = fmt.render({"template": "who designed <fi>landmark</fi>", "document": DOC})
    assert [m["role"] for m in req.messages] == ["user"]
    assert json.loads(req.messages[0]["content"]) == {"instruction_template": "who designed <fi>landmark</fi>",
                                                      "document": DOC}
    assert fmt.parse('{"instantiated_instruction": "who designed X", "answer": "a"}') == {
        "instruction": "who designed X", "answer": "a"}


def test_completion_format_parses_its_own_examples_and_has_a_followup():
    fmt = load_format("instantiate", "fewshot-completion")
    for ex in fmt.examples:
        assert fmt.parse(fmt._assistant(ex)[len(fmt.answer_prefix):]) == {"instruction": ex["instruction"],
                                                                           "answer": ex["answer"]}
    assert fmt.followup.strip().startswith("Answer: <excerpt>")


def test_window_is_centred_on_the_matching_chunk_and_cut_at_spaces():
    text = " ".join(f"w{i:04d}" for i in range(2000))  # 12k characters
    assert document_window(text, 0, 5, None) == text and document_window("short", 3, 5, 100) == "short"
    first = document_window(text, 0, 5, 600)
    assert text.startswith(first) and len(first) <= 600
    for chunk in range(1, 6):
        w = document_window(text, chunk, 5, 600)
        assert w in text and len(w) <= 600 and not w.startswith(" ") and w.split()[0] in text.split()
        centre = text.index(w) + len(w) / 2
        assert abs(centre - len(text) * chunk / 6) < 400


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="--templates"):
        run(InstantiateConfig(input=str(tmp_path), documents="x", output=str(tmp_path / "o")))
    with pytest.raises(UserError, match="run the match stage first"):
        run(InstantiateConfig(input=str(tmp_path), templates=str(tmp_path), documents="x", output=str(tmp_path / "o")))


@pytest.mark.parametrize("prompt_format", ["compact", "fewshot-completion"])
def test_requests_carry_the_constraints_as_the_answer_must_write_them(tmp_path, prompt_format):
    from fineinstructions.llm import LLMConfig
    from fineinstructions.stages.instantiate import Instantiator

    window = 'He said "yes".\nThen left.'
    template = 'why did <fi>a person</fi> say "yes"'
    make = lambda **kw: Instantiator(InstantiateConfig(output=str(tmp_path), prompt_format=prompt_format,  # noqa: E731
                                                       llm=LLMConfig(adapter="none"), **kw), k=5)
    step = make(fill_slots=True)
    req = step._constrained(step.format.render({"template": template, "document": window}, step.params[0]),
                            window, template)
    if prompt_format == "compact":  # JSON answer: escaped window, the instruction key opens the instruction
        assert req.copy_source == json.dumps(window)[1:-1]
        assert req.fill_template == FillTemplate('{"instantiated_instruction": "', json.dumps(template)[1:-1], '"')
    else:  # labelled lines: raw window, the instruction runs from "Instruction:" to the line end
        assert req.copy_source == window and req.fill_template == FillTemplate(" ", template, "\n")
    chosen = step._constrained(step.format.render({"template": template, "document": window}, step.params[0]),
                               window, template, [['"yes" man']])
    # per-slot choices ride along, written as the source is
    assert dataclasses.replace(chosen.fill_template, choices=None) == req.fill_template
    assert chosen.fill_template.choices == (
        (json.dumps('"yes" man')[1:-1] if prompt_format == "compact" else '"yes" man',),)
    assert chosen.to_dict() != req.to_dict()  # and are part of the cache key
    assert make().fill_slots is True  # by default fill_slots follows copy_excerpts
    plain = make(copy_excerpts=False)  # both off: nothing is constrained
    assert plain.fill_slots is False
    req = plain._constrained(plain.format.render({"template": template, "document": window}, plain.params[0]),
                             window, template)
    assert req.copy_source is None and req.fill_template is None
    assert step.prompt_fingerprint != plain.prompt_fingerprint != make().prompt_fingerprint
    with pytest.raises(UserError, match="needs --copy-excerpts"):
        make(fill_slots=True, copy_excerpts=False)


def test_answer_by_retrieval_copies_the_best_sentences_and_nulls_what_cannot_fit(tmp_path):
    """--answer-by retrieve (the embedded default's mode, real MiniLM embedder): the LLM writes only the instruction,
    the answer is the document's best sentences, and a template the window cannot answer is null without asking."""
    asked = []

    def model(text: str) -> str:
        asked.append(re.search(r"Template: (.*)", text).group(1).strip())
        return scripted(text)

    off_topic = "how do I bake <fi>a type of bread</fi> without yeast"
    templates = [{"template_id": "t0", "template": "who designed <fi>landmark</fi>", "num_slots": 1},
                 {"template_id": "t1", "template": off_topic, "num_slots": 1}]
    tdir = write_shard(tmp_path / "templatize", schemas.TEMPLATES, templates)
    mdir = write_shard(tmp_path / "match", schemas.MATCHES,
                       [{"document_id": "eiffel", "template_id": t["template_id"], "chunk": 0, "score": 0.5, "rank": r}
                        for r, t in enumerate(templates, 1)], stage={"tasks": 1, "k": 5})
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "eiffel", "text": DOC}])
    with serving(model) as server:
        cfg = InstantiateConfig(input=mdir, templates=tdir, documents=docs, output=str(tmp_path / "out"),
                                prompt_format="fewshot", llm=stub_llm(server), progress=False, answer_by="retrieve",
                                answer_sentences=2)
        run(cfg)
    (kept,) = table(tmp_path / "out")
    (null,) = table(tmp_path / "out", "rejects")
    assert asked == ["who designed <fi>landmark</fi>"]
    assert kept["instruction"] == "who designed the Eiffel Tower"
    assert "It is named after the engineer Gustave Eiffel" in kept["answer"]  # not the scripted answer: retrieved
    assert kept["answer_raw"].startswith("<excerpt>") and kept["grounding"] > 0.99
    assert null["template"] == off_topic and null["reason"] == "null"
    generated = InstantiateConfig(output=str(tmp_path / "g"), prompt_format="fewshot", answer_by="generate")
    from fineinstructions.stages.instantiate import Instantiator
    assert Instantiator(cfg, k=5).prompt_fingerprint != Instantiator(generated, k=5).prompt_fingerprint
    with pytest.raises(UserError, match="--answer-by"):
        Instantiator(InstantiateConfig(output=str(tmp_path / "x"), answer_by="search"), k=5)


def test_auto_answers_by_retrieval_only_for_the_embedded_default():
    from fineinstructions.llm import LLMConfig
    from fineinstructions.stages.instantiate import answer_mode

    assert answer_mode("auto", LLMConfig()) == "retrieve"
    assert answer_mode("auto", LLMConfig(backend="openai", base_url="http://127.0.0.1:1/v1", model="m")) == "generate"
    assert answer_mode("auto", LLMConfig(model="HuggingFaceTB/SmolLM2-1.7B-Instruct")) == "generate"
    assert answer_mode("generate", LLMConfig()) == "generate"
    assert answer_mode("auto", LLMConfig(adapter="students/instantiate")) == "generate"  # a student writes answers


def test_auto_fills_by_ranking_only_where_it_can():
    from fineinstructions.llm import LLMConfig
    from fineinstructions.stages.instantiate import fill_mode

    served = LLMConfig(backend="openai", base_url="http://127.0.0.1:1/v1", model="m")
    assert fill_mode("auto", "retrieve", LLMConfig()) == "rank"
    assert fill_mode("auto", "generate", LLMConfig()) == "generate"  # ranking needs the retrieved fill choices
    assert fill_mode("auto", "retrieve", served) == "generate"  # and a backend that scores text
    assert fill_mode("generate", "retrieve", LLMConfig()) == "generate"
    with pytest.raises(UserError, match="--fill-by rank needs"):
        fill_mode("rank", "retrieve", served)
    with pytest.raises(UserError, match="--fill-by must be"):
        fill_mode("guess", "retrieve", LLMConfig())
