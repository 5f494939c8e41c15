"""The bundled mixers ship with the package: a non-editable install loads them from anywhere."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_non_editable_install_ships_the_bundled_mixers(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    bundled = target / "tmix_aug" / "pretrained" / "cifar10-resnet20"
    assert sorted(p.name for p in bundled.iterdir() if p.suffix != ".png") == ["README.md", "config.json", "model.safetensors"]
    code = (
        "import tmix_aug, torch; "
        "m = tmix_aug.TransformMix.from_pretrained('cifar10-resnet20', num_classes=100); "
        "print(tmix_aug.__file__); print(m.k, m(torch.rand(4, 3, 32, 32), torch.arange(4))[1].shape)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.splitlines()
    assert first.startswith(str(target))  # the installed copy, not the source tree
    assert second == "2 torch.Size([4, 100])"
