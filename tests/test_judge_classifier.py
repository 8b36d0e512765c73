"""The classifier judge: its features on real MiniLM embeddings, training, the keep cut and the JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fineinstructions.embed import Embedder
from fineinstructions.judge_classifier import (FEATURES, JudgeClassifier, answer_kind_matches, best_cut, fit,
                                               pair_features)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(None, device="cpu")


def test_features_read_what_annotators_name(embedder):
    pairs = [("who painted the ceiling of the Sistine Chapel",
              "The ceiling of the Sistine Chapel was painted by Michelangelo between 1508 and 1512."),
             ("who painted the ceiling of <fi>a church</fi>", "The document does not say. I'm sorry."),
             ("how long does it take to boil potatoes", "Potatoes were first grown in the Andes."),
             ("why is the sky blue", "")]
    x = pair_features(embedder, [p[0] for p in pairs], [p[1] for p in pairs])
    f = {name: x[:, i] for i, name in enumerate(FEATURES)}
    assert x.shape == (4, len(FEATURES))
    assert f["cos_instruction_answer"][0] > f["cos_instruction_answer"][2]  # on topic vs off topic
    assert f["unfilled_slot"].tolist() == [0, 1, 0, 0] and f["refusal"].tolist() == [0, 1, 0, 0]
    assert f["answer_kind_matches"].tolist() == [1, 0, 0, 1]  # "who" without a name, "how long" without a number
    assert f["empty_answer"].tolist() == [0, 0, 0, 1]
    assert pair_features(embedder, [], []).shape == (0, len(FEATURES))


def test_answer_kind():
    assert answer_kind_matches("When did the war end?", "It ended in 1945.") == 1.0
    assert answer_kind_matches("When did the war end?", "It ended after the treaty.") == 0.0
    assert answer_kind_matches("How many men were lost?", "About two hundred.") == 1.0
    assert answer_kind_matches("What is a fresco?", "Paint on plaster.") == 1.0  # no kind asked


def test_fit_learns_a_score_order_and_round_trips_through_json(tmp_path):
    rng = np.random.default_rng(0)
    scores = np.repeat([1, 2, 3, 4, 5], 20)
    x = rng.normal(size=(100, len(FEATURES)))
    x[:, 0] = scores + rng.normal(scale=0.3, size=100)  # one informative feature
    clf = fit(x, scores.tolist(), c=1.0)
    expected = clf.expected(x)
    assert np.corrcoef(expected, scores)[0, 1] > 0.9
    kept = np.array([clf.score(e) for e in expected]) >= 4
    assert (kept == (scores >= 4)).mean() > 0.9
    clf.save(tmp_path)
    again = JudgeClassifier.load(tmp_path)
    assert np.allclose(again.expected(x), expected) and again.cut == clf.cut
    params = json.loads((tmp_path / "classifier.json").read_text())
    with pytest.raises(ValueError, match="other features"):
        JudgeClassifier({**params, "features": params["features"][:-1]})
    with pytest.raises(ValueError, match="two different scores"):
        fit(x[:5], [3] * 5)


def test_two_scores_and_the_cut(monkeypatch):
    import fineinstructions.judge_classifier as jc

    monkeypatch.setattr(jc, "FEATURES", ("only",))
    x = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]] * 3)
    clf = fit(x, [2, 2, 2, 5, 5, 5] * 3, c=10.0)  # scikit-learn's one-row binary head, stored as two rows
    e = clf.expected(np.array([[0.0], [1.2]]))
    assert e[0] < 3 < e[1] and clf.score(e[1]) >= 4 and clf.score(e[0]) <= 3
    assert best_cut(np.array([1.0, 2.0, 4.0, 4.5]), np.array([1, 2, 5, 4])) == 4.0
