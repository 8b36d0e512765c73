"""Executors: the same `queries` stage on this machine, on a real local Ray cluster and on a real single-node Slurm
cluster (munged + slurmctld + slurmd started here) gives the same shards, rejects and summary; reruns are no-ops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fineinstructions.config import from_sources
from fineinstructions.errors import UserError
from fineinstructions.pipeline.executors import RayOptions, SlurmOptions, make_executor, wait_for_slurm_job
from fineinstructions.recipe import stage_configs
from fineinstructions.stages.queries import QueriesConfig, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from llm_stage_helpers import table  # noqa: E402


@pytest.fixture
def queries_input(tmp_path) -> str:
    """Two files (one per task) with duplicates inside and across them, an empty and an over-long query."""
    folder = tmp_path / "queries"
    folder.mkdir()
    for f in range(2):
        records = [{"id": f"{f}-{i}", "source": "s", "query": f"question number {i % 12} about topic {i % 4}"}
                   for i in range(30)]
        records += [{"id": f"{f}-empty", "query": "  "}, {"id": f"{f}-long", "query": "x" * 2000}]
        (folder / f"part{f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


def run_queries(src: str, out: Path, **kw):
    return run(QueriesConfig(input=src, output=str(out), tasks=2, workers=-1, progress=False, **kw))


def outputs(out: Path) -> dict:
    """Everything a later stage or a user sees: shard by shard rows, rejects, counts."""
    shards = {p.name: pq.read_table(p).to_pylist() for p in sorted(out.glob("part-*.parquet"))}
    summary = json.loads((out / "summary.json").read_text())
    counts = {k: summary[k] for k in ("rows_in", "rows_out", "rejects", "skips", "shards")}
    return {"shards": shards, "rejects": sorted(table(out, "rejects"), key=str), "counts": counts}


def mtimes(out: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*.parquet")}


# ── options: YAML, CLI and run configs reach every stage ────────────────────────────────────────────────────


def test_cluster_options_from_yaml_and_flags():
    yaml_values = {"executor": "slurm", "slurm": {"partition": "cpu", "sbatch_args": {"account": "proj"}}}
    cfg = from_sources(QueriesConfig, yaml_values, {"slurm.time": "2:00:00", "ray.address": "auto"})
    assert cfg.executor == "slurm"
    assert cfg.slurm == SlurmOptions(partition="cpu", time="2:00:00", sbatch_args={"account": "proj"})
    assert cfg.ray == RayOptions(address="auto")


def test_run_config_executor_applies_to_every_stage(tmp_path):
    config = {"executor": "ray", "ray": {"address": "auto", "cpus_per_task": 2}, "judge": {"ray": {"cpus_per_task": 4}},
              "queries": {"input": "q.jsonl"}, "match": {"input": "d.jsonl"},
              "stages": ["queries", "templatize", "judge"]}
    resolved = {spec.name: cfg for spec, cfg in stage_configs(config, str(tmp_path))}
    assert {cfg.executor for cfg in resolved.values()} == {"ray"}
    assert resolved["judge"].ray == RayOptions(address="auto", cpus_per_task=4)
    assert resolved["templatize"].ray == RayOptions(address="auto", cpus_per_task=2)


def test_sbatch_script_asks_for_what_was_configured(tmp_path):
    """The job script datatrove writes: partition, time, array size and throttle, resources, the job's Python."""
    opts = QueriesConfig(executor="slurm", workers=3, slurm=SlurmOptions(
        partition="cpu", time="01:30:00", cpus_per_task=4, mem_per_cpu_gb=3, sbatch_args={"account": "proj"}))
    executor = make_executor(opts, [], tmp_path / "logs" / "map", tasks=8, job_name="fi-queries-map")
    script = executor.get_launch_file_contents(executor.get_sbatch_args(8), "launch_pickled_pipeline x.pik")
    lines = script.splitlines()
    for expected in ("--partition=cpu", "--time=01:30:00", "--array=0-7%3", "--cpus-per-task=4", "--mem-per-cpu=3G",
                     "--account=proj", "--job-name=fi-queries-map"):
        assert f"#SBATCH {expected}" in lines
    assert f"source {Path(sys.prefix).resolve()}/bin/activate" in script
    assert "launch_pickled_pipeline x.pik" in script and "--qos" not in script

    unset = make_executor(QueriesConfig(executor="slurm", workers=-1), [], tmp_path / "logs2", 2, "j")
    args = unset.get_sbatch_args(2)
    assert "partition" not in args and "time" not in args and args["array"] == "0-1"  # the cluster's defaults


# ── Ray: a real local cluster ─────────────────────────────────────────────────────────────────────────────


#: datatrove 0.10 passes placement groups to Ray the old way
ray_warnings = pytest.mark.filterwarnings("ignore:placement_group:DeprecationWarning")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fineinstructions[ray]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@ray_warnings
def test_ray_gives_the_local_output_and_resumes(ray_cluster, queries_input, tmp_path):
    run_queries(queries_input, tmp_path / "local")
    on_ray = tmp_path / "ray"
    run_queries(queries_input, on_ray, executor="ray", ray=RayOptions(mem_per_cpu_gb=0.25))
    assert outputs(on_ray) == outputs(tmp_path / "local")
    shards = outputs(on_ray)["shards"]
    assert [len(rows) for rows in shards.values()] == [12, 0]  # keep-first dedup: file 1 repeats file 0
    assert sorted(p.name for p in (on_ray / "logs" / "map" / "completions").iterdir()) == ["00000", "00001"]

    before = mtimes(on_ray)
    run_queries(queries_input, on_ray, executor="ray", ray=RayOptions(mem_per_cpu_gb=0.25))  # finished: no-op
    assert mtimes(on_ray) == before


@ray_warnings
def test_stage_started_locally_finishes_on_ray(ray_cluster, queries_input, tmp_path):
    """Same completion markers: a task lost by a local run is redone by Ray, and only that task."""
    out = tmp_path / "out"
    run_queries(queries_input, out)
    expected = outputs(out)
    (out / "logs" / "map" / "completions" / "00001").unlink()
    (out / "_map" / "part-00001.parquet").unlink()
    shutil.rmtree(out / "logs" / "dedup")
    kept = (out / "_map" / "part-00000.parquet").stat().st_mtime_ns
    run_queries(queries_input, out, executor="ray", ray=RayOptions(mem_per_cpu_gb=0.25))
    assert outputs(out) == expected
    assert (out / "_map" / "part-00000.parquet").stat().st_mtime_ns == kept


# ── Slurm: a real single-node cluster started by the fixture ──────────────────────────────────────────────


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
ClusterName=fitest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """munged, slurmctld and slurmd from Debian's `slurmctld slurmd slurm-client munge` packages, on free ports,
    with every file under a temporary folder; stopped (by pid) at the end."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(b)]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): "
                    "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("a single-node Slurm needs root here (slurmd starts job steps as the submitting user)")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(d=d, ctld_port=_free_port(), d_port=_free_port()))
    pids = [d / "munge" / "munged.pid", d / "slurmctld.pid", d / "slurmd.pid"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(conf))
        try:
            subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={d}/munge/munge.socket",
                            f"--pid-file={pids[0]}", f"--log-file={d}/munge/munged.log",
                            f"--seed-file={d}/munge/seed"], check=True)
            subprocess.run(["slurmctld", "-f", str(conf)], check=True)
            subprocess.run(["slurmd", "-f", str(conf), "-N", "localhost"], check=True)
            deadline = time.time() + 60
            while subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip() != "idle":
                if time.time() > deadline:
                    pytest.fail("slurm node never became idle:\n" + (d / "slurmctld.log").read_text()[-2000:])
                time.sleep(0.5)
            yield d
        finally:
            for pid_file in reversed(pids):
                if pid_file.is_file():
                    try:
                        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                    except (ProcessLookupError, ValueError):
                        pass


def test_slurm_gives_the_local_output_and_resumes(slurm_cluster, queries_input, tmp_path):
    run_queries(queries_input, tmp_path / "local")
    on_slurm = tmp_path / "slurm"
    slurm = SlurmOptions(partition="debug", time="10:00", mem_per_cpu_gb=1, poll=0.5)
    broken = SlurmOptions(partition="debug", mem_per_cpu_gb=1, poll=0.5, env_command="exit 3")  # jobs fail at once
    with pytest.raises(UserError, match="2 of 2 map tasks did not finish"):
        run_queries(queries_input, on_slurm, executor="slurm", slurm=broken)
    run_queries(queries_input, on_slurm, executor="slurm", slurm=slurm)  # the rerun resumes
    assert outputs(on_slurm) == outputs(tmp_path / "local")
    script = (on_slurm / "logs" / "map" / "launch_script.slurm").read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --array=0-1" in script
    assert len(list((on_slurm / "logs" / "map" / "slurm_logs").glob("*.out"))) == 4  # one job per task and run

    launch_script = on_slurm / "logs" / "map" / "launch_script.slurm"
    before = mtimes(on_slurm) | {"script": launch_script.stat().st_mtime_ns}
    run_queries(queries_input, on_slurm, executor="slurm", slurm=slurm)  # finished: nothing is submitted
    assert mtimes(on_slurm) | {"script": launch_script.stat().st_mtime_ns} == before


def test_waiting_for_a_job_slurm_has_forgotten_returns(slurm_cluster):
    start = time.time()
    wait_for_slurm_job("999999", poll=5)
    assert time.time() - start < 5


def test_ctrl_c_while_waiting_cancels_the_job(slurm_cluster, queries_input, tmp_path):
    """A rerun after Ctrl-C must not race the interrupted job, so the job is cancelled."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    slow = SlurmOptions(mem_per_cpu_gb=1, poll=0.5, env_command="sleep 300")
    try:
        signal.alarm(3)
        with pytest.raises(KeyboardInterrupt):
            run_queries(queries_input, tmp_path / "out", executor="slurm", slurm=slow)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    deadline = time.time() + 20
    while subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the interrupted job is still queued"
        time.sleep(0.5)
