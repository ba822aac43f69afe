"""``tickflow reload``: ask a running daemon to reload its config and wait for the verdict.

``ExecReload=`` in the systemd unit runs this, so ``systemctl reload tickflow`` fails when the
daemon refuses the new file. ``kill -HUP`` cannot do that: the signal is delivered whatever the
daemon then decides, so ``systemctl reload tickflow && echo ok`` would say ok to a refused file.

The request is ``POST /reload`` on the admin API, which reloads before it answers: 200 with the
reload report when the file took effect, 422 with the reason when it was refused (the running
config is kept). The token comes from ``--token-file`` (``$VARS`` expanded, so systemd's
``%d/admin-token`` or ``${CREDENTIALS_DIRECTORY}/admin-token`` work) or from
``$TICKFLOW_ADMIN_TOKEN``, never from the command line. The daemon's address comes from
``--url``, else ``$TICKFLOW_ADMIN_URL``, else the default metrics address; the config file is
deliberately not read for it: the file being reloaded may be the broken one.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

from engine.core.errors import TickflowError
from engine.service.auth import ADMIN_TOKEN_ENV as TOKEN_ENV  # the variable the daemon reads

__all__ = ["ADMIN_URL_ENV", "CtlError", "add_reload_parser", "cmd_reload", "request_reload"]

ADMIN_URL_ENV = "TICKFLOW_ADMIN_URL"
DEFAULT_ADMIN_URL = "http://127.0.0.1:9108"


class CtlError(TickflowError):
    """The daemon could not be asked, or answered something that is not a verdict."""


def add_reload_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """The ``reload`` subcommand on ``sub`` (the parser's subcommands)."""
    reload = sub.add_parser(
        "reload",
        help="ask the running daemon to reload its config file; exit 1 when it refuses",
    )
    reload.add_argument("--url", default=None,
                        help=f"admin API of the daemon (default ${ADMIN_URL_ENV}, else "
                        f"{DEFAULT_ADMIN_URL})")
    reload.add_argument("--token-file", default=None, metavar="PATH",
                        help=f"file holding the admin token ($VARS expanded; default "
                        f"${TOKEN_ENV})")
    reload.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for the daemon's verdict (default 60)")


def read_token(token_file: str | None, env: Mapping[str, str]) -> str | None:
    if token_file is None:
        return env.get(TOKEN_ENV, "").strip() or None
    expanded = os.path.expandvars(token_file)
    if "$" in expanded:
        # An unset variable stays as written: name it rather than report a missing file.
        raise CtlError(f"--token-file {token_file!r}: unset variable in {expanded!r}")
    path = Path(expanded).expanduser()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CtlError(f"--token-file {str(path)!r}: cannot read: {exc}") from None
    if not token:
        raise CtlError(f"--token-file {str(path)!r} is empty")
    return token


def request_reload(url: str, token: str | None, timeout: float) -> tuple[int, dict[str, Any]]:
    """``POST {url}/reload``: (HTTP status, JSON body). CtlError when there is no verdict."""
    request = urllib.request.Request(url.rstrip("/") + "/reload", data=b"", method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:  # refused, timed out, a malformed URL
        raise CtlError(f"{url}: no answer: {exc}") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CtlError(
            f"{url}: HTTP {status}, not a tickflow admin API: {raw[:200]!r}"
        ) from None
    if not isinstance(body, dict):
        raise CtlError(f"{url}: HTTP {status}, unexpected answer: {body!r}")
    return status, body


def cmd_reload(
    args: argparse.Namespace,
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """0 when the new config took effect, 1 when it was refused or nothing answered."""
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    url = args.url or env.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL
    if not args.timeout > 0:
        print("tickflow reload: --timeout must be > 0", file=err)
        return 2
    try:
        token = read_token(args.token_file, env)
        status, body = request_reload(url, token, args.timeout)
    except CtlError as exc:
        print(f"tickflow reload: {exc}", file=err)
        return 1
    if status == 200 and body.get("outcome") == "success":
        print(
            f"config reloaded: version {body.get('previous_version') or '-'} -> "
            f"{body.get('config_version') or '-'}",
            file=out,
        )
        restart = body.get("restart_required") or []
        if restart:
            print(f"needs a restart to take effect: {', '.join(map(str, restart))}", file=out)
        return 0
    if status == 422:
        print(
            f"tickflow reload: refused ({body.get('outcome', 'invalid')}), the daemon keeps "
            f"config {body.get('config_version') or '-'}: {body.get('error')}",
            file=err,
        )
        return 1
    # 401 wrong token, 403 no token configured, 503 no config file: the daemon's own words.
    print(f"tickflow reload: HTTP {status}: {body.get('error', body)}", file=err)
    return 1
