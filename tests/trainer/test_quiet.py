"""Training commands show only tledge's own output: TensorFlow's and the converter's
native prints to fd 2 are hidden unless --verbose, and real failures keep their context."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tledge_paths import ROOT
from train_helpers import colour_dataset

#: What TensorFlow, its converter and the LiteRT interpreter print from C++ (none of it tledge's).
NOISE = re.compile(
    r"cuInit|CUDA|oneDNN|cudart|absl|fully_quantize|inference_type|XNNPACK|TF_CPP|"
    r"^[IWEF]\d{4} |^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |tensorflow/",
    re.MULTILINE,
)


def _python(code: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user starts it
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


MECHANISM = """
    import os, sys
    from edge.errors import TledgeError
    from trainer.quiet import native_stderr_hidden
    mode = sys.argv[1]
    try:
        with native_stderr_hidden():
            os.write(2, b"native noise\\n")
            print("tledge message", file=sys.stderr, flush=True)
            if mode == "crash":
                raise RuntimeError("unexpected")
            if mode == "tledge-error":
                raise TledgeError("a remedy")
    except Exception as exc:
        print(f"raised {type(exc).__name__}", file=sys.stderr, flush=True)
    os.write(2, b"after\\n")
"""


def _mechanism(mode: str, verbose: str = "0") -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MECHANISM), mode], cwd=ROOT, env={**os.environ, "TLEDGE_VERBOSE": verbose},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_native_output_is_hidden_while_python_output_still_shows() -> None:
    assert _mechanism("ok") == "tledge message\nafter\n"
    assert _mechanism("ok", verbose="1") == "native noise\ntledge message\nafter\n"


def test_an_unexpected_failure_replays_the_hidden_output_but_a_tledge_error_does_not() -> None:
    assert _mechanism("crash") == "tledge message\nnative noise\nraised RuntimeError\nafter\n"
    assert _mechanism("tledge-error") == "tledge message\nraised TledgeError\nafter\n"


def test_train_and_int8_export_print_only_tledge_output(tmp_path: Path) -> None:
    """One process (TensorFlow imported once): a tiny train, then an int8 export, whose
    converter and interpreter print from C++ when not silenced."""
    data = colour_dataset(tmp_path / "data", {"a": 6, "b": 6})
    code = f"""
        from pathlib import Path
        from edge.cli import app
        out = Path({str(tmp_path)!r})
        app(["train", str(out / "data"), "--out", str(out / "runs"), "--weights", "none", "--alpha", "0.35", "--image-size", "32",
             "--epochs", "1", "--augment-views", "0", "--quiet"], standalone_mode=False)
        run = next((out / "runs").iterdir())
        app(["export", str(run), "--quantize", "--accept-drop", "--out", str(out / "bundle")], standalone_mode=False)
    """
    result = _python(code, env={"TLEDGE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "bundle" / "model.tflite").is_file() and data.is_dir()
    assert "converting to int8" in result.stderr and "bundle written to" in result.stderr  # tledge's own lines
    assert not NOISE.findall(result.stderr), result.stderr
