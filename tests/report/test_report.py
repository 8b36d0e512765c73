"""The report on a small real run directory: the numbers behind each figure, the page, and its edge cases."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_builder import DOCUMENTS, EARLY, LATE, build_run  # noqa: E402

from fineinstructions.errors import UserError  # noqa: E402
from fineinstructions.report import metrics, report  # noqa: E402
from fineinstructions.report import page as sections  # noqa: E402
from fineinstructions.report.data import RunDir  # noqa: E402
from fineinstructions.report.excerpt_spans import relative_position, segments  # noqa: E402
from fineinstructions.report.samples import sample_pairs  # noqa: E402


@pytest.fixture
def run(tmp_path) -> Path:
    return build_run(tmp_path)


def sample_rows(page: str) -> list[dict]:
    return json.loads(re.search(r'<script type="application/json" id="sample-data">(.*?)</script>', page, re.DOTALL)[1])


def test_stage_rows_and_units_follow_the_summaries(run):
    rows = {r.stage: r for r in metrics.stage_rows(RunDir.open(run))}
    assert list(rows) == ["queries", "templatize", "index", "match", "instantiate", "judge", "budget"]
    assert rows["judge"].rejects == {"low_score": 1, "unparseable_score": 1}
    assert rows["judge"].kept_share == pytest.approx(1 / 3)
    assert rows["match"].units == ("documents", "matches") and rows["match"].kept_share is None


def test_slot_distributions_use_match_target_and_templates(run):
    d = metrics.slot_distributions(RunDir.open(run))
    assert d.target == {1: 0.75, 2: 0.25} and "--target-slots" in d.target_source
    assert d.drawn == {1: 0.75, 2: 0.25}  # t1, t2, t3, t4 drawn once each
    assert d.kept == {1: 1.0}  # only p1 (t1) kept by the judge
    assert metrics.total_variation(d.drawn, d.target) == pytest.approx(0.0)


def test_power_law_fit_recovers_exponent():
    xs = [1, 2, 4, 8, 16, 32]
    a, b, r2 = metrics.power_law_fit(xs, [3 * x ** 0.5 for x in xs])
    assert (a, b, r2) == (pytest.approx(3.0), pytest.approx(0.5), pytest.approx(1.0))
    assert metrics.power_law_fit([5], [3]) is None


def test_template_growth_counts_distinct_templates_per_document(run):
    g = metrics.template_growth(RunDir.open(run))
    assert (g.documents, g.templates) == ([1, 2, 3], [2, 3, 4])


def test_position_check_per_pair_and_per_chunk_mean():
    positions = [(1, 0.1), (1, 0.2), (3, 0.5), (5, 0.8), (5, 0.9), (0, 0.4)]
    check = metrics.position_check(positions, k=5)
    assert check.global_ == [0.4] and len(check.local) == 5
    assert check.r_pairs > 0.95 and check.r_means > 0.99
    assert metrics.position_check([(2, 0.3), (2, 0.4)], k=5).r_pairs is None  # no spread: undefined, not NaN


def test_excerpt_offsets_are_recovered_in_the_document():
    doc = DOCUMENTS["d1"]
    parts = segments("Do this: <excerpt>Restart the router<...>network name.</excerpt> Done", doc, 5, 5, None)
    assert [p.kind for p in parts] == ["text", "excerpt", "text"]
    excerpt = parts[1]
    assert doc[excerpt.start:excerpt.end] == LATE == excerpt.text
    assert relative_position(parts, len(doc)) > 0.9
    unresolved = segments("<excerpt>not there at all</excerpt>", doc, 1, 5, None)
    assert [p.kind for p in unresolved] == ["unresolved"] and relative_position(unresolved, len(doc)) is None


def test_excerpt_offsets_inside_a_window_are_document_offsets():
    doc = DOCUMENTS["d1"]
    parts = segments(f"<excerpt>{LATE}</excerpt>", doc, 5, 5, max_chars=300)  # window around the last chunk
    assert doc[parts[0].start:parts[0].end] == LATE
    assert segments(f"<excerpt>{EARLY}</excerpt>", doc, 5, 5, max_chars=300)[0].kind == "unresolved"  # not shown


def test_samples_carry_outcomes_scores_and_positions(run):
    s = sample_pairs(RunDir.open(run))
    by_pair = {r["pair"]: r for r in s.rows}
    assert s.total == 4 and s.documents_note is None
    assert by_pair["p1"]["outcome"] == "in corpus" and by_pair["p1"]["score"] == 5
    assert by_pair["p2"]["outcome"] == "judge: low_score" and by_pair["p2"]["score"] == 2
    assert by_pair["p3"]["outcome"] == "judge: unparseable_score" and by_pair["p3"]["score"] is None
    assert by_pair["p4"]["outcome"] == "instantiate: excerpt_missing"
    assert by_pair["p4"]["answer"][0][0] == "unresolved"
    assert by_pair["p1"]["position"] < 0.1 and by_pair["p2"]["position"] > 0.9
    assert ["excerpt", EARLY] in by_pair["p1"]["snippet"] and ["slot", "food"] in by_pair["p1"]["template"]
    assert [(chunk, round(pos, 3)) for chunk, pos in sorted(s.positions)] == \
        [(0, by_pair["p3"]["position"]), (1, by_pair["p1"]["position"]), (5, by_pair["p2"]["position"])]
    few = sample_pairs(RunDir.open(run), limit=3).rows  # one of each group: kept, judge reject, instantiate reject
    assert [r["pair"] for r in few] == ["p1", "p2", "p4"]


def test_report_writes_one_self_contained_page(run, tmp_path):
    path = report(str(run), str(tmp_path / "out" / "report.html"))
    page = path.read_text(encoding="utf-8")
    for title in ("Stages", "Templates: slots and diversity", "Judge scores and grounding",
                  "Excerpt position vs matching chunk", "Source mix", "Tokens", "Decontamination", "PII",
                  "Sample browser"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("data:image/png;base64,") == 8
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched when opened
    assert page.count('class="status notrun"') == 2
    assert "Standard corpus 300 tokens; instruction corpus 20 tokens" in page
    assert {r["pair"] for r in sample_rows(page)} == {"p1", "p2", "p3", "p4"}
    assert len(page) < 2_000_000


def test_decontamination_and_pii_hooks_show_when_present(run):
    (run / "decontaminate").mkdir()
    (run / "decontaminate" / "summary.json").write_text(json.dumps(
        {"stage": "decontaminate", "rows_in": 10, "rows_out": 9, "rejects": {"contaminated": 1},
         "distributions": {"contaminated_by": {"mmlu": 1}}}))
    (run / "scrub").mkdir()
    (run / "scrub" / "summary.json").write_text(json.dumps(
        {"stage": "scrub", "rows_in": 9, "rows_out": 9, "distributions": {"pii": {"email": 3, "phone": 1}}}))
    opened = RunDir.open(run)
    assert metrics.pii_counts(opened) == {"scrub": {"rows checked": 9, "pii/email": 3, "pii/phone": 1}}
    assert "decontaminate" in opened.stages() and "scrub" in opened.stages()  # in the stage table too
    decontamination, pii = sections.decontamination_section(opened).body, sections.pii_section(opened).body
    assert 'class="status ran"' in decontamination and "distributions.contaminated_by.mmlu" in decontamination
    assert 'class="status ran"' in pii and "pii/email" in pii


def test_text_from_the_run_cannot_break_out_of_the_page(run, tmp_path):
    from run_builder import write_shard

    from fineinstructions import schemas

    rows = RunDir.open(run).rows("judge")
    evil = "</script><script>alert(1)</script><b>&amp;"
    write_shard(run / "judge", schemas.JUDGED, [{**rows[0], "instruction": evil}])
    page = report(str(run), str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert evil not in page and "alert(1)" in page  # present, but only as escaped JSON
    assert any(r["instruction"] == evil for r in sample_rows(page))


def test_empty_stages_render_with_reasons(tmp_path):
    run = build_run(tmp_path)
    for stage in ("match", "instantiate", "judge", "budget"):
        for f in (run / stage).rglob("*.parquet"):
            f.unlink()
        (run / stage / "summary.json").unlink()
    page = report(str(run), str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert "No templates were drawn" in page and "No instantiated pairs in this run." in page
    assert "The budget stage did not run" in page and sample_rows(page) == []


def test_missing_documents_are_reported_not_fatal(run, tmp_path):
    (tmp_path / "documents.jsonl").unlink()
    s = sample_pairs(RunDir.open(run))
    assert "documents not readable" in s.documents_note and s.positions == []
    assert all(r["snippet"] == [["missing", "(document not available)"]] for r in s.rows)
    section = sections.position_section(RunDir.open(run), s.positions, s.documents_note)
    assert "Nothing to plot: documents not readable" in section.body


def test_not_a_run_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no run directory"):
        report(str(tmp_path / "nope"), str(tmp_path / "r.html"))
    with pytest.raises(UserError, match="holds no stage output"):
        report(str(tmp_path), str(tmp_path / "r.html"))


def test_the_report_lists_stages_in_the_recipes_order(tmp_path):
    """One stage list for the recipe and the report: the hygiene stages sit where the run put them, not after
    the others by name (the report's own copy of the list had drifted from `recipe.STAGES`)."""
    from fineinstructions.recipe import STAGES
    from fineinstructions.report.data import RunDir

    ran = ["queries", "decontaminate", "templatize", "near_dedup", "index", "match", "instantiate", "judge",
           "scrub", "budget"]
    for name in reversed(ran):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text("{}")
    assert RunDir.open(tmp_path).stages() == ran == [s.name for s in STAGES if s.name in ran]
