"""The SLURM profile (workflow/profiles/slurm): the tiny study on a real one-node Slurm, compared with the
local run; a failing job's error in the rule's own log; the per-ticket groups in dry runs.

The cluster is private to the tests: Debian's slurm-wlm and munge (Slurm 22.05), daemons started as root
with a slurm.conf, munge key and socket in a temporary folder that SLURM_CONF points to; /etc/slurm and
the system munged are never touched. Where Slurm is not installed (no slurmctld) or there is no root,
the cluster tests skip and say why (.ci/run installs the packages as root); an installed Slurm that
does not start fails them. The daemons run while this module's cluster tests run
and are stopped in a `finally`, also when they fail. The dry-run tests need no cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
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

from helpers import ROOT, TINY, assert_same_results, make_study_dir, snakemake

# One cluster at a time, on the worker that also holds the local run of the tiny study (`study`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_study")]

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
THREADED_RULE = "make_random_sets"  # run with --set-threads {THREADED_RULE}=2: must get 2 CPUs
LOCAL_RULES = {"prepare_dataset", "all"}  # never submitted
GROUPED_RULES = {"explain_ticket", "tcav_calibration", "tcav_concept"}  # one submission per ticket
TICKETS = [(dataset, branch, r) for dataset in ("mnist", "synthbirds")
           for branch, r in (("ticket", 0), ("ticket", 1), ("reinit", 1), ("randmask", 1))]  # fmt: skip


def _skip_reason() -> str | None:
    """Why the cluster tests cannot run here at all: Slurm is not installed, or no root to start it."""
    if not shutil.which("slurmctld"):
        return (
            "Slurm is not installed (no slurmctld): "
            "apt-get install -y --no-install-recommends slurm-wlm munge (.ci/run does, as root)"
        )
    if os.name != "posix" or os.geteuid() != 0:
        return "Slurm is installed, but starting munged, slurmctld and slurmd needs root"
    return None


def _incomplete_installation() -> str | None:
    """With slurmctld present, what else is missing (a broken install fails the tests, never skips)."""
    missing = [tool for tool in (*DAEMONS, *CLIENTS, "runuser") if not shutil.which(tool)]
    if missing:
        return f"Slurm is incomplete (missing {', '.join(missing)}): reinstall slurm-wlm and munge"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (Debian's munge package creates it): reinstall munge"
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

    Skips (pytest.skip, with the reason) only where Slurm is not installed or there is no root; a Slurm
    that is installed but does not start fails the test. Always stops what it started.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    problem = _incomplete_installation()
    if problem:
        pytest.fail(problem)
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
                pytest.fail(f"munged did not start: {_tail(base / 'munged.out')}")
            time.sleep(0.1)
        start("slurmctld", ["slurmctld", "-D", "-i"])
        start("slurmd", ["slurmd", "-D", "-N", "localhost"])
        deadline = time.monotonic() + 30
        state = ""
        while state != "idle":
            dead = [p.args[0] for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "; ".join(f"{d}: {_tail(base / f'{d}.out', 4)}" for d in ("slurmctld", "slurmd"))
                pytest.fail(f"Slurm did not start (exited: {dead or 'none'}, node state {state!r}): {logs}")
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
def cluster() -> Iterator[tuple[dict[str, str], Path]]:
    """A private one-node Slurm for this module's cluster tests: (env for clients, state folder)."""
    with slurm_cluster() as running:
        yield running


def _submissions(output: str) -> dict[int, str]:
    """SLURM job id -> what it ran: `rule_<rule>` or `group_<group>`, from the plugin's log lines.

    "Job 7 has been submitted with SLURM jobid 12 (log: .../slurm_logs/rule_train_ticket/...)"
    """
    return {
        int(jobid): kind
        for jobid, kind in re.findall(
            r"submitted with SLURM jobid (\d+) \(log: \S*?/slurm_logs/((?:rule|group)_[A-Za-z0-9_]+)/", output
        )
    }


def _job_stats(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table: rule -> number of jobs."""
    table = output[output.index("Job stats:") :]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table[: table.index("total")], re.M)}


def _group_name(dataset: str, branch: str, r: int, seed: int = 0) -> str:
    return f"explain_{dataset}_seed{seed}_{branch}_round{r}"  # the profile's `groups:` pattern


@pytest.fixture(scope="module")
def slurm_study(cluster, tmp_path_factory) -> dict:
    """The tiny study run through the SLURM profile: its folder, snakemake's output and the jobs Slurm ran."""
    env, base = cluster
    workdir = make_study_dir(tmp_path_factory.mktemp("slurm_study"))
    started = time.monotonic()
    result = snakemake(
        workdir,
        "--workflow-profile",
        str(PROFILE),
        # the test node has 2 CPUs: a submission (a ticket's group of explanation jobs) must not ask more
        "--cores",
        "2",
        "--set-threads",
        f"{THREADED_RULE}=2",
        env=env,
        timeout=1200,
    )
    seconds = time.monotonic() - started
    jobcomp = (base / "jobcomp.txt").read_text() if (base / "jobcomp.txt").exists() else ""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    submitted = _submissions(output)
    cpus = {int(j): int(c) for j, c in re.findall(r"JobId=(\d+) .*?\bProcCnt=(\d+)", jobcomp)}
    states = dict(re.findall(r"JobId=(\d+) .*?\bJobState=(\S+)", jobcomp))
    print(f"SLURM run: {seconds:.0f} s, {len(submitted)} SLURM jobs")
    return {"workdir": workdir, "output": output, "submitted": submitted, "cpus": cpus, "states": states}


@pytest.mark.slurm
def test_each_tickets_explanations_are_one_submission_the_rest_one_job_each(slurm_study):
    output, submitted = slurm_study["output"], slurm_study["submitted"]
    counts = _job_stats(output)
    assert counts.get("prepare_dataset") and set(counts) >= GROUPED_RULES, counts
    plain = {rule: n for rule, n in counts.items() if rule not in LOCAL_RULES | GROUPED_RULES}
    kinds = sorted(submitted.values())
    # data preparation runs on the submitting host; every other rule outside the groups is one job each
    assert not {f"rule_{r}" for r in LOCAL_RULES | GROUPED_RULES} & set(kinds), kinds
    assert {k: kinds.count(f"rule_{k}") for k in plain} == plain, kinds
    # one submission per ticket for its explain_ticket, tcav_calibration and tcav_concept jobs
    groups = [k for k in kinds if k.startswith("group_")]  # group_<group>_<its rules, sorted>
    rules = "_".join(sorted(GROUPED_RULES))
    assert sorted(groups) == sorted(f"group_{_group_name(*ticket)}_{rules}" for ticket in TICKETS)
    grouped_jobs = sum(counts[rule] for rule in GROUPED_RULES)
    assert grouped_jobs == 3 * len(TICKETS)  # one concept per dataset in the tiny study
    assert len(submitted) == sum(plain.values()) + len(TICKETS) < sum(plain.values()) + grouped_jobs
    # ... and every job of a group ran: each rule wrote its own log in the ticket's log folder
    workdir = slurm_study["workdir"]
    for dataset, branch, r in TICKETS:
        folder = workdir / "logs" / dataset / "seed_0" / branch / f"round_{r}"
        concept = TINY["datasets"][dataset]["concepts"][0]
        for log in ("explain_ticket.log", "tcav_calibration.log", f"tcav_{concept}.log"):
            assert (folder / log).stat().st_size > 0, folder / log
    # Slurm ran exactly these jobs, all to completion
    assert set(slurm_study["cpus"]) == set(submitted)
    assert set(slurm_study["states"].values()) == {"COMPLETED"}


@pytest.mark.slurm
def test_each_job_gets_its_rules_threads_as_cpus(slurm_study):
    cpus = slurm_study["cpus"]
    by_kind: dict[str, set[int]] = {}
    for jobid, kind in slurm_study["submitted"].items():
        by_kind.setdefault("group" if kind.startswith("group_") else kind, set()).add(cpus[jobid])
    assert by_kind.pop(f"rule_{THREADED_RULE}") == {2}, "threads: 2 must give --cpus-per-task=2"
    # a group asks for what runs side by side in it: explain_ticket and tcav_calibration, one thread each
    assert by_kind.pop("group") == {2}, (
        "a ticket's group must run explain_ticket and tcav_calibration side by side"
    )
    assert set().union(*by_kind.values()) == {1}, by_kind  # study.threads = 1 in the tiny study


@pytest.mark.slurm
def test_results_equal_the_local_run_except_timings(slurm_study, study):
    assert_same_results(study / "results", slurm_study["workdir"] / "results")


@pytest.mark.slurm
def test_a_failed_jobs_error_is_in_its_rules_log_and_shown(cluster, tmp_path):
    """A job that fails on the cluster, alone and inside a ticket's group: its one-line error is in the
    rule's logs/... file (SLURM sends stderr to .snakemake/slurm_logs) and Snakemake shows it."""
    env, _ = cluster
    workdir = make_study_dir(tmp_path)
    dense = "results/mnist/seed_0/ticket/round_0"
    broken = "results/mnist/prepared/data.pt"
    # the dense net and the random sets, built locally in seconds; then the prepared data corrupted with
    # its old mtime (so nothing upstream re-runs; not a checkpoint, which the Snakefile's start-up check
    # would refuse before any submission)
    local = snakemake(
        workdir, "--cores", "2", f"{dense}/checkpoint.pt", "results/mnist/concepts/random_sets.pt"
    )
    assert local.returncode == 0, local.stderr[-4000:]
    stat = (workdir / broken).stat()
    (workdir / broken).write_bytes(b"not a prepared dataset")
    os.utime(workdir / broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # both read the prepared data: make_concept_set (a job of its own), tcav_calibration (in the dense net's group)
    result = snakemake(
        workdir, "--workflow-profile", str(PROFILE), "--keep-going",
        "results/mnist/concepts/stroke_horizontal.pt", f"{dense}/tcav/calibration.csv",
        env=env, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    group = f"group_{_group_name('mnist', 'ticket', 0)}_tcav_calibration"  # group_<group>_<its rules>
    assert sorted(_submissions(output).values()) == [group, "rule_make_concept_set"], output[-4000:]
    for log, command in (
        ("logs/mnist/concepts/stroke_horizontal.log", "make-concept-set"),
        ("logs/mnist/seed_0/ticket/round_0/tcav_calibration.log", "tcav-calibration"),
    ):
        errors = [line for line in (workdir / log).read_text().splitlines() if ": error: " in line]
        assert len(errors) == 1, (log, errors)
        line = errors[0][errors[0].index(f"ticketlens {command}: error: ") :]
        assert broken in line, line
        assert line in output, f"--show-failed-logs did not show {log}"  # snakemake printed the rule's log


def _dry_run_groups(output: str) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """From a dry run's job list: group name -> [(rule, wildcards)], and the rules of ungrouped jobs.

    Asserts that no group name stands for two group jobs (two submissions)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    ungrouped: list[str] = []
    current: list[tuple[str, str]] | None = None
    rule = ""
    for line in output.splitlines():
        header = re.search(r"Group job (\S+) \(", line)
        if header:
            assert header[1] not in groups, f"group {header[1]} is more than one submission"
            current = groups[header[1]] = []
        elif line and not line[0].isspace():
            current = None  # an unindented line: a job outside any group
        if match := re.match(r"^(\s*)rule (\w+):", line):
            rule = match[2]
            if current is None:
                ungrouped.append(rule)
        elif (match := re.match(r"^\s+wildcards: (.*)$", line)) and current is not None:
            current.append((rule, match[1]))
    return groups, ungrouped


def test_slurm_profile_groups_each_tickets_explanation_jobs(tmp_path):
    """Dry runs (no cluster): one group per ticket with exactly its explain_ticket, tcav_calibration and
    tcav_concept jobs under the SLURM profile; no group under the workstation profile."""
    workdir = make_study_dir(tmp_path)
    result = snakemake(workdir, "-n", "--workflow-profile", str(PROFILE))
    assert result.returncode == 0, result.stderr[-4000:]
    groups, ungrouped = _dry_run_groups(result.stdout + result.stderr)
    assert sorted(groups) == sorted(_group_name(*ticket) for ticket in TICKETS)
    for dataset, branch, r in TICKETS:
        jobs = groups[_group_name(dataset, branch, r)]
        assert sorted(rule for rule, _ in jobs) == sorted(GROUPED_RULES), jobs
        for _, wildcards in jobs:
            assert wildcards.startswith(f"dataset={dataset}, seed=0, branch={branch}, round={r}"), wildcards
    assert not GROUPED_RULES & set(ungrouped) and "train_ticket" in ungrouped, ungrouped

    local = snakemake(workdir, "-n", "--workflow-profile", str(ROOT / "workflow" / "profiles" / "default"))
    assert local.returncode == 0, local.stderr[-4000:]
    assert "Group job" not in local.stdout + local.stderr


def test_an_added_concepts_tables_join_one_submission_per_ticket(study, tmp_path):
    """After the study ran, two more concepts: per ticket only their two TCAV tables run (two separate
    pieces of the DAG, tcav_calibration being done) and group-components still makes them one submission."""
    extra = tmp_path / "more_concepts.yaml"
    extra.write_text("datasets:\n  mnist:\n    concepts: [stroke_horizontal, stroke_vertical, stroke_loop]\n")
    result = snakemake(study, "-n", "--workflow-profile", str(PROFILE), "--configfile", str(extra))
    assert result.returncode == 0, result.stderr[-4000:]
    groups, ungrouped = _dry_run_groups(result.stdout + result.stderr)
    mnist = [ticket for ticket in TICKETS if ticket[0] == "mnist"]
    assert sorted(groups) == sorted(_group_name(*ticket) for ticket in mnist)
    for ticket in mnist:
        jobs = groups[_group_name(*ticket)]
        assert sorted(wildcards.rsplit("concept=", 1)[1] for rule, wildcards in jobs if rule == "tcav_concept") == [
            "stroke_loop", "stroke_vertical"
        ], jobs  # fmt: skip
        assert len(jobs) == 2, jobs
    assert not GROUPED_RULES & set(ungrouped), ungrouped
