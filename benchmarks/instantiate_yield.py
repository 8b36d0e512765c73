"""How the instantiate prompt choice changes yield, on the same matches (not a test: minutes of CPU).

    python benchmarks/instantiate_yield.py RUN_DIR DOCUMENTS [--formats fewshot-completion no-followup fewshot]
                                           [--max-pairs 40] [--max-document-chars 1500] [--judge]

RUN_DIR holds `templatize/` and `match/` from an earlier run on DOCUMENTS. Each prompt format instantiates the same
(document, template) pairs into its own folder; with --judge the kept pairs are also judged. Prints and writes
kept / reject reasons / seconds per format to benchmarks/results/instantiate_yield[-TAG].json. `no-followup` is
`fewshot-completion` without its second "Answer: <excerpt>" pass (one pass that must write both lines).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fineinstructions.llm import LLMConfig
from fineinstructions.stages.instantiate import InstantiateConfig
from fineinstructions.stages.instantiate import run as run_instantiate
from fineinstructions.stages.judge import JudgeConfig
from fineinstructions.stages.judge import run as run_judge

RESULTS = Path(__file__).resolve().parent / "results"


def no_followup_format(folder: Path) -> str:
    """`fewshot-completion` as a single pass: no follow-up, stop only at a blank line or the next example."""
    data = yaml.safe_load((resources.files("fineinstructions.prompts") / "instantiate" / "fewshot-completion.yaml")
                          .read_text(encoding="utf-8"))
    data.update(name="no-followup", followup=None)
    data["params"]["stop"] = ["\n\n", "\nDocument:", "\nTemplate:", "###"]
    path = folder / "no-followup.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return str(path)


def first_matches(match_dir: Path, n: int, out: Path) -> str:
    table = pa.concat_tables(pq.read_table(p) for p in sorted(match_dir.glob("part-*.parquet")))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, n), out / "part-00000.parquet")
    (out / "stage.json").write_text((match_dir / "stage.json").read_text())
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("documents")
    ap.add_argument("--formats", nargs="+", default=["fewshot-completion", "no-followup", "fewshot"])
    ap.add_argument("--max-pairs", type=int, default=40)
    ap.add_argument("--max-document-chars", type=int, default=1500)
    ap.add_argument("--judge", action="store_true", help="also judge the kept pairs (default judge format)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    results = {"run_dir": str(args.run_dir), "documents": args.documents, "max_pairs": args.max_pairs,
               "max_document_chars": args.max_document_chars, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        matches = first_matches(args.run_dir / "match", args.max_pairs, tmp / "match")
        for name in args.formats:
            fmt = no_followup_format(tmp) if name == "no-followup" else name
            out = tmp / f"instantiate-{name}"
            start = time.time()
            s = run_instantiate(InstantiateConfig(
                input=matches, templates=str(args.run_dir / "templatize"), documents=args.documents,
                output=str(out), prompt_format=fmt, max_document_chars=args.max_document_chars,
                llm=LLMConfig(), progress=False))
            row = {"pairs": s.rows_in, "kept": s.rows_out, "yield": round(s.rows_out / max(1, s.rows_in), 3),
                   "rejects": s.rejects, "seconds": round(time.time() - start, 1), "tokens": s.tokens,
                   "grounding": s.distributions.get("grounding", {})}
            kept = [r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
            row["examples"] = [{k: r[k] for k in ("template", "instruction", "answer", "grounding")} for r in kept[:3]]
            if args.judge and s.rows_out:
                j = run_judge(JudgeConfig(input=str(out), output=str(tmp / f"judge-{name}"), llm=LLMConfig(),
                                          progress=False))
                row["judge"] = {"kept": j.rows_out, "rejects": j.rejects, "scores": j.distributions.get("score", {})}
            results["formats"][name] = row
            print(f"{name:<20} kept {s.rows_out}/{s.rows_in} ({row['yield']:.0%}) in {row['seconds']} s; "
                  f"rejects {s.rejects}" + (f"; judge {row.get('judge')}" if args.judge else ""))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"instantiate_yield{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
