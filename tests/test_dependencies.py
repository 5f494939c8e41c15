"""The dependency floors in pyproject.toml: met by this environment, and high enough for what the code uses."""
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# What the code takes from timm, and the first timm release that has it (checked against the
# released wheels of 1.0.25 to 1.0.31).
TIMM_NEEDS = {
    "timm.layers.resolve_self_attn_mask": "1.0.26",  # transmix.py
    "timm.utils.load_checkpoint_metadata": "1.0.31",  # train/checkpoints.py: reading --resume
    "timm.utils.CheckpointSaver.load_state_dict_from_checkpoint": "1.0.31",  # train/runner.py: resumed checkpoint history
}


def declared() -> dict[str, Requirement]:
    text = PYPROJECT.read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    requirements = [Requirement(line) for line in re.findall(r'"([^"]+)"', block)]
    return {requirement.name: requirement for requirement in requirements}


@pytest.mark.parametrize("name", sorted(declared()))
def test_the_installed_version_meets_the_declared_floor(name):
    requirement = declared()[name]
    installed = metadata.version(name)
    assert requirement.specifier.contains(installed, prereleases=True), f"{name} {installed} does not meet {requirement}"


def floor(requirement: Requirement) -> Version:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
    assert floors, f"{requirement}: no lower bound"
    return max(floors)


@pytest.mark.parametrize("name, since", sorted(TIMM_NEEDS.items()))
def test_the_timm_floor_covers_what_the_code_uses(name, since):
    module, *attributes = name.split(".")
    value = __import__(module)
    for attribute in attributes:  # the name exists in the installed timm: the table is not stale
        value = getattr(value, attribute)
    assert floor(declared()["timm"]) >= Version(since), f"{name} needs timm >= {since}"


def test_the_code_uses_what_the_table_lists():
    source = "\n".join(path.read_text() for path in (PYPROJECT.parent / "tmix_aug").rglob("*.py"))
    for name in TIMM_NEEDS:
        assert name.split(".")[-1] in source, f"{name} is no longer used: drop it from TIMM_NEEDS"
