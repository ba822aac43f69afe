"""Shared secrets: the one way the daemon reads a bearer token (admin API, network intake).

A token comes from a file named in the config (``${VARS}`` expanded, so systemd's
``${CREDENTIALS_DIRECTORY}`` works; a file readable by group or others is warned about), else
from an environment variable, else there is none. Never from the command line (visible in
``ps``) or the config file itself (often shared). Surrounding whitespace is dropped (a file
usually ends in a newline). An empty file or an empty variable is an error, never "no
authentication": a secret that went missing must not fail open.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from engine.config import AdminSettings
from engine.core.errors import TickflowError

__all__ = ["ADMIN_TOKEN_ENV", "AdminTokenError", "load_admin_token", "read_token"]

log = logging.getLogger("tickflow.auth")

ADMIN_TOKEN_ENV = "TICKFLOW_ADMIN_TOKEN"


class AdminTokenError(TickflowError):
    """``[admin] token_file`` is set but cannot be read: refuse to start rather than run open."""


def read_token(
    section: str,
    token_file: str,
    env_var: str,
    environ: Mapping[str, str] | None,
    error: type[TickflowError],
) -> str | None:
    """The ``[section]`` token: ``token_file`` if set, else ``$env_var``, else None; ``error``
    (the caller's error type) for an unreadable or empty one."""
    env = os.environ if environ is None else environ
    if token_file:
        path = Path(os.path.expandvars(token_file)).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise error(f"cannot read [{section}] token_file {str(path)!r}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "token file is readable by group or others; chmod 600 it",
                extra={"section": section, "token_file": str(path)},
            )
        token = text.strip()
        if not token:
            raise error(f"[{section}] token_file {str(path)!r} is empty")
        return token
    value = env.get(env_var)
    if value is None:
        return None
    token = value.strip()
    if not token:
        raise error(f"${env_var} is set but empty")
    return token


def load_admin_token(settings: AdminSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The admin token: ``[admin] token_file``, else ``$TICKFLOW_ADMIN_TOKEN``, else None (the
    changing endpoints are then off)."""
    return read_token("admin", settings.token_file, ADMIN_TOKEN_ENV, env, AdminTokenError)
