"""The workstation job server (ticketlens.runtime.jobserver): commands run in its forked children with the client's
streams, directory and exit status; a killed client stops its job; no usable server means the command runs
in its own process; and the tiny study gives the same bytes with and without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT, assert_same_results, make_study_dir, snakemake
from ticketlens.runtime import jobserver

TICKETLENS = str(Path(sys.executable).parent / "ticketlens")
SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[jobserver.JobServer, Path]]:
    log = tmp_path / "server.log"
    server = jobserver.start(threads=1, log_path=log)
    try:
        deadline = time.monotonic() + 120  # the server imports torch and every command's module first
        while not server.socket_path.exists():
            assert server.process.poll() is None, "the job server exited while starting"
            assert time.monotonic() < deadline, "the job server did not start listening"
            time.sleep(0.1)
        yield server, log
    finally:
        server.stop()


def _served(log: Path) -> list[str]:
    """The commands the server's children ran (its log: one line per command after `serving ...`)."""
    return [line.split(": ", 1)[1] for line in log.read_text().splitlines() if not line.startswith("serving")]


def _ticketlens(*args: str, cwd: Path, env_value: str | None, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != jobserver.ENV}
    if env_value is not None:
        env[jobserver.ENV] = env_value
    return subprocess.run([TICKETLENS, *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


def test_a_command_runs_in_a_server_child_with_the_clients_streams_directory_and_status(server, tmp_path):
    running, log = server
    (tmp_path / "good.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "bad.yaml").write_text("study: [\n")
    good = _ticketlens("check-params", "good.yaml", "--schema", str(SCHEMA), cwd=tmp_path,
                       env_value=str(running.socket_path))  # fmt: skip
    bad = _ticketlens("--log", "bad.log", "check-params", "bad.yaml", "--schema", str(SCHEMA), cwd=tmp_path,
                      env_value=str(running.socket_path))  # fmt: skip
    assert (good.returncode, good.stdout) == (0, "good.yaml: valid\n")
    assert bad.returncode == 2 and bad.stdout == ""
    assert (
        bad.stderr.strip()
        == "ticketlens check-params: error: bad.yaml: not valid YAML (while parsing a flow node)"
    )
    assert "not valid YAML" in (tmp_path / "bad.log").read_text()  # relative to the client's directory
    assert [c.split()[-3] for c in _served(log)] == ["good.yaml", "bad.yaml"]


def test_without_a_usable_server_the_command_runs_in_its_own_process(server, tmp_path):
    running, log = server
    (tmp_path / "bad.yaml").write_text("study: [\n")
    for value in ("off", str(tmp_path / "no-such.sock"), None):
        result = _ticketlens(
            "check-params", "bad.yaml", "--schema", str(SCHEMA), cwd=tmp_path, env_value=value
        )
        assert result.returncode == 2 and "not valid YAML" in result.stderr, value
    assert _served(log) == []


def test_a_killed_client_stops_its_job(server, tmp_path):
    """The job reads its stdin (a pipe this test holds open) forever; killing the client must end it, which
    closes the pipe's last reader, so writing to the pipe fails."""
    running, log = server
    env = {**os.environ, jobserver.ENV: str(running.socket_path)}
    client = subprocess.Popen([TICKETLENS, "check-params", "/dev/stdin", "--schema", str(SCHEMA)],
                              cwd=tmp_path, env=env, stdin=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while not _served(log):
        assert time.monotonic() < deadline, "the command never reached the server"
        time.sleep(0.05)
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    with pytest.raises(BrokenPipeError):  # noqa: PT012 (the job may take a moment to exit)
        while time.monotonic() < deadline:
            client.stdin.write(b"study: {}\n")
            client.stdin.flush()
            time.sleep(0.05)
    client.stdin = None  # already broken: Popen must not flush it again


def test_ctrl_c_stops_the_jobs_not_the_server(server, tmp_path):
    """A terminal's Ctrl-C signals the whole process group: the server must keep serving (it ends with
    its Snakemake run), while a job interrupted like this ends as a process of its own would."""
    running, log = server
    os.kill(running.process.pid, signal.SIGINT)
    (tmp_path / "good.yaml").write_text((ROOT / "params.yaml").read_text())
    result = _ticketlens("check-params", "good.yaml", "--schema", str(SCHEMA), cwd=tmp_path,
                         env_value=str(running.socket_path))  # fmt: skip
    assert running.process.poll() is None and result.returncode == 0
    assert _served(log) == [f"{TICKETLENS} check-params good.yaml --schema {SCHEMA}"]


def test_a_stopped_server_leaves_nothing_behind(tmp_path):
    running = jobserver.start(threads=1, log_path=tmp_path / "server.log")
    assert os.environ[jobserver.ENV] == str(running.socket_path)
    running.stop()
    assert running.process.poll() is not None
    assert not running.folder.exists()
    assert jobserver.ENV not in os.environ


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_study")
def test_the_tiny_study_gives_the_same_bytes_with_and_without_the_server(study, tmp_path):
    served = _served(study / ".snakemake" / "ticketlens" / "job_server.log")
    assert sum("train-ticket" in c for c in served) >= 4 and any("tcav-concept" in c for c in served)
    serving = [line for line in (study / ".snakemake/ticketlens/job_server.log").read_text().splitlines()
               if line.startswith("serving")]  # fmt: skip
    assert serving and not Path(serving[-1].split()[1]).exists(), "the server's socket outlived the run"
    workdir = make_study_dir(tmp_path / "own_processes")
    result = snakemake(workdir, "--cores", "2", env={**os.environ, jobserver.ENV: "off"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (workdir / ".snakemake" / "ticketlens" / "job_server.log").exists()
    assert_same_results(workdir / "results", study / "results")


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_killed_snakemake_leaves_no_socket_and_no_orphan_job(tmp_path):
    """Issue 22 item 13: SIGKILL of the process that started the server (Snakemake): the server removes
    its socket folder as it exits, and the job it was running stops instead of finishing as an orphan."""
    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ticketlens.runtime import jobserver; "
         "s = jobserver.start(1, None); print(s.socket_path, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    socket_path = Path(starter.stdout.readline().strip())
    try:
        _wait_for(socket_path.exists, 120, "the job server did not start listening")
        env = {**os.environ, jobserver.ENV: str(socket_path)}
        job = subprocess.Popen([TICKETLENS, "check-params", "/dev/stdin", "--schema", str(SCHEMA)],
                               cwd=tmp_path, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        time.sleep(1.0)  # the job is running in a server child, reading its stdin
        assert job.poll() is None
        starter.kill()
        starter.wait()
        _wait_for(lambda: not socket_path.parent.exists(), 15, "the socket outlived the server")
        assert job.wait(timeout=15) != 0  # stopped, not finished
        assert b"ended without an exit status" in job.stderr.read()
    finally:
        starter.kill()
        starter.wait()


def test_a_terminated_server_removes_its_socket(tmp_path):
    running = jobserver.start(threads=1, log_path=tmp_path / "server.log")
    try:
        _wait_for(running.socket_path.exists, 120, "the job server did not start listening")
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=15)
        assert not running.folder.exists()
    finally:
        running.stop()
