"""Zero-shot Tiny-ImageNet top-1, CAM map size, CAM deletion test and cost of the ImageNet MobileNetV2 set-ups.

For each (input size, output stride): top-1 over the 200 classes on a fixed seeded subset of
val images; the class activation map (CAM) size; and a deletion test: the true-class probability
after the top-25% CAM region of each image is set to grey (0 after normalisation), against
after the same-shaped region moved by half the image (the CAM rolled by half its height and
width, cyclically). A CAM that finds the object makes the first drop clearly larger.

    OMP_NUM_THREADS=1 python benchmarks/tinyimagenet/teacher_setup.py --images 200
    OMP_NUM_THREADS=1 python benchmarks/tinyimagenet/teacher_setup.py --images 200 --configs "" \
        --teacher-checkpoint ~/.cache/tmix/teachers/tf_mobilenetv2_100_up2_os16_tinyimagenet.safetensors
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from tmix_aug.saliency import ClassActivationMap

from common import folder, teacher_from_imagenet, val_split_indices


def delete(x: torch.Tensor, maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Set the top ``fraction`` of each (upsampled) map's pixels to 0 (grey after normalisation)."""
    up = F.interpolate(maps.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False).flatten(1)
    up = up + 1e-6 * torch.rand(up.shape, generator=torch.Generator().manual_seed(1))  # break ties of flat maps
    keep = up < up.quantile(1 - fraction, dim=1, keepdim=True)
    return x * keep.view(x.shape[0], 1, *x.shape[-2:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--configs", default="64/32,64/16,64/8,128/32,128/16",
                        help="INPUT/OUTPUT_STRIDE set-ups of the ImageNet weights with the 200 head rows ('' for none)")
    parser.add_argument("--teacher", default="tf_mobilenetv2_100_up2_os16", help="timm name of a trained teacher (64 px input)")
    parser.add_argument("--teacher-checkpoint", default=None, help="also measure this trained teacher")
    args = parser.parse_args()
    val = folder("val")
    # From the judge's part of val (not the search's held-out part), fixed seed.
    pool = val_split_indices(val)[1]
    subset = Subset(val, np.random.default_rng(1).permutation(pool)[: args.images].tolist())
    xs, ys = zip(*[subset[i] for i in range(len(subset))])
    x64, y = torch.stack(xs), torch.tensor(ys)
    setups = []  # (record fields, model, input size it is fed)
    for config in filter(None, args.configs.split(",")):
        size, stride = map(int, config.split("/"))
        model = teacher_from_imagenet(val.classes, output_stride=stride)  # the input is resized below
        setups.append(({"input": size, "output_stride": stride}, model, size))
    if args.teacher_checkpoint:
        model = timm.create_model(args.teacher, num_classes=len(val.classes), checkpoint_path=args.teacher_checkpoint)
        setups.append(({"teacher": args.teacher, "checkpoint": args.teacher_checkpoint, "input": 64}, model, 64))
    for fields, model, size in setups:
        model.eval()
        cam = ClassActivationMap(model, class_source="label", input_size=None)
        correct, p_clean, p_cam, p_rand, seconds, shape = 0, [], [], [], 0.0, None
        for start in range(0, len(y), 50):
            x = x64[start : start + 50]
            t = y[start : start + 50]
            if size != 64:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            began = time.perf_counter()
            with torch.no_grad():
                logits = model(x)
            seconds += time.perf_counter() - began
            correct += int((logits.argmax(-1) == t).sum())
            maps = cam(x, F.one_hot(t, 200).float())
            shape = tuple(maps.shape[-2:])
            moved = maps.roll((maps.shape[-2] // 2, maps.shape[-1] // 2), dims=(-2, -1))
            with torch.no_grad():
                for store, m in ((p_clean, None), (p_cam, maps), (p_rand, moved)):
                    xi = x if m is None else delete(x, m, 0.25)
                    store.append(model(xi).softmax(-1).gather(1, t[:, None]).squeeze(1))
        record = {
            **fields,
            "images": len(y),
            "top1": round(100 * correct / len(y), 2),
            "cam": list(shape),
            "p_true_clean": round(float(torch.cat(p_clean).mean()), 4),
            "p_true_cam25_deleted": round(float(torch.cat(p_cam).mean()), 4),
            "p_true_moved25_deleted": round(float(torch.cat(p_rand).mean()), 4),
            "ms_per_image_forward": round(1000 * seconds / len(y), 2),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
