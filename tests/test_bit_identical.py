"""The bundled mixer and the baselines mix exactly as they did before the functional/registry refactor.

``tests/data/mixes_reference.safetensors`` was written by ``make_reference()`` below with the
code of commit 80c1b0d (before ``tmix_aug.functional`` and the mixer registry existed), on the
project's 2-core CPU machine, torch 2.x, by running ``OMP_NUM_THREADS=1 python tests/test_bit_identical.py``.
Do not regenerate it to make this test pass: a difference means the refactor changed the mixes.
Its metadata records torch's version and CPU capability; on another CPU kernel path (e.g.
AVX-512 against AVX2) convolution results may differ in the last bits, so there the images
are compared to 1e-6 instead of bit for bit.
"""
from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import load_file, safe_open, save_file

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TinyClassifier, blob_batch  # noqa: E402

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "mixes_reference.safetensors")
FIELDS = ("images", "targets", "masks", "thetas", "lam", "index", "saliency")


def cases() -> dict:
    """Name -> a mixer, built the same way before and after the refactor."""
    from tmix_aug.baselines import CutMix, Mixup, MixupCutMix, ResizeMix, SaliencyMix
    from tmix_aug.mixer import TransformMix

    torch.manual_seed(0)
    cam_model = TinyClassifier(num_classes=5).eval()
    return {
        "cifar10-resnet20-spectral": TransformMix.from_pretrained("cifar10-resnet20", num_classes=5),
        "cifar10-resnet20-cam-prob": TransformMix.from_pretrained(
            "cifar10-resnet20", num_classes=5, saliency=cam_model, prob=0.5, label_smoothing=0.1
        ),
        "mixup-k3": Mixup(5, k=3),
        "cutmix": CutMix(5),
        "mixup-cutmix-elem": MixupCutMix(5, mode="elem"),
        "resizemix": ResizeMix(5),
        "saliencymix": SaliencyMix(5),
    }


def mixes() -> dict[str, torch.Tensor]:
    x, y = blob_batch(n=4, size=16, num_classes=5, seed=3)
    out = {}
    for name, mixer in cases().items():
        result = mixer.mix(x, y, generator=torch.Generator().manual_seed(11))
        out.update({f"{name}/{field}": getattr(result, field).contiguous() for field in FIELDS})
    return out


def environment() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def make_reference() -> None:
    save_file(mixes(), REFERENCE, metadata=environment())


def test_mixes_are_bit_identical_to_the_reference():
    reference = load_file(REFERENCE)
    with safe_open(REFERENCE, "pt") as file:
        same_kernels = file.metadata() == environment()
    now = mixes()
    assert sorted(now) == sorted(reference)
    for key, expected in reference.items():
        if same_kernels or expected.dtype == torch.int64 or key.endswith("/lam"):
            assert torch.equal(now[key], expected), key
        else:
            torch.testing.assert_close(now[key], expected, rtol=0, atol=1e-6, msg=key)


if __name__ == "__main__":
    make_reference()
    print(f"wrote {REFERENCE}: {environment()}")
