"""`fineinstructions experiment CONFIG --output DIR`: the paper's comparison, token for token, on your corpus.

From one finished `run` (its `budget/standard` and `budget/instructions` corpora) it builds the arms, trains one
model per arm and seed with the same token budget, model shape, initial weights (same seed) and one shared
tokenizer, evaluates every model on held-out human question → answer pairs with the same prompt, and writes

    DIR/results.json, DIR/results.md    mean ± std over seeds per arm (answer NLL, bits/byte, EM, F1, final loss)
    DIR/results.png                     loss curves (mean over seeds) and the metrics with error bars
    DIR/arms/<arm>/seed<k>/             each training run (resumable: rerun the command to continue)

Arms: `standard` (the documents), `fineinstructions` (the recipe's pairs), `wrap` (WRAP-style QA rephrasings of
the same documents by the same LLM engine, made with the `rephrase` stage unless a corpus is given).
The tokenizer is trained once on all arms' corpora together, so token counts mean the same thing in every arm.
Every arm's corpus is packed and checked before any model trains: an arm with no loss targets under its `loss_on`
is refused. The results say per arm how many target tokens its corpus has and how many times the token budget
reads it (epochs); an arm that repeats its corpus more than `REPEAT_WARNING` times is flagged, since its scores
then measure memorising a small corpus as much as the corpus's kind of text.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.config import build, option
from fineinstructions.errors import UserError
from fineinstructions.llm import LLMConfig
from fineinstructions.pretrain.data import LOSS_ON
from fineinstructions.pretrain.loop import TrainOptions

log = logging.getLogger(__name__)

ARMS = ("standard", "fineinstructions", "wrap")
METRICS = ("nll_per_token", "bits_per_byte", "exact_match", "f1", "final_loss", "win_rate_vs_standard",
           "judge_unreadable_rate")
REPEAT_WARNING = 1.5  # epochs over an arm's corpus above which results.md warns


@dataclass
class WrapOptions:
    prompt_format: str = option("auto", "rephrase prompt format (qa | qa-completion | YAML path)")
    chunk_chars: int = option(1200, "characters per rephrased chunk")
    limit: int = option(-1, "rephrase at most this many documents (-1: all)")
    llm: LLMConfig = option(factory=LLMConfig)


@dataclass
class ExperimentConfig:
    run: str | None = option(None, "a finished `fineinstructions run` folder (uses budget/standard, "
                                   "budget/instructions)")
    arms: list[str] = field(default_factory=lambda: list(ARMS), metadata={"help": "arms to train"})
    corpora: dict[str, str] = field(default_factory=dict, metadata={"help": "arm -> corpus path (overrides run)"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "one model per arm and seed"})
    tokenizer: str | None = option(None, "HF tokenizer name/dir; default: a BPE trained on all arms' corpora")
    vocab_size: int = option(8192, "vocabulary of the shared BPE")
    loss_on: str | dict[str, str] = option(
        "all", "loss targets: `all` (every token) or `answer` (the tokens after '\\n\\nAnswer:') for every arm, or a "
               "mapping arm -> all | answer, e.g. {fineinstructions: answer} (arms left out: all); an arm whose "
               "corpus has no target under its objective is refused before any training")
    qa: str | None = option(None, "held-out question → answer jsonl (query, answers)")
    eval_limit: int = option(200, "questions evaluated per model (a seeded sample)")
    max_new_tokens: int = option(24, "tokens generated per answer")
    pairwise: bool = option(False, "also judge each arm's answers against the standard arm's (same seed) with an "
                                   "LLM judge: position-swapped win rate")
    pairwise_limit: int = option(100, "questions the judge compares per model pair")
    judge: LLMConfig = option(factory=LLMConfig)
    train: TrainOptions = option(factory=TrainOptions)
    wrap: WrapOptions = option(factory=WrapOptions)
    lm_eval_tasks: list[str] = field(default_factory=list, metadata={
        "help": "lm-evaluation-harness tasks scored on every model too (e.g. [hellaswag, arc_easy]; their datasets "
                "must be reachable), each task's main metric added to the results table, mean ± std over seeds"})
    lm_eval_include: str | None = option(None, "a folder of extra lm-evaluation-harness task YAMLs (your own tasks)")
    lm_eval_limit: int | None = option(None, "examples per harness task (default: all)")
    device: str = option("auto", "evaluation device: auto (where the models train: the GPU when there is one, else "
                                 "the CPU) | cpu | cuda")
    progress: bool = option(True, "progress bars")


def load_config(values: dict[str, Any]) -> ExperimentConfig:
    cfg = build(ExperimentConfig, values, where="experiment config")
    unknown = sorted(set(cfg.arms) - set(ARMS))
    if unknown:
        raise UserError(f"unknown arm(s) {', '.join(unknown)}; arms are: {', '.join(ARMS)}")
    loss_on_by_arm(cfg)  # refuse a bad loss_on now, not after the first arm has trained
    if not cfg.seeds:
        raise UserError("experiment needs at least one seed")
    if not cfg.qa or not Path(cfg.qa).is_file():
        raise UserError(f"experiment needs qa: a jsonl of held-out questions with answers (got {cfg.qa!r})")
    return cfg


def corpus_for(arm: str, cfg: ExperimentConfig, out: Path) -> str:
    """Where an arm's training text is; the wrap arm is made here (rephrase stage, resumable) when not given."""
    if arm in cfg.corpora:
        return cfg.corpora[arm]
    if arm == "wrap":
        from fineinstructions.stages.rephrase import RephraseConfig
        from fineinstructions.stages.rephrase import run as rephrase

        w = cfg.wrap
        rephrase(RephraseConfig(input=corpus_for("standard", cfg, out), output=str(out / "wrap"), format="parquet",
                                id_column="document_id", limit=w.limit, prompt_format=w.prompt_format,
                                chunk_chars=w.chunk_chars, llm=w.llm, progress=cfg.progress))
        return str(out / "wrap")
    if not cfg.run:
        raise UserError(f"arm {arm}: give `run:` (a finished run folder) or `corpora: {{{arm}: PATH}}`")
    path = Path(cfg.run) / "budget" / ("standard" if arm == "standard" else "instructions")
    if not sorted(path.glob("part-*.parquet")):
        raise UserError(f"arm {arm}: no corpus in {path} (finish the run's budget stage first)")
    return str(path)


def loss_on_by_arm(cfg: ExperimentConfig) -> dict[str, str]:
    """Each arm's loss targets from `loss_on`: one objective for all arms, or a mapping (missing arms: all)."""
    spec = cfg.loss_on if isinstance(cfg.loss_on, dict) else {arm: cfg.loss_on for arm in cfg.arms}
    if not isinstance(spec, dict) or not all(isinstance(k, str) for k in spec):
        raise UserError(f"loss_on: expected all, answer or a mapping arm -> all | answer, got {cfg.loss_on!r}")
    unknown = sorted(set(spec) - set(ARMS))
    if unknown:
        raise UserError(f"loss_on names unknown arm(s) {', '.join(unknown)}; arms are: {', '.join(ARMS)}")
    bad = {arm: v for arm, v in spec.items() if v not in LOSS_ON}
    if bad:
        raise UserError(f"loss_on: {bad} -- each arm's loss targets are one of {', '.join(LOSS_ON)}")
    return {arm: spec.get(arm, "all") for arm in cfg.arms}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_experiment(cfg: ExperimentConfig, output: str) -> dict[str, Any]:
    from fineinstructions.evaluate.scoring import evaluate_model, resolve_device
    from fineinstructions.stages.evaluate import write_predictions
    from fineinstructions.stages.pretrain import PretrainConfig, tokenizer_for
    from fineinstructions.stages.pretrain import run as pretrain

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    corpora = {arm: corpus_for(arm, cfg, out) for arm in cfg.arms}
    _check_text(corpora)
    base = PretrainConfig(tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size, progress=cfg.progress,
                          **asdict(cfg.train))
    tokenizer = tokenizer_for(base, list(corpora.values()), out / "tokenizer")
    loss_on = loss_on_by_arm(cfg)
    arm_configs = {arm: PretrainConfig(**{**asdict(base), "input": path, "loss_on": loss_on[arm],
                                          "data_dir": str(out / "arms" / arm / "data")})  # packed once per arm
                   for arm, path in corpora.items()}
    training = _pack_arms(arm_configs, tokenizer)
    device = resolve_device(cfg.device)
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in cfg.arms}
    for arm, arm_cfg in arm_configs.items():
        for seed in cfg.seeds:
            where = out / "arms" / arm / f"seed{seed}"
            trained = pretrain(PretrainConfig(**{**asdict(arm_cfg), "output": str(where), "seed": seed}),
                               tokenizer=tokenizer)
            metrics = evaluate_model(where / "model", cfg.qa, limit=cfg.eval_limit, seed=0,
                                     max_new_tokens=cfg.max_new_tokens, device=device)
            write_predictions(metrics, where / "eval")
            harness = _harness(cfg, where, device)
            log_rows = [json.loads(line) for line in (where / "loss.jsonl").open()]
            runs[arm].append({"seed": seed, "final_loss": trained["final_loss"], "tokens": trained["tokens"],
                              "corpus_tokens": trained["data"]["tokens"], "loss_curve": log_rows,
                              "train_device": trained["device"], "eval_device": metrics["device"],
                              **{k: metrics[k] for k in ("nll_per_token", "bits_per_byte", "exact_match", "f1")},
                              **harness, "examples": metrics["examples"], "predictions": metrics["predictions"],
                              "queries": [row["query"] for row in metrics["rows"]]})
        training[arm].update(training_tokens=runs[arm][0]["tokens"],
                             epochs=runs[arm][0]["tokens"] / training[arm]["corpus_tokens"])
    if cfg.pairwise:
        judge_against_standard(runs, cfg)
    for rs in runs.values():
        for r in rs:
            del r["predictions"], r["queries"]
    results = {"arms": {arm: _summarise(rs) for arm, rs in runs.items()}, "training": training,
               "warnings": _repeat_warnings(training), "runs": runs, "corpora": corpora, "seeds": cfg.seeds,
               "qa": cfg.qa, "eval_limit": cfg.eval_limit, "train": asdict(cfg.train), "loss_on": loss_on}
    for warning in results["warnings"]:
        log.warning("warning: %s", warning)
    atomic.write_json(out / "results.json", results, indent=1, default=str)
    atomic.write_text(out / "results.md", results_table(results))
    plot(results, out / "results.png")
    return results


def _check_text(corpora: dict[str, str]) -> None:
    from fineinstructions.pretrain.data import read_texts

    for arm, path in corpora.items():
        try:
            next(read_texts(path))
        except StopIteration:
            raise UserError(f"arm {arm}: its corpus {path} has no text") from None


def _pack_arms(arm_configs: dict[str, Any], tokenizer) -> dict[str, dict[str, Any]]:
    """Pack every arm's corpus (cached for its seeds) before any training, refusing an arm with nothing to train
    on under its loss_on; returns each arm's objective, corpus tokens and target tokens."""
    from fineinstructions.stages.pretrain import packed_data

    training = {}
    for arm, arm_cfg in arm_configs.items():
        try:
            stats = packed_data(arm_cfg, tokenizer).stats
        except UserError as e:
            raise UserError(f"arm {arm}: {e}") from None
        training[arm] = {"loss_on": arm_cfg.loss_on, "corpus_tokens": stats["tokens"],
                         "target_tokens": stats["target_tokens"]}
    return training


HARNESS = "lm_eval:"  # prefix of the harness metrics in a run's results


def _harness(cfg: ExperimentConfig, where: Path, device: str) -> dict[str, float]:
    """The configured lm-evaluation-harness tasks on one model: {"lm_eval:TASK/METRIC": value}; the full harness
    output goes to `eval/lm_eval.json`."""
    if not cfg.lm_eval_tasks:
        return {}
    from fineinstructions.evaluate.harness import main_metrics, run_tasks

    results = run_tasks(where / "model", cfg.lm_eval_tasks, include=cfg.lm_eval_include, limit=cfg.lm_eval_limit,
                        device=device)
    atomic.write_json(where / "eval" / "lm_eval.json", {k: results.get(k) for k in ("results", "versions",
                                                                                    "n-samples")}, default=str)
    return {HARNESS + k: v for k, v in main_metrics(results).items()}


def _metric_names(rs: list[dict[str, Any]]) -> list[str]:
    return list(METRICS) + sorted({k for r in rs for k in r if k.startswith(HARNESS)})


def _summarise(rs: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Mean ± std over seeds of each metric the runs have (a win rate is None when no judgement was readable)."""
    values = {m: [r[m] for r in rs if r.get(m) is not None] for m in _metric_names(rs)}
    return {m: mean_std(v) for m, v in values.items() if v}


def _repeat_warnings(training: dict[str, dict[str, Any]]) -> list[str]:
    return [f"arm {arm} reads its corpus {t['epochs']:.1f} times ({t['training_tokens']:,} training tokens, "
            f"{t['corpus_tokens']:,} corpus tokens): its scores measure memorising a small corpus as much as the "
            f"corpus's kind of text; give it a bigger corpus or lower train.max_tokens"
            for arm, t in training.items() if t["epochs"] > REPEAT_WARNING]


def judge_against_standard(runs: dict[str, list[dict[str, Any]]], cfg: ExperimentConfig) -> None:
    """Each non-standard arm's answers vs the standard arm's of the same seed, by the configured LLM judge; adds
    `win_rate_vs_standard` (ties count half, unreadable judgements left out: None when none was readable),
    `judge_unreadable_rate` and the judge's full result (`pairwise`) to each run."""
    from fineinstructions.stages.evaluate import head_to_head, judge_backend

    if "standard" not in runs:
        raise UserError("pairwise: true compares every arm with the standard arm: add standard to arms")
    backend = judge_backend(cfg.judge)  # one judge (one model load) for every comparison
    baseline = {r["seed"]: r for r in runs["standard"]}
    try:
        for r in (r for arm, rs in runs.items() if arm != "standard" for r in rs):
            k = min(cfg.pairwise_limit, len(r["queries"]))
            result = head_to_head(cfg.judge, backend, r["queries"][:k], r["predictions"][:k],
                                  baseline[r["seed"]]["predictions"][:k])
            r.update(win_rate_vs_standard=result["win_rate_a"], judge_unreadable_rate=result["unreadable_rate"],
                     pairwise=result)
    finally:
        backend.close()


COLUMNS = {"nll_per_token": "answer NLL/token ↓", "bits_per_byte": "bits/byte ↓", "exact_match": "EM ↑",
           "f1": "F1 ↑", "final_loss": "final train loss", "win_rate_vs_standard": "win rate vs standard ↑",
           "judge_unreadable_rate": "unreadable judgements"}


def results_table(results: dict[str, Any]) -> str:
    """Markdown: one row per arm, mean ± std over seeds; lower is better for NLL, bits/byte and loss. The judge's
    columns appear when arms were judged; warnings (an arm repeating its corpus) follow the table."""
    any_runs = next(iter(results["runs"].values()))
    judged = any("judge_unreadable_rate" in m for m in results["arms"].values())
    metrics = [m for m in _metric_names([r for rs in results["runs"].values() for r in rs])
               if judged or m not in ("win_rate_vs_standard", "judge_unreadable_rate")]
    lines = [(f"Seeds {results['seeds']}; {any_runs[0]['tokens']:,} training tokens per model; "
              f"{results['eval_limit']} questions from {Path(results['qa']).name}."), "",
             "| arm | loss on | corpus tokens | target tokens | epochs | "
             + " | ".join(COLUMNS.get(m, m.removeprefix(HARNESS)) for m in metrics) + " |",
             "|---|---|---:|---:|---:|" + "---:|" * len(metrics)]
    for arm, m in results["arms"].items():
        t = results["training"][arm]
        cells = [f"{m[k][0]:.3f} ± {m[k][1]:.3f}" if k in m else "—" for k in metrics]
        lines.append(f"| {arm} | {t['loss_on']} | {t['corpus_tokens']:,} | {t['target_tokens']:,} | "
                     f"{t['epochs']:.2f} | " + " | ".join(cells) + " |")
    if judged:
        lines += ["", ("Win rates count only the questions whose two judgements could both be read (a failed "
                       "request or a reply naming no single answer cannot); the unreadable column is the share left "
                       "out.")]
    lines += [""] * bool(results["warnings"]) + [f"- **Warning:** {w}." for w in results["warnings"]]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results["arms"])
    panels = [("bits_per_byte", "answer bits/byte (lower is better)"), ("exact_match", "exact match"),
              ("f1", "token F1")]
    if any("win_rate_vs_standard" in m for m in results["arms"].values()):
        panels.append(("win_rate_vs_standard", "judge win rate vs standard"))
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4 * (1 + len(panels)), 3.6))
    for arm in arms:
        curves = [r["loss_curve"] for r in results["runs"][arm]]
        steps = min(len(c) for c in curves)
        xs = [curves[0][i]["tokens"] for i in range(steps)]
        ys = [statistics.fmean(c[i]["loss"] for c in curves) for i in range(steps)]
        axes[0].plot(xs, ys, label=arm)
    axes[0].set(title="training loss (mean over seeds)", xlabel="tokens")
    axes[0].legend()
    for ax, (metric, title) in zip(axes[1:], panels):
        shown = [a for a in arms if metric in results["arms"][a]]
        means = [results["arms"][a][metric][0] for a in shown]
        stds = [results["arms"][a][metric][1] for a in shown]
        ax.bar(shown, means, yerr=stds, capsize=4, color=[f"C{arms.index(a)}" for a in shown])
        ax.set(title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
