"""The built-in synthetic dataset: deterministic, balanced, disjoint splits, errors."""
import pytest
import torch
from PIL import Image

from tmix_aug.synthetic import SHAPES, SyntheticObjects, render_object


def test_samples_are_deterministic_and_balanced():
    a, b = SyntheticObjects(16, image_size=24), SyntheticObjects(16, image_size=24)
    image, label = a[3]
    assert isinstance(image, Image.Image) and image.size == (24, 24) and label == 3
    assert torch.equal(a.render(5)[0], b.render(5)[0])
    assert [a[i][1] for i in range(16)] == [i % 8 for i in range(16)]


def test_splits_and_seeds_differ():
    train, val = SyntheticObjects(4, split="train"), SyntheticObjects(4, split="val")
    assert not torch.equal(train.render(0)[0], val.render(0)[0])
    assert not torch.equal(train.render(0)[0], SyntheticObjects(4, seed=1).render(0)[0])


def test_the_object_is_where_its_mask_is_and_differs_from_the_background():
    image, mask = render_object("square", 32, torch.Generator().manual_seed(0))
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
    assert 0.05 < mask.mean() < 0.6
    inside, outside = image[:, mask > 0.99].mean(1), image[:, mask < 0.01].mean(1)
    assert (inside - outside).abs().max() > 0.1


def test_every_shape_renders():
    for shape in SHAPES:
        _, mask = render_object(shape, 16, torch.Generator().manual_seed(1))
        assert mask.sum() > 4, shape


@pytest.mark.parametrize("kwargs, words", [({"num_classes": 9}, "num_classes"), ({"split": "dev"}, "split"), ({"image_size": 4}, "image_size")])
def test_bad_arguments_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SyntheticObjects(4, **kwargs)
