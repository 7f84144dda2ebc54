"""The workstation's job server: one process imports torch and the job modules once, then forks a child
per `ticketlens` command, so a job starts in milliseconds instead of paying 2-2.5 s of imports.

Why: most of the default study's ~300 jobs do under a second of work (a TCAV table, a ticket's maps), and
on the 2-core reference machine Python + torch + pandas imports took 2-2.5 s of every one of them, about
half the study's CPU time (docs/benchmarks.md). Snakemake groups do not share a process, and merging the
rules would lose the per-ticket x concept cache.

How: the Snakefile's `onstart` calls `start()` when jobs run on this machine (never for cluster jobs);
it sets TICKETLENS_JOB_SERVER to the server's socket, and the `ticketlens` console script hands its
argv, working directory, environment and stdin/stdout/stderr to the server (`jobclient.run_on_server`). The forked
child runs exactly what `ticketlens ...` would run in its own process and sends back the exit status.
Without the variable, with `TICKETLENS_JOB_SERVER=off`, or when the server cannot be reached or runs
another interpreter or package, the command runs in its own process as before. The results are the same
bytes either way (tests/runtime/test_jobserver.py). A child exits when its client goes (Snakemake cancelled the
job), and the server exits when the Snakemake process that started it does.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ticketlens.cli import COMMANDS, run
from ticketlens.runtime import kernels
from ticketlens.runtime.jobclient import ENV, LENGTH, MISMATCH, STATUS, identity, receive_exactly

_PRELOAD = ("torch", "numpy", "pandas")  # and every command's module (ticketlens.cli.COMMANDS)
# The BLAS/OpenMP pools read these when the server imports numpy and torch; a job process gets them
# from Snakemake (its rule's threads), so the server starts with the study's threads to match.
FOLDER_PREFIX = "ticketlens-"  # the temp folder of each server's socket (`start`)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS")


def serve(path: Path, log_path: Path | None = None) -> None:
    """Import once, then accept commands and fork a child per command until the parent process exits.

    However the server ends (its Snakemake exited or was killed, SIGTERM), it removes its socket and the
    folder `start` made for it, and its running children are stopped (`_stop_with_parent`): a SIGKILLed
    Snakemake leaves neither a dead socket in the temp folder nor a job finishing as an orphan."""
    # Ctrl-C reaches the whole process group: it is for the jobs; the server ends with its Snakemake
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _serve(path, log_path)
    finally:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".binding").unlink(missing_ok=True)
        if path.parent.name.startswith(FOLDER_PREFIX):  # the folder `start` made, nothing else
            shutil.rmtree(path.parent, ignore_errors=True)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(path: Path, log_path: Path | None) -> None:
    parent = os.getppid()
    kernels.pin_environment()  # before torch loads, as in every `ticketlens` command
    for module in (*_PRELOAD, *sorted({c.target.split(":")[0] for c in COMMANDS.values()})):
        importlib.import_module(module)
    kernels.configure_torch()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind under a temporary name and rename: the socket appears only once it accepts connections
    pending = path.with_name(path.name + ".binding")
    listener.bind(str(pending))
    listener.listen(64)
    os.replace(pending, path)
    listener.settimeout(1.0)
    log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115 (lives as long as the server)
    if log:
        log.write(f"serving {path} (pid {os.getpid()})\n")
    while os.getppid() == parent:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        connection.settimeout(None)
        sys.stdout.flush()
        sys.stderr.flush()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            listener.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a job stops on SIGTERM as its own process would
            _stop_with_parent()
            if os.getppid() != server:  # the server ended before the child asked to be told
                os._exit(143)
            os._exit(_run_child(connection, log))
        connection.close()


def _stop_with_parent() -> None:
    """In a forked child: SIGTERM when the server exits (Linux's PR_SET_PDEATHSIG; elsewhere the child
    still ends when its client goes). The server is single-threaded, so "the parent thread" is the server."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _run_child(connection: socket.socket, log: TextIO | None) -> int:
    """In the forked child: become the client's process (fds, directory, environment), run the command."""
    code = 1
    try:
        header, fds, _, _ = socket.recv_fds(connection, LENGTH.size, 3)
        request = json.loads(receive_exactly(connection, LENGTH.unpack(header)[0]))
        if {key: request.get(key) for key in identity()} != identity():
            code = MISMATCH
            return code
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a process of its own
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = request["argv"]
        if log:
            log.write(f"{os.getpid()}: {shlex.join(request['argv'])}\n")
        threading.Thread(target=_exit_when_client_leaves, args=(connection,), daemon=True).start()
        code = _main(request["argv"][1:])
    finally:
        import logging

        logging.shutdown()  # flush and close the --log file before the client learns the status
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            connection.sendall(STATUS.pack(code))
    return code


def _main(args: list[str]) -> int:
    """`ticketlens args` (`cli.run`), with the exit status a process running it would have."""
    try:
        return run(args)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1


def _exit_when_client_leaves(connection: socket.socket) -> None:
    """The client sends nothing more: EOF means it was killed or cancelled, so this job must stop too."""
    try:
        connection.recv(1)
    finally:
        os._exit(143)


# --- lifecycle (called from the Snakefile) --------------------------------------------------------------


@dataclass
class JobServer:
    process: subprocess.Popen
    folder: Path

    @property
    def socket_path(self) -> Path:
        return self.folder / "server.sock"

    def stop(self) -> None:
        if os.environ.get(ENV) == str(self.socket_path):
            del os.environ[ENV]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        atexit.unregister(self.stop)
        shutil.rmtree(self.folder, ignore_errors=True)


def start(threads: int, log_path: Path | None = None) -> JobServer | None:
    """Start a job server for this process's jobs and export its socket to them (stopped at exit);
    None when the user switched it off with TICKETLENS_JOB_SERVER=off."""
    if os.environ.get(ENV) == "off":
        return None
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))  # short: socket paths are limited to 107 bytes
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))}
    env.pop(ENV, None)
    command = [sys.executable, "-m", "ticketlens.runtime.jobserver", str(folder / "server.sock")]
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command.append(str(log_path))
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    server = JobServer(process, folder)
    os.environ[ENV] = str(server.socket_path)
    atexit.register(server.stop)
    return server


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
