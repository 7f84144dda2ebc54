"""The tiny study through workflow/profiles/slurm on a real one-node Slurm, compared with the local run.

The cluster is private to the test: Debian's slurm-wlm and munge (Slurm 22.05), daemons started as root
with a slurm.conf, munge key and socket in a temporary folder that SLURM_CONF points to; /etc/slurm and
the system munged are never touched. Without root, the packages or working daemons the tests skip and
say why (.ci/run installs the packages). The daemons run only while the workflow runs and are stopped
in a `finally`, also when it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiny_study import ROOT, make_study_dir, snakemake

# One cluster at a time, on the worker that also holds the local run of the tiny study (`study`).
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("tiny_study")]

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
TIMING_FIELDS = {"train_seconds", "images_per_second"}  # the only fields allowed to differ
THREADED_RULE = "make_random_sets"  # run with --set-threads {THREADED_RULE}=2: must get 2 CPUs
LOCAL_RULES = {"prepare_dataset", "all"}  # never submitted


def _missing_requirement() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root to start munged, slurmctld and slurmd"
    missing = [tool for tool in (*DAEMONS, *CLIENTS, "runuser") if not shutil.which(tool)]
    if missing:
        return (
            f"Slurm is not installed (missing {', '.join(missing)}): "
            "apt-get install -y --no-install-recommends slurm-wlm munge (.ci/run does)"
        )
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (Debian's munge package creates it)"
    return None


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """In the child: SIGTERM when pytest dies, so that no daemon outlives a killed test run."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _slurm_conf(base: Path, munge_socket: Path) -> str:
    ctld_port, slurmd_port = _free_ports(2)
    return f"""\
ClusterName=ticketlens-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={base / "state"}
SlurmdSpoolDir={base / "spool"}
SlurmctldPidFile={base / "slurmctld.pid"}
SlurmdPidFile={base / "slurmd.pid"}
SlurmctldLogFile={base / "slurmctld.log"}
SlurmdLogFile={base / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# one line per finished job (JobId, ProcCnt = CPUs allocated): what the assertions read
JobCompType=jobcomp/filetxt
JobCompLoc={base / "jobcomp.txt"}
MpiDefault=none
ReturnToService=2
# squeue forgets a job MinJobAge s after its end; the plugin needs >= 3 x its init seconds
MinJobAge=300
# the node has the CPUs we declare, whatever the machine has (memory is not a consumable here)
SlurmdParameters=config_overrides
NodeName=localhost CPUs=2 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def slurm_cluster() -> Iterator[tuple[dict[str, str], Path]]:
    """Start munged, slurmctld and slurmd on localhost; yield (env for clients, state folder).

    Skips (pytest.skip) when the cluster cannot start; always stops what it started.
    """
    reason = _missing_requirement()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="ticketlens-slurm-"))
    base.chmod(0o755)  # munged runs as user munge and must reach its folder
    processes: list[subprocess.Popen] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))}
    try:
        munge = pwd.getpwnam("munge")
        munge_dir = base / "munge"
        munge_dir.mkdir(mode=0o700)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        for path in (munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        munge_socket = munge_dir / "munge.socket"
        for name in ("state", "spool", "bin"):
            (base / name).mkdir()
        conf = base / "slurm.conf"
        conf.write_text(_slurm_conf(base, munge_socket))
        env["SLURM_CONF"] = str(conf)
        # The job-step plugin clears SLURM_* (SLURM_CONF included) before its `srun`, which then finds no
        # configuration; on a real cluster it reads /etc/slurm. Give srun the private one instead.
        srun = base / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{shutil.which("srun")}" "$@"\n')
        srun.chmod(0o755)
        env["PATH"] = f"{base / 'bin'}{os.pathsep}{env['PATH']}"

        def start(name: str, command: list[str]) -> None:
            with open(base / f"{name}.out", "w") as out:
                processes.append(
                    subprocess.Popen(
                        command, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
                    )
                )

        start(
            "munged",
            ["runuser", "-u", "munge", "--", "munged", "--foreground", "--force", f"--key-file={key}",
             f"--socket={munge_socket}", f"--pid-file={munge_dir / 'munged.pid'}",
             f"--seed-file={munge_dir / 'munged.seed'}", f"--log-file={munge_dir / 'munged.log'}"],
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not munge_socket.exists():
            if processes[0].poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"munged did not start: {_tail(base / 'munged.out')}")
            time.sleep(0.1)
        start("slurmctld", ["slurmctld", "-D", "-i"])
        start("slurmd", ["slurmd", "-D", "-N", "localhost"])
        deadline = time.monotonic() + 30
        state = ""
        while state != "idle":
            dead = [p.args[0] for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "; ".join(f"{d}: {_tail(base / f'{d}.out', 4)}" for d in ("slurmctld", "slurmd"))
                pytest.skip(f"Slurm did not start (exited: {dead or 'none'}, node state {state!r}): {logs}")
            time.sleep(0.3)
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=15
            ).stdout.strip()
        yield env, base
    finally:
        if len(processes) == 3 and processes[1].poll() is None:
            # jobs outlive slurmd (slurmstepd): cancel them while the controller is up
            subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True, timeout=15)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=15)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_study(tmp_path_factory) -> dict:
    """The tiny study run through the SLURM profile: its folder, snakemake's output and the jobs Slurm ran."""
    workdir = make_study_dir(tmp_path_factory.mktemp("slurm_study"))
    with slurm_cluster() as (env, base):
        started = time.monotonic()
        result = snakemake(
            workdir,
            "--workflow-profile",
            str(PROFILE),
            "--set-threads",
            f"{THREADED_RULE}=2",
            env=env,
            timeout=1200,
        )
        seconds = time.monotonic() - started
        jobcomp = (base / "jobcomp.txt").read_text() if (base / "jobcomp.txt").exists() else ""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # "Job 7 has been submitted with SLURM jobid 12 (log: .../slurm_logs/rule_train_ticket/...)"
    submitted = {
        int(jobid): rule
        for jobid, rule in re.findall(
            r"submitted with SLURM jobid (\d+) \(log: \S*?/rule_([A-Za-z0-9_]+)/", output
        )
    }
    cpus = {int(j): int(c) for j, c in re.findall(r"JobId=(\d+) .*?\bProcCnt=(\d+)", jobcomp)}
    states = dict(re.findall(r"JobId=(\d+) .*?\bJobState=(\S+)", jobcomp))
    print(f"SLURM run: {seconds:.0f} s, {len(submitted)} SLURM jobs")
    return {"workdir": workdir, "output": output, "submitted": submitted, "cpus": cpus, "states": states}


def test_every_rule_but_data_preparation_runs_as_a_slurm_job(slurm_study):
    output, submitted = slurm_study["output"], slurm_study["submitted"]
    # snakemake's "Job stats" table: rule and count per line, up to "total"
    table = output[output.index("Job stats:") :]
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table[: table.index("total")], re.M)}
    expected = sum(n for rule, n in counts.items() if rule not in LOCAL_RULES)
    assert counts.get("prepare_dataset") and expected > 20, counts
    assert not LOCAL_RULES & set(submitted.values()), sorted(submitted.values())
    assert len(submitted) == expected, sorted(submitted.values())
    # Slurm ran exactly these jobs, all to completion
    assert set(slurm_study["cpus"]) == set(submitted)
    assert set(slurm_study["states"].values()) == {"COMPLETED"}


def test_each_job_gets_its_rules_threads_as_cpus(slurm_study):
    cpus = slurm_study["cpus"]
    by_rule: dict[str, set[int]] = {}
    for jobid, rule in slurm_study["submitted"].items():
        by_rule.setdefault(rule, set()).add(cpus[jobid])
    assert by_rule.pop(THREADED_RULE) == {2}, "threads: 2 must give --cpus-per-task=2"
    assert set().union(*by_rule.values()) == {1}, by_rule  # study.threads = 1 in the tiny study


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def test_results_equal_the_local_run_except_timings(slurm_study, study):
    local_root, slurm_root = study / "results", slurm_study["workdir"] / "results"
    local_files = sorted(p.relative_to(local_root) for p in local_root.rglob("*") if p.is_file())
    slurm_files = sorted(p.relative_to(slurm_root) for p in slurm_root.rglob("*") if p.is_file())
    assert slurm_files == local_files, f"only in one run: {sorted(set(local_files) ^ set(slurm_files))}"
    timed = 0
    for relative in local_files:
        a, b = (local_root / relative).read_bytes(), (slurm_root / relative).read_bytes()
        if a == b:
            continue
        assert relative.name == "metrics.json", f"{relative} differs"
        local_json, slurm_json = json.loads(a), json.loads(b)
        assert local_json.keys() >= TIMING_FIELDS, f"{relative} differs and has no timing fields"
        assert _without_timing(local_json) == _without_timing(slurm_json), f"{relative} differs"
        timed += 1
    assert any(p.suffix == ".pt" for p in local_files) and any(p.suffix == ".npz" for p in local_files)
    assert timed <= 8  # one metrics.json per ticket: 2 datasets x (dense, ticket, reinit, randmask)
