from __future__ import annotations

from pathlib import Path

from layerbench.driver import LayerFormat
from layerbench.images.image import FileSpec, apply_layer, synthetic_image


def test_synthetic_image_is_seeded_and_exact() -> None:
    a = synthetic_image(layers=5, files=1000, total_bytes=100_000_000, seed=1)
    b = synthetic_image(layers=5, files=1000, total_bytes=100_000_000, seed=1)
    c = synthetic_image(layers=5, files=1000, total_bytes=100_000_000, seed=2)
    assert a == b and a != c
    assert a.total_bytes == 100_000_000 and a.total_files == 1000
    assert all(len(layer.files) >= 1 for layer in a.layers)
    sizes = sorted((f.size for layer in a.layers for f in layer.files), reverse=True)
    assert sum(sizes[:50]) > 0.5 * a.total_bytes  # a few large files hold most bytes


def test_every_layer_gets_a_file_even_when_deep() -> None:
    image = synthetic_image(layers=128, files=256, total_bytes=1 << 20, seed=3)
    assert len(image.layers) == 128 and all(layer.files for layer in image.layers)
    single = synthetic_image(layers=1, files=256, total_bytes=1 << 20)
    assert single.total_files == 256


def test_apply_layer_writes_the_same_bytes_every_time(tmp_path: Path) -> None:
    spec = (FileSpec("x/y.bin", 5000, seed=9),)
    apply_layer(tmp_path / "a", spec, LayerFormat.DIFF)
    apply_layer(tmp_path / "b", spec, LayerFormat.DIFF)
    assert (tmp_path / "a/x/y.bin").read_bytes() == (tmp_path / "b/x/y.bin").read_bytes()
    assert (tmp_path / "a/x/y.bin").stat().st_size == 5000
