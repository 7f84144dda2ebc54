"""The client side of the workstation's job server (`ticketlens.runtime.jobserver`): the wire protocol and
`run_on_server`, which the `ticketlens` console script calls first (stdlib only: it runs in every job).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from ticketlens.runtime import kernels

ENV = "TICKETLENS_JOB_SERVER"  # the socket's path, or "off"
LENGTH = struct.Struct("!I")
STATUS = struct.Struct("!i")
MISMATCH = -1000  # the server runs another interpreter or package: run the command in the client


def identity() -> dict[str, Any]:
    """What must match between client and server: the interpreter, the package on disk and the CPU
    kernels (a server pinned for other kernels would compute other floats)."""
    return {
        "python": sys.executable,
        "package": str(Path(__file__).resolve().parents[1]),
        "kernels": kernels.signature(),
    }


def run_on_server(argv: list[str]) -> int | None:
    """Run `ticketlens argv[1:]` in a child of the job server named by $TICKETLENS_JOB_SERVER and return
    its exit status; None when there is no usable server (the caller then runs the command itself)."""
    path = os.environ.get(ENV)
    if not path or path == "off":
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
    except OSError:  # gone, or not listening yet: run here
        client.close()
        return None
    with client:
        request = json.dumps(
            {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), **identity()}
        ).encode()
        socket.send_fds(client, [LENGTH.pack(len(request))], [0, 1, 2])
        client.sendall(request)
        status = receive_exactly(client, STATUS.size)
    if len(status) < STATUS.size:
        print(
            f"ticketlens: the job server's process for this command ended without an exit status ({path})",
            file=sys.stderr,
        )
        return 1
    (code,) = STATUS.unpack(status)
    return None if code == MISMATCH else code


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
