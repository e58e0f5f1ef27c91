"""The edge runtime stays TensorFlow-free, and the CLI degrades cleanly without it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tledge_paths import ROOT

sys.path.insert(0, str(ROOT / "tests" / "edge"))
from edge_models import LABELS, build_keras_model, convert  # noqa: E402


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_import_edge_leaves_tensorflow_unimported() -> None:
    """Every module of edge/ (found on disk, so a new one is covered too) imports without
    TensorFlow, Keras or trainer; edge.cli is imported with trainer blocked (a device
    install), where it must still work."""
    result = run_python(
        """
        import importlib, pkgutil, sys
        sys.modules['trainer'] = None  # a device install: no trainer package
        import edge
        names = sorted(m.name for m in pkgutil.walk_packages(edge.__path__, 'edge.'))
        for name in names:
            importlib.import_module(name)
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))
        print(names, bad)
        expected = {'edge.bench', 'edge.bundle', 'edge.classifier', 'edge.cli', 'edge.collect', 'edge.pipeline', 'edge.sinks', 'edge.sources'}
        live_view = any(n.startswith(('edge.server', 'edge.serve')) for n in names)  # the live view, a module or a package
        sys.exit(1 if bad or not expected <= set(names) or not live_view else 0)
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr


BLOCK_TF = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras'):
            raise ImportError(f'No module named {name!r} (blocked by the test)')
        return None
sys.meta_path.insert(0, Block())
sys.argv = ['tledge'] + ARGS
from edge.cli import main
try:
    main()
except SystemExit as exc:
    sys.exit(exc.code)
"""


def run_cli_without_tf(args: list[str]) -> subprocess.CompletedProcess[str]:
    return run_python(BLOCK_TF.replace("ARGS", repr(args)))


def test_training_commands_without_tensorflow_name_the_extra(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    result = run_cli_without_tf(["train", str(tmp_path)])
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'pip install "tledge[train]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_export_without_tensorflow_names_the_extra(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    result = run_cli_without_tf(["export", str(tmp_path / "run"), "--quantize"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'pip install "tledge[train]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_edge_commands_work_without_tensorflow(tmp_path) -> None:
    """`predict` on a bare .tflite with --labels, in a process where TensorFlow cannot be
    imported. The model is made here (TensorFlow is fine in the test process), so this
    check always runs."""
    from PIL import Image

    result = run_cli_without_tf(["--help"])
    assert result.returncode == 0, result.stderr
    model = tmp_path / "colours.tflite"
    model.write_bytes(convert(build_keras_model(), "uint8"))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    image = tmp_path / "blue.png"
    Image.new("RGB", (40, 40), (20, 30, 230)).save(image)
    result = run_cli_without_tf(["predict", str(model), str(image), "--labels", str(labels), "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["label"] == "blue", result.stdout


def test_train_without_tensorflow_names_the_extra_once_the_data_scans(tmp_path) -> None:
    """With valid data the scan and the image decoding start before the (background)
    TensorFlow import fails: the failure still ends as the install hint."""
    from PIL import Image

    for name, colour in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (40, 40), colour).save(tmp_path / name / f"{i}.png")
    result = run_cli_without_tf(["train", str(tmp_path), "--out", str(tmp_path / "runs"), "--weights", "none"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'pip install "tledge[train]"' in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_cli_leaves_its_objects_to_the_os_at_exit() -> None:
    """main() freezes the collector as the command returns: the interpreter's last
    collections would only walk everything still loaded (TensorFlow's objects after
    `tledge train`) to free memory that exiting frees anyway."""
    result = run_python(
        """
        import atexit, gc, sys
        atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))
        sys.argv = ['tledge', '--help']
        from edge.cli import main
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("frozen at exit: True"), result.stdout[-300:]


def test_tensorflow_imports_without_matplotlib_which_loads_when_drawn() -> None:
    """require_keras() leaves matplotlib unimported (Keras' plotting utilities would pull
    it in), and tledge's own pictures still import and draw it afterwards."""
    result = run_python(
        """
        import sys
        from trainer.deps import require_keras
        keras = require_keras()
        assert not any(m.split('.')[0] == 'matplotlib' for m in sys.modules), 'matplotlib imported with TensorFlow'
        assert not any(type(f).__name__ == '_NoMatplotlib' for f in sys.meta_path), 'the finder stayed'
        keras.layers.Dense(2)  # Keras works
        import tempfile, pathlib
        from trainer.plots import plot_history
        out = pathlib.Path(tempfile.mkdtemp()) / 'curves.png'
        plot_history([{'stage': 'head', 'epoch': 1, 'loss': 1.0, 'accuracy': 0.5, 'val_loss': 1.1, 'val_accuracy': 0.4}], out)
        assert out.stat().st_size > 1000
        print('ok')
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
