import pytest

from fineinstructions.errors import UserError
from fineinstructions.prompts import available, load_format
from fineinstructions.templates import validate


def test_bundled_templatize_formats():
    assert {"fewshot", "fewshot-completion", "released"} <= set(available("templatize"))


@pytest.mark.parametrize("name", ["fewshot", "fewshot-completion", "released"])
def test_render_and_parse_round_trip(name):
    fmt = load_format("templatize", name)
    req = fmt.render({"query": "who wrote {braces} the hobbit"})
    if fmt.mode == "chat":
        roles = [m["role"] for m in req.messages]
        assert roles[-1] == "user" and req.messages[-1]["content"] == "who wrote {braces} the hobbit"
        assert roles.count("assistant") == len(fmt.examples)
    else:
        assert req.prompt.endswith("Query: who wrote {braces} the hobbit\n" + fmt.answer_prefix)
    for ex in fmt.examples:
        # every few-shot example is itself a valid template, and the format's parser reads its own answers
        assert validate(ex["template"], ex["query"]) is None, ex
        answer = fmt._assistant(ex)
        if fmt.answer_prefix:
            answer = answer[len(fmt.answer_prefix):]
        parsed = fmt.parse(answer)
        assert parsed == {"template": ex["template"], "compatible_document_description": ex["compatible_document_description"]}


def test_format_fingerprint_changes_with_content(tmp_path):
    a = load_format("templatize", "released")
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nmode: chat\nparser: json\nfields: {template: t, compatible_document_description: d}\n"
        "user: '{query}'\nparams: {max_tokens: 64}\n")
    b = load_format("templatize", str(tmp_path / "mine.yaml"))
    assert a.fingerprint != b.fingerprint and b.sampling().max_tokens == 64
    assert b.parse('{"t": "x <fi>y</fi>", "d": "doc"}') == {"template": "x <fi>y</fi>", "compatible_document_description": "doc"}


def test_bad_formats_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown templatize prompt format 'nope'"):
        load_format("templatize", "nope")
    with pytest.raises(UserError, match="not found"):
        load_format("templatize", str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("name: x\nmode: chat\nbogus_key: 1\n")
    with pytest.raises(UserError, match="malformed"):
        load_format("templatize", str(tmp_path / "bad.yaml"))
