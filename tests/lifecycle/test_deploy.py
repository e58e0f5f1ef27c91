"""`tledge deploy`: staged copy + rename, locally for real; remote command construction
and the unreachable-host error (nothing half-written)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.deploy import DeployOptions, RemoteDest, parse_dest, plan_remote
from lifecycle_models import copy_bundle, tamper_model
from edge.cli import app

runner = CliRunner()


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def test_local_deploy_into_a_new_folder(bundles: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["deploy", str(bundles["uint8"]), str(tmp_path / "device" / "models")])
    assert result.exit_code == 0, result.output
    target = tmp_path / "device" / "models" / "uint8"
    assert _same_files(bundles["uint8"], target)
    assert [p.name for p in target.parent.iterdir()] == ["uint8"]  # no staging folder left


def test_local_deploy_replaces_a_bundle_of_the_same_name(bundles: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert runner.invoke(app, ["deploy", str(bundles["uint8"]), str(models), "--name", "current-model"]).exit_code == 0
    result = runner.invoke(app, ["deploy", str(bundles["float32"]), str(models), "--name", "current-model"])
    assert result.exit_code == 0, result.output
    assert _same_files(bundles["float32"], models / "current-model")
    assert [p.name for p in models.iterdir()] == ["current-model"]


def test_damaged_bundle_is_not_deployed(bundles: dict[str, Path], tmp_path: Path) -> None:
    bad = copy_bundle(bundles["uint8"], tmp_path / "bad")
    tamper_model(bad)
    result = runner.invoke(app, ["deploy", str(bad), str(tmp_path / "models")])
    assert result.exit_code == 1
    assert "not deploying" in result.stderr and "does not match its manifest" in result.stderr
    assert not (tmp_path / "models").exists()


def test_hidden_name_is_a_usage_error(bundles: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["deploy", str(bundles["uint8"]), str(tmp_path), "--name", ".sneaky"])
    assert result.exit_code == 1 and "plain folder name" in result.stderr


@pytest.mark.parametrize(
    "dest, expected",
    [
        ("pi@camera.local:/opt/models", RemoteDest("pi@camera.local", "/opt/models")),
        ("camera:models", RemoteDest("camera", "models")),
        ("pi@[fe80::1]:/m", RemoteDest("pi@[fe80::1]", "/m")),
        ("pi@cam:", RemoteDest("pi@cam", ".")),
        ("/local/path:with-colon", None),
        ("models/", None),
        ("C:\\models", None),
    ],
)
def test_parse_dest(dest: str, expected: RemoteDest | None) -> None:
    assert parse_dest(dest) == expected


@pytest.mark.parametrize("tool", ["rsync", "scp"])
def test_remote_plan_stages_then_renames(bundles: dict[str, Path], tool: str) -> None:
    remote = RemoteDest("pi@cam", "/opt/my models")
    make, copy, swap = plan_remote(bundles["uint8"], remote, "v2", DeployOptions(port=2222, tool=tool, connect_timeout_s=5), "abcd")
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", "2222", "pi@cam"]
    assert make == [*ssh, "mkdir -p '/opt/my models' && mkdir '/opt/my models/.v2.deploy-abcd'"]
    assert copy[0] == tool and copy[-1] == "pi@cam:/opt/my models/.v2.deploy-abcd/"
    if tool == "rsync":
        assert copy[copy.index("-e") + 1] == "ssh -o BatchMode=yes -o ConnectTimeout=5 -p 2222"
    else:
        assert copy[copy.index("-P") + 1] == "2222" and str(bundles["uint8"].resolve() / "model.tflite") in copy
    assert swap[:-1] == ssh
    assert swap[-1] == (
        "set -e; if [ -e '/opt/my models/v2' ]; then mv '/opt/my models/v2' '/opt/my models/.v2.old-abcd'; fi; "
        "mv '/opt/my models/.v2.deploy-abcd' '/opt/my models/v2'; rm -rf '/opt/my models/.v2.old-abcd'"
    )


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client (ssh) is not installed")
def test_unreachable_host_is_a_clear_error_and_nothing_is_written(bundles: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "remote-models"
    # port 1 on loopback: nothing listens there, so the connection is refused at once
    result = runner.invoke(app, ["deploy", str(bundles["uint8"]), f"nobody@127.0.0.1:{target}", "--port", "1", "--connect-timeout", "5"])
    assert result.exit_code == 1
    assert "connecting to nobody@127.0.0.1 failed" in result.stderr
    assert "Nothing was written" in result.stderr and "Traceback" not in result.output
    assert not target.exists()
