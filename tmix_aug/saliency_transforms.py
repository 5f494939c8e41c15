"""Cached saliency maps that follow their image through the training augmentation.

- ``SaliencyMap``: a torchvision ``tv_tensors`` type for a continuous map. torchvision v2
  transforms move it with the image (crop, resize, flip, pad, affine, rotate, perspective,
  elastic), always with bilinear interpolation, and leave it alone in photometric steps
  (colour, blur, normalisation, erasing). A ``tv_tensors.Mask`` would be resized with nearest
  neighbours, which makes a blocky map out of an upsampled one.
- ``JointTransform``: the same for a torchvision v1 pipeline such as timm's
  ``create_transform``: each geometric step is run on the image, then replayed on the map from
  the same random state, so both get the same crop and flip.
- ``SaliencyDataset``: ``(image, map, label)`` items: the stored map is resized to the image's
  unaugmented size (bilinear), then both go through the transform together. The default
  collate stacks the maps to (N, h, w) for ``mixer(x, y, saliency=maps)``.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import transforms as timm_transforms
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as v1
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .saliency_cache import SaliencyCache

BILINEAR = TF.InterpolationMode.BILINEAR


class SaliencyMap(tv_tensors.TVTensor):
    """A (1, H, W) float saliency map in the pixel grid of its image (torchvision v2 type)."""

    @classmethod
    def _wrap(cls, tensor: Tensor) -> "SaliencyMap":
        return tensor.as_subclass(cls)

    def __new__(cls, data: Any) -> "SaliencyMap":
        tensor = torch.as_tensor(data, dtype=torch.float32)
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 3 or tensor.shape[0] != 1:
            raise ValueError(f"SaliencyMap: expected a (H, W) or (1, H, W) map, got shape {tuple(tensor.shape)}")
        return cls._wrap(tensor)


def _follow(image_kernel: Callable, bilinear: bool) -> Callable:
    """A SaliencyMap kernel that runs ``image_kernel`` on the plain tensor, bilinear where it resamples."""

    def kernel(saliency_map: SaliencyMap, *args: Any, **kwargs: Any) -> SaliencyMap:
        if bilinear:
            kwargs["interpolation"] = BILINEAR
        out = image_kernel(saliency_map.as_subclass(Tensor), *args, **kwargs)
        return tv_tensors.wrap(out, like=saliency_map)

    return kernel


for _functional, _image_kernel, _resamples in (
    (TF.resize, TF.resize_image, True),
    (TF.resized_crop, TF.resized_crop_image, True),
    (TF.affine, TF.affine_image, True),
    (TF.rotate, TF.rotate_image, True),
    (TF.perspective, TF.perspective_image, True),
    (TF.elastic, TF.elastic_image, True),
    (TF.crop, TF.crop_image, False),
    (TF.center_crop, TF.center_crop_image, False),
    (TF.pad, TF.pad_image, False),
    (TF.horizontal_flip, TF.horizontal_flip_image, False),
    (TF.vertical_flip, TF.vertical_flip_image, False),
):
    TF.register_kernel(_functional, SaliencyMap)(_follow(_image_kernel, _resamples))


GEOMETRIC_V1: tuple[type, ...] = (
    timm_transforms.RandomResizedCropAndInterpolation,
    timm_transforms.ResizeKeepRatio,
    timm_transforms.CenterCropOrPad,
    timm_transforms.RandomCropOrPad,
    v1.RandomResizedCrop,
    v1.RandomHorizontalFlip,
    v1.RandomVerticalFlip,
    v1.Resize,
    v1.CenterCrop,
    v1.RandomCrop,
    v1.Pad,
    v1.RandomAffine,
    v1.RandomRotation,
    v1.RandomPerspective,
)
"""Torchvision v1 / timm transforms that move pixels: replayed on the map."""

IMAGE_ONLY_V1: tuple[type, ...] = (
    timm_transforms.MaybeToTensor,
    timm_transforms.MaybePILToTensor,
    timm_transforms.ToNumpy,
    timm_transforms.ToTensor,
    v1.ToTensor,
    v1.PILToTensor,
    v1.ConvertImageDtype,
    v1.Normalize,
    v1.ColorJitter,
    v1.Grayscale,
    v1.RandomGrayscale,
    v1.GaussianBlur,
    v1.RandomErasing,
    v1.RandomInvert,
    v1.RandomPosterize,
    v1.RandomSolarize,
    v1.RandomAdjustSharpness,
    v1.RandomAutocontrast,
    v1.RandomEqualize,
)
"""Transforms that change pixel values only (or the image's type): the map skips them."""


def _rng_state() -> tuple:
    return random.getstate(), torch.get_rng_state(), np.random.get_state()


def _set_rng_state(state: tuple) -> None:
    random.setstate(state[0])
    torch.set_rng_state(state[1])
    np.random.set_state(state[2])


def _as_like(saliency_map: Tensor | Image.Image, image: Any) -> Tensor | Image.Image:
    """The map in the image's kind: a float PIL image ("F") for PIL images, else a (1, H, W) tensor."""
    if isinstance(image, Image.Image):
        if isinstance(saliency_map, Image.Image):
            return saliency_map
        return Image.fromarray(saliency_map.reshape(saliency_map.shape[-2:]).numpy().astype(np.float32), mode="F")
    if isinstance(saliency_map, Image.Image):
        return torch.from_numpy(np.array(saliency_map, dtype=np.float32))[None]
    return saliency_map


class JointTransform:
    """Apply a torchvision v1 / timm pipeline to an image and its saliency map alike.

    Each step of ``transform`` (a ``Compose`` or a single transform) is either geometric
    (``GEOMETRIC_V1`` or ``geometric``): it runs on the image, then again on the map from the
    random state it started from, so crop box, flip and interpolation choice are the same; or
    image-only (``IMAGE_ONLY_V1`` or ``image_only``): the map skips it. The map rides as a
    float PIL image while the image is a PIL image, so PIL resamples both.

    timm's auto-augment (RandAugment, AutoAugment, AugMix) mixes photometric and geometric
    operations with their own randomness, so it is refused: pass it in ``image_only`` to
    accept that its small rotations, shears and translations are not applied to the map.

    Args:
        transform: the pipeline, e.g. ``timm.data.create_transform(..., is_training=True)``.
        geometric, image_only: further transform types of each kind.

    Raises:
        ValueError: a step of a type in neither list.
    """

    def __init__(self, transform: Callable, *, geometric: Sequence[type] = (), image_only: Sequence[type] = ()) -> None:
        steps = list(transform.transforms) if isinstance(transform, v1.Compose) else [transform]
        self.geometric = tuple(geometric) + GEOMETRIC_V1
        self.image_only = tuple(image_only) + IMAGE_ONLY_V1
        for step in steps:
            if not isinstance(step, self.geometric + self.image_only):
                raise ValueError(
                    f"transform: does {type(step).__name__} move pixels? Pass its type in geometric= to "
                    "apply it to the saliency map too, or in image_only= if it only changes pixel values "
                    "(auto-augment: its geometric operations will then not reach the map)"
                )
        self.steps = steps

    def __call__(self, image: Any, saliency_map: Tensor) -> tuple[Any, Tensor]:
        """(image, (1, H, W) or (H, W) map in the image's pixel grid) -> (image, (h, w) map)."""
        for step in self.steps:
            if isinstance(step, self.image_only):
                image = step(image)
                continue
            state = _rng_state()
            out = step(image)
            after = _rng_state()
            _set_rng_state(state)
            saliency_map = step(_as_like(saliency_map, image))
            _set_rng_state(after)
            image = out
        saliency_map = _as_like(saliency_map, torch.empty(0))
        return image, saliency_map.reshape(saliency_map.shape[-2:]).clamp_min(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.steps!r})"


def _image_size(image: Any) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, (Tensor, np.ndarray)) and image.ndim == 3:
        return tuple(image.shape[-2:]) if isinstance(image, Tensor) else tuple(image.shape[:2])
    raise TypeError(f"dataset: expected PIL images or (C, H, W) tensors, got {type(image).__name__}")


class SaliencyDataset(Dataset):
    """Items ``(image, saliency map (h, w) float32, label)``: a dataset's images with their stored maps.

    The stored map (m, m) is resized (bilinear) to the image's size before the transform, so
    one augmentation call moves both in the same pixel grid.

    Args:
        dataset: items ``(image, label)`` before augmentation (PIL images or (C, H, W) tensors),
            in the order the cache was built from (its ``transform`` should be None).
        cache: the maps, ``cache[i]`` for item i: a ``SaliencyCache``, or a
            ``tmix_aug.saliency_refresh.RefreshedSaliency`` (maps of the model being trained).
        transform: a torchvision v2 transform (called as ``transform(image, SaliencyMap)``),
            a ``JointTransform``, or a v1 / timm pipeline (wrapped in a ``JointTransform``);
            None leaves both as they are.
    """

    def __init__(self, dataset: Dataset, cache: SaliencyCache, transform: Callable | None = None) -> None:
        if len(cache) != len(dataset):
            raise ValueError(f"cache: has {len(cache)} maps for a dataset of {len(dataset)} items; was it built from it?")
        if transform is not None and not isinstance(transform, (v2.Transform, JointTransform)):
            transform = JointTransform(transform)
        self.dataset, self.cache, self.transform = dataset, cache, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Tensor, Any]:
        image, label = self.dataset[index][:2]
        height, width = _image_size(image)
        stored = self.cache[index]
        saliency_map = F.interpolate(
            stored[None, None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
        )[0]
        if self.transform is None:
            return image, saliency_map[0], label
        if isinstance(self.transform, JointTransform):
            image, saliency_map = self.transform(image, saliency_map)
            return image, saliency_map, label
        image, saliency_map = self.transform(image, SaliencyMap(saliency_map))
        return image, saliency_map.as_subclass(Tensor)[0].clamp_min(0), label
