"""The training extra's lazy imports (trainer.deps): the module, the install hint, or the
failure itself; and mistakes reported before the import. Each case runs in a fresh
interpreter (this one has TensorFlow imported already)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tledge_paths import ROOT

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras'):
            raise {error}(f'{{name}} blocked by the test')
        return None
sys.meta_path.insert(0, Block())
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env_code = "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", env_code], cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_require_keras_imports_tensorflow_and_keras_quietly() -> None:
    result = run_python(
        """
        import sys
        from trainer.deps import require_keras, require_tensorflow
        assert 'tensorflow' not in sys.modules
        tf = require_tensorflow('tledge train')
        keras = require_keras('tledge train')
        assert tf is sys.modules['tensorflow'] and keras.layers.Dense(2) is not None
        print('ok')
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


@pytest.mark.parametrize(
    ("error", "caught", "expected"),
    [
        # an ImportError is the install hint
        ("ImportError", "MissingExtraError", ("tledge train needs the 'train' extra", 'pip install "tledge[train]"')),
        # another failure of the import is raised as itself
        ("RuntimeError", "RuntimeError", ("raised: tensorflow blocked by the test",)),
    ],
)
def test_a_failed_import_is_the_install_hint_or_itself(error: str, caught: str, expected: tuple[str, ...]) -> None:
    result = run_python(
        BLOCK.format(error=error)
        + f"""
from edge.errors import MissingExtraError
from trainer.deps import require_tensorflow
try:
    require_tensorflow('tledge train')
except {caught} as exc:
    print('raised:', exc)
"""
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(text in result.stdout for text in expected), result.stdout


def test_a_data_mistake_is_reported_without_importing_tensorflow(tmp_path) -> None:
    """`train` checks that the extra is installed by finding it, not importing it: a
    mistyped data folder is an instant message, not one after TensorFlow's import."""
    result = run_python(
        f"""
        import sys
        from pathlib import Path
        from edge.errors import TledgeError
        from trainer.config import DataOptions, TrainOptions
        from trainer.train import train
        try:
            train(TrainOptions(data=DataOptions(Path({str(tmp_path / "no-such-folder")!r}))))
        except TledgeError as exc:
            print(type(exc).__name__, 'tensorflow' in sys.modules)
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["DataError", "False"], result.stdout + result.stderr


def test_a_missing_extra_is_named_before_a_data_mistake(tmp_path) -> None:
    result = run_python(
        BLOCK.format(error="ImportError")
        + f"""
from pathlib import Path
from edge.errors import MissingExtraError
from trainer.config import DataOptions, TrainOptions
from trainer.train import train
try:
    train(TrainOptions(data=DataOptions(Path({str(tmp_path / "no-such-folder")!r}))))
except MissingExtraError as exc:
    print(exc)
"""
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'pip install "tledge[train]"' in result.stdout
