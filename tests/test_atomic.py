"""Atomic replacement: a process SIGKILLed at any step leaves the old state or the new one, never a mix or nothing.

Each case runs the write in a child process that kills itself (SIGKILL: no cleanup, no `finally`) at the n-th
call of a chosen function, then checks what a reader finds afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fineinstructions import atomic

KILLER = """
import os, signal, sys
import {module} as target
calls = 0
real = target.{function}
def killer(*a, **k):
    global calls
    calls += 1
    if calls == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
target.{function} = killer
"""


def run_killed(code: str, module: str, function: str, n: int) -> int:
    """Run `code` in a child that SIGKILLs itself at the n-th call of module.function; its return code."""
    script = KILLER.format(module=module, function=function, n=n) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120).returncode


def folder(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())} if path.is_dir() else {}


@pytest.mark.parametrize("function, n, survivor", [
    ("os.replace", 1, "old"),  # before the old folder is moved aside
    ("os.replace", 2, "old"),  # moved aside, the new one not yet renamed in: settle_dir moves the old one back
    ("shutil.rmtree", 1, "new"),  # renamed in, the old one not yet deleted: settle_dir deletes it
])
def test_replace_dir_killed_at_each_step_leaves_old_or_new(tmp_path, function, n, survivor):
    dest = tmp_path / "checkpoint"
    dest.mkdir()
    (dest / "weights").write_text("old")
    (dest / "state").write_text("old")
    code = f"""
    from pathlib import Path
    from fineinstructions import atomic
    with atomic.staged_dir(Path({str(dest)!r})) as tmp:
        (tmp / "weights").write_text("new")
        (tmp / "state").write_text("new")
    """
    module, name = function.split(".")
    assert run_killed(code, module, name, n) == -signal.SIGKILL
    atomic.settle_dir(dest)  # what every reader does first
    assert folder(dest) == {"state": survivor, "weights": survivor}
    assert not (tmp_path / "checkpoint.old").exists()


def test_write_text_killed_before_the_rename_keeps_the_old_file(tmp_path):
    path = tmp_path / "stage.json"
    path.write_text('{"old": true}')
    rc = run_killed(f"from fineinstructions import atomic\natomic.write_text({str(path)!r}, '{{\"new\": true}}')",
                    "os", "replace", 1)
    assert rc == -signal.SIGKILL
    assert json.loads(path.read_text()) == {"old": True}
    atomic.write_text(path, '{"new": true}')
    assert json.loads(path.read_text()) == {"new": True}


def test_an_exception_inside_staged_dir_leaves_dest_untouched(tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "x").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(dest) as tmp:
            (tmp / "x").write_text("half")
            raise RuntimeError("disk full")
    assert folder(dest) == {"x": "old"} and [p.name for p in tmp_path.iterdir()] == ["data"]


def test_index_killed_after_meta_json_never_leaves_it_without_its_bank(tmp_path):
    """meta.json marks a complete index: the template bank (part-00000.parquet) must be on disk before it. It used
    to be written after meta.json, so a kill in between left an index that match opened and then crashed on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineinstructions import schemas

    templates = tmp_path / "templatize"
    templates.mkdir()
    rows = [{"template_id": f"t{i}", "template": f"what is <fi>thing {i}</fi>", "num_slots": 1,
             "compatible_document_description": f"A document about topic number {i}."} for i in range(5)]
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in schemas.TEMPLATES.names} for r in rows],
                                        schema=schemas.TEMPLATES), templates / "part-00000.parquet")
    out = tmp_path / "index"
    script = f"""
import os, signal
from pathlib import Path
import pyarrow.parquet as pq
real = pq.write_table
def write_table(table, where, *a, **k):  # a kill the moment a parquet file is written after meta.json
    if (Path({str(out)!r}) / "meta.json").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return real(table, where, *a, **k)
pq.write_table = write_table
from fineinstructions.stages.index import IndexConfig, run
run(IndexConfig(input={str(templates)!r}, output={str(out)!r}, progress=False))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:  # a killed build task leaves its executor waiting: that run is over anyway
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (out / "meta.json").is_file()
    assert pq.read_table(out / "part-00000.parquet").num_rows == 5


def test_settle_dir_removes_staging_folders_a_kill_left_behind(tmp_path):
    dest = tmp_path / "checkpoint"
    dest.mkdir()
    (tmp_path / ".checkpoint.abc123.tmp").mkdir()  # a staged_dir whose process was killed
    with atomic.staged_dir(dest) as tmp:
        (tmp / "x").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"] and folder(dest) == {"x": "new"}


def test_atomic_files_and_folders_get_normal_permissions_not_mkstemps_private_ones(tmp_path):
    """Outputs on a shared filesystem must be readable by the group like any file the user writes (umask)."""
    import os
    import stat

    from fineinstructions import atomic

    mask = os.umask(0o022)
    os.umask(mask)
    atomic.write_text(tmp_path / "f.json", "{}")
    with atomic.staged_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask
