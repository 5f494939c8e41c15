"""Pictures: the panel layout of mix_panels and the PNG written by save_mix_grid."""
import torch
from conftest import blob_batch
from PIL import Image

from tmix_aug import TransformMix
from tmix_aug.viz import heatmap, mix_panels, save_mix_grid


def test_panels_show_inputs_saliency_moved_masks_and_mix():
    x, y = blob_batch(n=5, size=16)
    out = TransformMix(5, k=3).mix(x, y, generator=torch.Generator().manual_seed(0))
    panels, titles = mix_panels(out, x, num_samples=2)
    assert titles == ["input 1", "input 2", "input 3", "saliency 1", "saliency 2", "saliency 3",
                      "moved 1", "moved 2", "moved 3", "mask 1", "mask 2", "mask 3", "mixed"]  # fmt: skip
    assert panels.shape == (2 * 13, 3, 16, 16)
    assert panels.min() >= 0 and panels.max() <= 1
    row = panels[13:26]  # second sample
    torch.testing.assert_close(row[0], x[1].clamp(0, 1))  # input 1 is the sample itself
    torch.testing.assert_close(row[1], x[out.index[1, 1]].clamp(0, 1))
    torch.testing.assert_close(row[9], out.masks[1, 0, None].expand(3, -1, -1))
    torch.testing.assert_close(row[12], out.images[1].clamp(0, 1))


def test_save_mix_grid_writes_a_png(tmp_path):
    x, y = blob_batch(n=4, size=16)
    out = TransformMix(5).mix(x, y)
    path = save_mix_grid(tmp_path / "pics" / "mix.png", out, x, mean=(0.5,) * 3, std=(0.2,) * 3, num_samples=3, scale=2)
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (9 * (32 + 2) + 2, 3 * (32 + 2) + 2 + 14)
    assert sorted(p.name for p in path.parent.iterdir()) == ["mix.png"]


def test_heatmap_runs_black_to_white():
    colours = heatmap(torch.tensor([[[0.0, 1.0]]]))
    assert colours.shape == (1, 3, 1, 2)
    assert colours[0, :, 0, 0].tolist() == [0, 0, 0] and colours[0, :, 0, 1].tolist() == [1, 1, 1]
