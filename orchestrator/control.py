"""The orchestrator's side of the nodes' control call (nodes/net/control.py): the run's secret and POST
/control. `up` makes the secret (`new_secret`), keeps it in the run dir (0600) and gives it to every node
through its key directory; chaos and `reap` read it back from the run dir."""

from __future__ import annotations

import http.client
import json
import os
import secrets
from pathlib import Path
from typing import Final

SECRET_FILE: Final = "control.secret"
TIMEOUT: Final = 5.0


class ControlCallError(Exception):
    """A control call that did not succeed: the node did not answer, or refused (`status`)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def new_secret(run_dir: str | os.PathLike[str]) -> str:
    """A fresh random secret for the run, written to `<run_dir>/control.secret` (0600)."""
    secret = secrets.token_urlsafe(32)
    path = Path(run_dir, SECRET_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def run_secret(run_dir: str | os.PathLike[str]) -> str | None:
    """The run's secret, or None when the run has none (a lab that an older onionlab started)."""
    try:
        return Path(run_dir, SECRET_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def post_control(host: str, port: int, secret: str, command: dict, *, timeout: float = TIMEOUT) -> dict:
    """POST the command to the node's /control; its JSON answer, or ControlCallError."""
    body = json.dumps(command).encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/control", body=body, headers={
            "Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise ControlCallError(f"{host}:{port} did not answer the control call: {e}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"message": raw[:200].decode(errors="replace")}
    if response.status != 200:
        raise ControlCallError(f"{host}:{port} refused the control call ({response.status}): "
                               f"{answer.get('message', answer)}", response.status)
    return answer
