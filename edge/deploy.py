"""`tledge deploy BUNDLE DEST`: copy a bundle so that a watching device sees it whole or not at all.

The bundle is checked first (checksums of the model and the self-test against its
manifest), so a damaged bundle is never shipped. Then it is copied into a hidden staging
folder beside the target (``.NAME.deploy-XXXX``, same filesystem, ignored by
`run --watch`), and renamed into place:

    local DEST          copy each file (fsync'ed), then os.replace; an existing bundle
                        of the same name is moved aside first and deleted after
    user@host:DEST      ssh mkdir (staging) -> rsync (or scp -r) -> ssh mv into place

If anything fails the staging folder is removed (on a remote host, best effort) and the
target is left as it was: the old bundle, or nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.atomic import fsync_dir
from edge.bundle import load_model_info
from edge.errors import DeployError, TledgeError
from edge.selftest import has_selftest, load_selftest

Log = Callable[[str], None]

#: user@host:path or host:path (scp's syntax). A Windows drive (C:\...) or a path with a
#: slash before the colon is local.
_REMOTE = re.compile(r"^(?P<host>(?:[^@/:\s]+@)?(?:\[[0-9A-Fa-f:.]+\]|[^@/:\s\[\]]+)):(?P<path>.*)$")


@dataclass(frozen=True)
class DeployOptions:
    """Where and how to copy."""

    name: str | None = None  # folder name at the destination (default: the bundle's)
    port: int | None = None  # SSH port
    connect_timeout_s: int = 10
    tool: str | None = None  # "rsync" or "scp"; default: rsync when installed, else scp


@dataclass(frozen=True)
class RemoteDest:
    host: str  # [user@]host
    folder: str  # the folder on the host that receives the bundle


def parse_dest(dest: str) -> RemoteDest | None:
    """A `user@host:path` destination, or None for a local path."""
    if len(dest) >= 2 and dest[1] == ":" and dest[0].isalpha():  # C:\models
        return None
    match = _REMOTE.match(dest)
    if not match:
        return None
    return RemoteDest(match["host"], match["path"] or ".")


def check_bundle(bundle: Path) -> None:
    """Refuse to ship a bundle that does not match its own manifest."""
    info = load_model_info(bundle)
    if not info.is_tledge_bundle:
        raise DeployError(f"{bundle} is not a tledge bundle (no manifest.json); deploy the folder `tledge export` wrote")
    if has_selftest(info):
        load_selftest(info)


def _name(bundle: Path, options: DeployOptions) -> str:
    name = options.name or bundle.resolve().name
    if not name or name != Path(name).name or name.startswith(".") or name in ("..", "."):
        raise DeployError(f"--name {name!r} must be a plain folder name, not hidden, without slashes")
    return name


def deploy_bundle(bundle: str | os.PathLike[str], dest: str, options: DeployOptions = DeployOptions(), log: Log | None = None) -> str:
    """Copy `bundle` into DEST/<name>; return where it went. Raises `DeployError`."""
    log = log or (lambda line: None)
    bundle = Path(bundle)
    try:
        check_bundle(bundle)
    except DeployError:
        raise
    except TledgeError as exc:
        raise DeployError(f"not deploying {bundle}: {exc}") from None
    name = _name(bundle, options)
    remote = parse_dest(dest)
    if remote is None:
        return str(deploy_local(bundle, Path(dest), name, log))
    return deploy_remote(bundle, remote, name, options, log)


# -- local ---------------------------------------------------------------------------
def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())
    shutil.copystat(src, dst)


def deploy_local(bundle: Path, dest: Path, name: str, log: Log) -> Path:
    """Stage beside DEST/<name>, then rename in; the old bundle (if any) is replaced."""
    target = dest / name
    staging = dest / f".{name}.deploy-{secrets.token_hex(4)}"
    aside = dest / f".{name}.old-{secrets.token_hex(4)}"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for entry in sorted(bundle.iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                _copy_file(entry, staging / entry.name)
        fsync_dir(staging)
        log(f"copied {bundle} to {staging}")
        if os.path.lexists(target):
            os.replace(target, aside)  # a folder cannot be replaced by a rename while it has files
        os.replace(staging, target)
        fsync_dir(dest)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.lexists(aside) and not os.path.lexists(target):
            os.replace(aside, target)  # put the old bundle back
        raise DeployError(f"Cannot deploy to {target}: {exc.strerror or exc}; check the path, free space and permissions") from None
    shutil.rmtree(aside, ignore_errors=True)
    return target


# -- remote --------------------------------------------------------------------------
def ssh_base(options: DeployOptions) -> list[str]:
    """ssh with no password prompt (a deploy is unattended) and a bounded connect time."""
    command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={options.connect_timeout_s}"]
    if options.port:
        command += ["-p", str(options.port)]
    return command


def remote_paths(remote: RemoteDest, name: str, token: str) -> tuple[str, str, str]:
    """(target, staging, aside) paths on the host."""
    folder = remote.folder.rstrip("/") or "/"
    join = (lambda leaf: f"{folder}/{leaf}") if folder != "/" else (lambda leaf: f"/{leaf}")
    return join(name), join(f".{name}.deploy-{token}"), join(f".{name}.old-{token}")


def plan_remote(bundle: Path, remote: RemoteDest, name: str, options: DeployOptions, token: str) -> list[list[str]]:
    """The commands a remote deploy runs, in order (pure: for tests and --dry-run)."""
    target, staging, aside = remote_paths(remote, name, token)
    q = shlex.quote
    ssh = [*ssh_base(options), remote.host]
    tool = options.tool or ("rsync" if shutil.which("rsync") else "scp")
    if tool == "rsync":
        transport = " ".join(q(part) for part in ssh_base(options))
        copy = ["rsync", "-a", "--exclude", ".*", "-e", transport, f"{bundle.resolve()}/", f"{remote.host}:{staging}/"]
    else:
        copy = ["scp", "-q", "-B", "-o", f"ConnectTimeout={options.connect_timeout_s}"] + (["-P", str(options.port)] if options.port else [])
        copy += [str(path) for path in sorted(bundle.resolve().iterdir()) if path.is_file() and not path.name.startswith(".")]
        copy += [f"{remote.host}:{staging}/"]
    swap = (
        f"set -e; if [ -e {q(target)} ]; then mv {q(target)} {q(aside)}; fi; "
        f"mv {q(staging)} {q(target)}; rm -rf {q(aside)}"
    )
    return [
        [*ssh, f"mkdir -p {q(remote.folder or '.')} && mkdir {q(staging)}"],
        copy,
        [*ssh, swap],
    ]


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise DeployError(f"{command[0]} is not installed; install the OpenSSH client (apt-get install openssh-client) or rsync") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"{what} took more than an hour; check the connection") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise DeployError(f"{what} failed (exit {result.returncode}): {detail[-1] if detail else 'no message'}")


def deploy_remote(bundle: Path, remote: RemoteDest, name: str, options: DeployOptions, log: Log) -> str:
    """Run `plan_remote`; on failure after the staging folder exists, remove it."""
    token = secrets.token_hex(4)
    make, copy, swap = plan_remote(bundle, remote, name, options, token)
    target, staging, _ = remote_paths(remote, name, token)
    try:
        _run(make, f"connecting to {remote.host}")
    except DeployError as exc:
        raise DeployError(
            f"{exc}. Nothing was written. Check the host name, that it is on and runs sshd, and that key-based login works "
            f"(ssh {remote.host} true)"
        ) from None
    try:
        log(f"copying to {remote.host}:{staging} with {copy[0]}")
        _run(copy, f"copying to {remote.host}")
        _run(swap, f"renaming into {remote.host}:{target}")
    except DeployError as exc:
        cleanup = [*ssh_base(options), remote.host, f"rm -rf {shlex.quote(staging)}"]
        try:
            subprocess.run(cleanup, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        raise DeployError(f"{exc}; the staging folder {staging} was removed and {target} left as it was") from None
    return f"{remote.host}:{target}"
