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
    for name in ("cifar10-resnet20", "cifar10-resnet20-s16", "tinyimagenet-mobilenetv2"):
        bundled = target / "tmix_aug" / "pretrained" / name
        assert sorted(p.name for p in bundled.iterdir()) == ["README.md", "config.json", "mixes.png", "model.safetensors"]
    code = (
        "import tmix_aug, torch; "
        "m = tmix_aug.TransformMix.from_pretrained('cifar10-resnet20', num_classes=100); "
        "t = tmix_aug.TransformMix.from_pretrained('tinyimagenet-mobilenetv2', num_classes=100); "
        "print(tmix_aug.__file__); print(m.k, m(torch.rand(4, 3, 32, 32), torch.arange(4))[1].shape, "
        "t(torch.rand(4, 3, 64, 64), torch.arange(4))[0].shape)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.splitlines()
    assert first.startswith(str(target))  # the installed copy, not the source tree
    assert second == "2 torch.Size([4, 100]) torch.Size([4, 3, 64, 64])"


def test_every_package_is_listed_for_the_wheel():
    """pyproject lists the packages (for the pretrained/ mapping): a new subpackage must be added there."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.relative_to(ROOT).parts[:-1]) for p in (ROOT / "tmix_aug").rglob("__init__.py")}
    assert found | {"tmix_aug.pretrained"} == set(config["packages"])
    assert config["package-dir"]["tmix_aug.pretrained"] == "pretrained"


def test_license_and_citation_match_the_project():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    citation = (ROOT / "CITATION.cff").read_text()
    assert "2403.12429" in citation and "license: Apache-2.0" in citation and f"version: {project['version']}" in citation
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert build == ["setuptools>=77"]  # the SPDX license string needs it
