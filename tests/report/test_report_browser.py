"""The report in a real headless Chromium (Debian's `chromium` package): the page loads, its script runs to the
end without a console message, and the sample browser filters. Skipped where Chromium is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_builder import build_run  # noqa: E402

from fineinstructions.report import report  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


def load(url: str, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and every console message (errors included) Chromium logged."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def visible_rows(dom: str) -> int:
    body = re.search(r'<table class="samples" id="samples"[^>]*>.*?<tbody>(.*?)</tbody>', dom, re.DOTALL)[1]
    return len(re.findall(r"<tr>", body))  # hidden rows are written <tr hidden="">


def test_console_check_sees_script_errors(tmp_path):
    """The check below is only worth something if a broken script does show up in it."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notAFunction();</script></body></html>")
    _, console = load(page.as_uri(), tmp_path / "profile")
    assert any("notAFunction" in line for line in console)


def test_page_loads_without_console_messages_and_filters(tmp_path):
    path = report(str(build_run(tmp_path)), str(tmp_path / "report.html"))

    dom, console = load(path.as_uri(), tmp_path / "profile")
    assert console == []
    assert 'data-ready="true"' in dom and 'data-visible="4"' in dom and visible_rows(dom) == 4
    assert "showing 4 of 4" in dom
    assert dom.count("<mark") >= 4  # excerpts marked in the snippets and answers, built by the script
    assert '<option value="judge: low_score">judge: low_score (1)</option>' in dom

    dom, console = load(path.as_uri() + "#q=router%20restart", tmp_path / "profile")  # every word, any column
    assert console == []
    assert 'data-visible="1"' in dom and visible_rows(dom) == 1 and "showing 1 of 4" in dom
    assert re.search(r'<tr>.*?judge: low_score.*?</tr>', dom, re.DOTALL)

    dom, _ = load(path.as_uri() + "#q=no-such-words", tmp_path / "profile")
    assert 'data-visible="0"' in dom and visible_rows(dom) == 0
