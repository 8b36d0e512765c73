"""The model card a distilled student ships with: what it is for, its contract, its teacher data, its settings and
its dev scores per epoch -- everything needed to judge it and to train it again."""

from __future__ import annotations

import json
from typing import Any

CONTRACTS = {
    "templatize": "user: the bare query · assistant: {\"template\": ..., \"compatible_document_description\": ...}",
    "instantiate": "user: {\"instruction_template\": ..., \"document\": ...} · assistant: {\"instantiated_instruction\": "
                   "..., \"answer\": ... with <excerpt>START<...>END</excerpt>} or null",
    "judge": "user: {\"instruction\": ..., \"answer\": ...} · assistant: {\"score\": 1-5}",
}


def model_card(meta: dict[str, Any]) -> str:
    stage, best = meta["stage"], meta["best"]
    rows = "\n".join(f"| {h['epoch']}{' (C ' + format(h['c'], 'g') + ')' if 'c' in h else ''} | {h['score']:.3f} | "
                     + " · ".join(f"{k} {v:.3f}" for k, v in h["metrics"].items() if isinstance(v, float)) + " |"
                     for h in meta["history"])
    teacher = ", ".join(f"{k}: {v}" for k, v in meta["teacher"].items())
    classifier = meta["method"] == "classifier"
    usage = (f"fineinstructions {stage} --input ... --output ... --llm-adapter PATH_TO_THIS_FOLDER"
             + ("" if classifier else f" --prompt-format {meta['prompt_format']}"))
    library = {"lora": "peft", "full": "transformers", "classifier": "scikit-learn"}[meta["method"]]
    what = (f"a classifier on frozen `{meta['base_model']}` sentence embeddings (`judge_classifier.py`: features of "
            "the instruction and the answer, a multinomial logistic regression over the scores 1-5 and a keep cut); "
            "no text is generated, and the candidates below are values of its regularisation C" if classifier else
            f"{meta['method']} fine-tuning of `{meta['base_model']}`")
    contract = ("in: the instruction and the answer · out: a score 1-5 (and its expected value)" if classifier
                else CONTRACTS[stage])
    lead = "It" if classifier else "It follows the compact contract of the paper's released models, so it"
    tail = "" if classifier else f"(prompt format `{meta['prompt_format']}`; loss on the assistant tokens only)."
    front = {"library_name": library, "base_model": meta["base_model"],
             "license": "apache-2.0", "tags": ["fineinstructions", f"fineinstructions-{stage}", "distillation"]}
    return f"""---
{chr(10).join(f"{k}: {json.dumps(v)}" for k, v in front.items())}
---

# fineinstructions {stage} student

A small task model for the `{stage}` stage of the FineInstructions recipe, distilled with
`fineinstructions distill` ({what}). {lead} needs no few-shot prompt:

    {contract}

{tail}

## Use

    {usage}

With the embedded default model this student is what `--prompt-format auto` and `--llm-adapter auto` pick.

## Teacher data

{teacher}. Source: `{meta['input']}`{' + augmented: `' + str(meta['augment']) + '`' if meta.get('augment') else ''}.

## Training

{json.dumps(meta['settings'], indent=1)}

Training time: {meta['seconds']:.0f} s on {meta['machine']}.

## Dev scores (goldeval on `{meta['dev']}`; the epoch kept: {best['epoch']})

| epoch | selection score | metrics |
|---|---:|---|
{rows}

Measured on the dev split only; the test split is never used for training or selection. Licence of the weights:
Apache-2.0 like the base model; the teacher data (data/gold/) includes CC BY-SA text (Natural Questions,
WikiText) -- see data/gold/README.md.
"""
