"""`fineinstructions <stage> --input PATH --output DIR [--config FILE]`, `run CONFIG --output DIR`, `demo`.

Stage flags are generated from the stage's config dataclass, so the CLI, YAML and Python always agree. Errors a
user can fix print as one line (exit code 2); bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fineinstructions import __version__, atomic, recipe
from fineinstructions.config import add_arguments, from_sources, load_yaml
from fineinstructions.errors import UserError
from fineinstructions.pipeline.summary import render_run

EPILOG = """\
Every stage reads and writes parquet shards (DIR/part-NNNNN.parquet) with a documented schema, keeps rejected
rows with their reason in DIR/rejects/, and resumes: rerunning a finished stage is a no-op, rerunning after a kill
finishes only the missing shards (and an LLM stage re-sends only uncached requests).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fineinstructions",
        description="Turn pre-training documents into grounded instruction→answer pairs (FineInstructions).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fineinstructions {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for spec in recipe.STAGES + recipe.COMMANDS:
        p = sub.add_parser(spec.name, help=spec.help, description=f"Stage {spec.name}: {spec.help}.", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML file whose keys are this stage's flag names (flags override it)")
        add_arguments(p, spec.config)
        p.set_defaults(func=_run_stage, spec=spec)
    run = sub.add_parser("run", help="run a configured pipeline: one sub-directory per stage",
                         description="Run the stages of a YAML run config in order (queries → [decontaminate] → "
                         "templatize → near_dedup → index → match → instantiate → judge → scrub → budget), writing "
                         "DIR/<stage>/ for each. Stages with a section in the config run (all but the optional "
                         "decontaminate when none has). Resumable.")
    run.add_argument("config", help="run config (YAML): shared keys + one section per stage")
    run.add_argument("--output", required=True, help="run directory")
    run.add_argument("--overwrite", action="store_true", help="restart stages whose settings changed")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    run.add_argument("--report", action=argparse.BooleanOptionalAction, default=True, help="write DIR/report.html")
    run.set_defaults(func=_run_recipe)
    exp = sub.add_parser("experiment", help="pre-train one model per arm and seed at equal tokens, evaluate, compare",
                         description="From a finished run: train standard / fineinstructions / wrap arms with the "
                         "same token budget, model and tokenizer over several seeds, evaluate on held-out real "
                         "questions, write DIR/results.md, results.json and results.png. Resumable.")
    exp.add_argument("config", help="experiment config (YAML); see src/fineinstructions/data/experiment-toy.yaml")
    exp.add_argument("--output", required=True, help="experiment directory")
    exp.set_defaults(func=_run_experiment)
    demo = sub.add_parser("demo", help="the recipe on the bundled sample with the embedded default model (CPU, offline)",
                          description="Run the whole configured recipe on the sample queries and documents shipped "
                          "with the package, using SmolLM2-135M-Instruct on the CPU; writes DIR/report.html.")
    demo.add_argument("--output", default="out/demo", help="run directory (default: out/demo)")
    demo.add_argument("--overwrite", action="store_true", help="restart stages whose settings changed")
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    demo.add_argument("--report", action=argparse.BooleanOptionalAction, default=True, help="write DIR/report.html")
    demo.set_defaults(func=_run_recipe)
    students = sub.add_parser("distill-students", help="train every stage's student from one config (the "
                              "embedded default's: configs/students.yaml)",
                              description="Distil the templatize, judge and instantiate students of a config in "
                              "order, with optional rejection-sampling augmentation kept only when it scores better "
                              "on dev; --ship copies the chosen students into a folder (the package's students/).")
    students.add_argument("config", help="students config (YAML): shared distill keys + a section per stage")
    students.add_argument("--output", required=True, help="work folder (one sub-folder per student trained)")
    students.add_argument("--ship", help="copy the chosen students here (src/fineinstructions/students)")
    students.set_defaults(func=_run_students)
    gold = sub.add_parser("goldeval", help="score a model + prompt on a gold set of one LLM stage",
                          description="Run an LLM stage's own code path (prompt format, best-of, validators, excerpt "
                          "expansion, score parsing) on a gold file and score it: DIR/metrics.json (the gold "
                          "format's metrics) and DIR/predictions.jsonl. Gold sets: data/gold/.")
    gold_stages = gold.add_subparsers(dest="gold_stage", metavar="STAGE", required=True)
    for name in ("templatize", "instantiate", "judge"):
        spec = recipe.BY_NAME[name]
        p = gold_stages.add_parser(name, help=f"goldeval for {name}", epilog=EPILOG,
                                   description=f"Score the {name} stage's model and prompt on a {name} gold file.",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML file with this stage's keys (the same as the stage's own config)")
        p.add_argument("--input", required=True, help=f"gold file ({name}.jsonl in the gold format)")
        p.add_argument("--output", required=True, help="folder for metrics.json and predictions.jsonl")
        p.add_argument("--limit", type=int, default=None, help="evaluate only the first N gold rows")
        add_arguments(p, spec.config, skip=GOLDEVAL_IGNORES)
        p.set_defaults(func=_run_goldeval, spec=spec)
    exp_ds = sub.add_parser("export", help="a finished run as a Hugging Face dataset folder (configs instructions, "
                                           "standard, pairs) with a dataset card",
                            description="Write RUN_DIR's instruction corpus, standard corpus and kept pairs (with "
                            "provenance) as parquet under DIR with a dataset card (README.md: configs, licence, "
                            "counts, models and prompts, key figures, the command to publish). "
                            "datasets.load_dataset(DIR, 'pairs') then loads it.")
    exp_ds.add_argument("run_dir", help="run directory (`run`/`demo` --output)")
    exp_ds.add_argument("--output", required=True, help="dataset folder to write")
    exp_ds.add_argument("--license", help="licence of the data (default: the input documents' dataset card's)")
    exp_ds.add_argument("--name", help="dataset name in the card (default: the run folder's name)")
    exp_ds.set_defaults(func=_run_export)
    rep = sub.add_parser("report", help="one self-contained HTML page about a run: figures + a sample browser",
                         description="Read a run directory (`run`/`demo` --output) and write one HTML file with "
                         "plots (rows and rejects per stage, slot distributions, template diversity, judge scores, "
                         "grounding, excerpt positions, source mix, tokens, decontamination, PII) and a filterable "
                         "table of sample pairs. Opens offline.")
    rep.add_argument("run_dir", help="run directory")
    rep.add_argument("--output", required=True, help="HTML file to write")
    rep.add_argument("--max-samples", type=int, default=1000, help="pairs in the sample browser (default: 1000)")
    rep.set_defaults(func=_run_report)
    return parser


def _run_stage(args: argparse.Namespace) -> None:
    spec = args.spec
    values = {k: v for k, v in vars(args).items() if k not in ("spec", "func", "command", "config")}
    cfg = from_sources(spec.config, load_yaml(args.config), values, where=f"{spec.name} config")
    summary = spec.run(cfg)
    print(summary.render() if hasattr(summary, "render") else json.dumps(summary, indent=2, default=str))


#: stage options that mean nothing to goldeval (it reads one gold file in one process)
GOLDEVAL_IGNORES = frozenset({"input", "output", "executor", "tasks", "workers", "slurm", "ray", "overwrite",
                              "templates", "documents", "format", "text_column", "id_column", "hf_split", "limit"})


def _run_goldeval(args: argparse.Namespace) -> None:
    from fineinstructions.gold.evaluate import goldeval, render

    spec = args.spec
    values = {k: v for k, v in vars(args).items()
              if k not in ("spec", "func", "command", "config", "gold_stage", "input", "output", "limit")}
    cfg = from_sources(spec.config, load_yaml(args.config), values, where=f"goldeval {spec.name} config")
    cfg.output = args.output
    metrics = goldeval(spec.name, cfg, args.input, args.output, limit=args.limit, progress=cfg.progress)
    print(render(metrics))
    print(f"metrics: {args.output}/metrics.json · predictions: {args.output}/predictions.jsonl")


def _run_recipe(args: argparse.Namespace) -> None:
    config = recipe.demo_config() if args.command == "demo" else load_yaml(args.config)
    start = time.time()
    summaries = recipe.run(config, args.output, {"overwrite": args.overwrite, "progress": args.progress})
    print(render_run(summaries, time.time() - start))
    atomic.write_json(f"{args.output}/run_summary.json", [s.to_dict() for s in summaries])
    if args.report:
        from fineinstructions.report import report

        print(f"report: {report(args.output, f'{args.output}/report.html')} (open it in a browser)")


def _run_experiment(args: argparse.Namespace) -> None:
    from fineinstructions.experiment import load_config, run_experiment

    run_experiment(load_config(load_yaml(args.config)), args.output)
    print(open(f"{args.output}/results.md", encoding="utf-8").read())
    print(f"results: {args.output}/results.md, results.json, results.png")


def _run_students(args: argparse.Namespace) -> None:
    from fineinstructions.distill.students import run_students

    chosen = run_students(load_yaml(args.config), args.output, ship=args.ship)
    print(json.dumps(chosen, indent=2))


def _run_export(args: argparse.Namespace) -> None:
    from fineinstructions.export import export

    result = export(args.run_dir, args.output, license=args.license, name=args.name)
    counts = ", ".join(f"{k} {v:,}" for k, v in result["counts"].items())
    print(f"dataset: {result['output']} ({counts}; licence {result['license']})")
    print(f"publish: hf upload YOUR_NAME/{Path(args.run_dir).resolve().name} {result['output']} --repo-type dataset")


def _run_report(args: argparse.Namespace) -> None:
    from fineinstructions.report import report

    path = report(args.run_dir, args.output, max_samples=args.max_samples)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB; open it in any browser, no network needed)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
