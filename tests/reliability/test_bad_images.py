"""Every file in the bad-image corpus either decodes to the right RGB array or is refused
with `ImageError` and a reason: never another exception, a hang or a huge allocation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import ImageCase, bomb_png, exif_rotated_jpeg, gradient_rgb, image_case_names, write_image_corpus
from tledge_paths import ROOT

from edge.errors import ImageError
from edge.images import decode_rgb, is_image_name, load_rgb


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ImageCase]:
    return {case.name: case for case in write_image_corpus(tmp_path_factory.mktemp("bad_images"))}


CASE_NAMES = image_case_names()


@pytest.mark.parametrize("name", CASE_NAMES)
def test_load_rgb_decodes_or_refuses_each_file(corpus: dict[str, ImageCase], name: str) -> None:
    case = corpus[name]
    if case.shape is None:
        with pytest.raises(ImageError) as info:
            load_rgb(case.path)
        message = str(info.value)
        assert case.reason in message
        assert os.fspath(case.path) in message  # the user learns which file
    else:
        rgb = load_rgb(case.path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.shape[:2] == case.shape
        assert rgb.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_decode_rgb_from_bytes_agrees_with_load_rgb(corpus: dict[str, ImageCase], name: str) -> None:
    case = corpus[name]
    try:
        data = case.path.read_bytes()
    except OSError:
        pytest.skip("not a readable file (symlink cases): only load_rgb sees a path")
    if case.shape is None:
        with pytest.raises(ImageError):
            decode_rgb(data, name)
    else:
        np.testing.assert_array_equal(decode_rgb(data, name), load_rgb(case.path))


def test_exif_orientation_6_is_applied_to_the_pixels() -> None:
    upright = decode_rgb(exif_rotated_jpeg(orientation=1))  # stored pixels, 20 x 40
    rotated = decode_rgb(exif_rotated_jpeg(orientation=6))
    assert upright.shape[:2] == (20, 40) and rotated.shape[:2] == (40, 20)
    # Orientation 6 = the camera was turned; the viewer rotates 90 degrees clockwise.
    expected = np.rot90(upright, k=-1).astype(int)
    assert np.abs(rotated.astype(int) - expected).mean() < 3.0  # JPEG noise only
    assert np.abs(rotated.astype(int) - np.rot90(upright, k=1).astype(int)).mean() > 20.0


def test_sixteen_bit_png_is_scaled_not_clipped(corpus: dict[str, ImageCase]) -> None:
    gray = load_rgb(corpus["sixteen_bit.png"].path)
    assert gray.min() <= 2 and gray.max() >= 253  # full range kept
    assert len(np.unique(gray)) > 100  # a ramp, not a white or two-level image


def test_transparency_is_composited_on_white(corpus: dict[str, ImageCase]) -> None:
    rgba = load_rgb(corpus["rgba.png"].path)  # alpha 128 everywhere
    opaque = gradient_rgb().astype(int)
    expected = (opaque * 128 + 255 * 127) / 255
    assert np.abs(rgba.astype(int) - expected).max() <= 2


def test_cmyk_jpeg_becomes_plausible_rgb(corpus: dict[str, ImageCase]) -> None:
    rgb = load_rgb(corpus["cmyk.jpg"].path).astype(int)
    reference = load_rgb(corpus["png_named.jpg"].path).astype(int)
    assert np.abs(rgb - reference).mean() < 40  # same picture, not inverted or black


def test_bomb_is_refused_without_allocating_its_pixels(tmp_path: Path) -> None:
    """Peak RSS of a fresh interpreter stays far below the 400 MB a decode would need."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(20000, 20000))
    assert bomb.stat().st_size < 2_000_000  # bytes: cheap on disk
    code = textwrap.dedent(
        f"""
        import resource
        from edge.errors import ImageError
        from edge.images import load_rgb
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_rgb({str(bomb)!r})
        except ImageError as exc:
            print("refused", exc)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("grew_kb", after - before)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "refused" in result.stdout and "limit" in result.stdout
    grew_kb = int(result.stdout.rsplit("grew_kb", 1)[1])
    assert grew_kb < 50_000  # KiB; decoding would take > 400,000


def test_directory_named_like_an_image_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    with pytest.raises(ImageError, match="cannot read"):
        load_rgb(folder)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file regardless of its mode")
    path = tmp_path / "secret.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    path.chmod(0)
    with pytest.raises(ImageError, match="cannot read"):
        load_rgb(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.JPG", True), ("b.jpeg", True), (".hidden.jpg", False), ("notes.txt", False), ("x.jpg.part", False), (os.fsdecode(b"\xff\xfe.png"), True)],
)
def test_is_image_name(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected
