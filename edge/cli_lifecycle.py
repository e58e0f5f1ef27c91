"""Model-lifecycle commands: `doctor` and `deploy`, and the self-test `run` / `predict`
do at start. Registered by `edge.cli.register`; never imports TensorFlow or trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer


def self_test_at_start(classifier: Any) -> None:
    """Run the bundle's self-test on the interpreter that will serve; refuse on failure
    (raises `SelfTestError` with the doctor's message). Says so on stderr either way."""
    from edge.selftest import no_selftest_note, verify_classifier

    report = verify_classifier(classifier, classifier.info)
    if report is None:
        typer.echo(f"tledge: note: {no_selftest_note(classifier.info)}", err=True)
    else:
        typer.echo(f"tledge: self-test: {report.summary()}", err=True)


def doctor(
    bundle: Optional[Path] = typer.Argument(None, exists=True, help="A bundle folder, its manifest.json, or a .tflite (with --labels)."),
    labels: Optional[Path] = typer.Option(None, "--labels", exists=True, dir_okay=False, help="Labels file for a .tflite without embedded labels."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Also check that this camera / stream / file opens and delivers frames."),
    seconds: float = typer.Option(3.0, "--seconds", min=0.1, max=60.0, help="How long --source frames are counted."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=64, help="Interpreter threads to check with (default: CPU cores, at most 4)."),
    delegate: Optional[str] = typer.Option(None, "--delegate", help="Delegate library to check, e.g. libedgetpu.so.1."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout instead of the text report."),
) -> None:
    """Check this device: Python, interpreter, XNNPACK, threads, delegate, the bundle's checksums
    and self-test, a source. Exit code 0 only when every check passed."""
    from edge.doctor import DoctorOptions, diagnose

    report = diagnose(DoctorOptions(bundle=bundle, labels=labels, threads=threads, delegate=delegate, source=source, source_seconds=seconds))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        for line in report.lines():
            typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


def deploy(
    bundle: Path = typer.Argument(..., exists=True, file_okay=False, help="The bundle folder to copy."),
    dest: str = typer.Argument(..., help="A local folder, or user@host:folder (over SSH). The bundle lands in DEST/<bundle name> (or --name)."),
    name: Optional[str] = typer.Option(None, "--name", help="Folder name at the destination (default: the bundle folder's name)."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="SSH port of a remote destination."),
    timeout: int = typer.Option(10, "--connect-timeout", min=1, help="Seconds to wait for an SSH connection."),
) -> None:
    """Copy a bundle to a device (or a local folder) so that a `run --watch` there sees it only
    when complete: into a hidden staging name, then one rename."""
    from edge.deploy import DeployOptions, deploy_bundle

    target = deploy_bundle(bundle, dest, DeployOptions(name=name, port=port, connect_timeout_s=timeout),
                           log=lambda line: typer.echo(f"tledge: {line}", err=True))
    typer.echo(f"tledge: deployed {bundle} to {target}", err=True)


def register(app: typer.Typer, wrap: Any) -> None:
    """Add `doctor` and `deploy` to `app`."""
    app.command()(wrap(doctor))
    app.command()(wrap(deploy))


__all__ = ["deploy", "doctor", "register", "self_test_at_start"]
