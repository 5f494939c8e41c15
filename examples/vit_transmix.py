"""Train a timm vision transformer on TransformMix batches with TransMix (attention-weighted) labels.

Runs in a few seconds on a CPU: a tiny random-initialised ViT and random data stand in for
your model and DataLoader. Swap them for real ones; the three marked lines are all TransMix needs.

    python examples/vit_transmix.py
"""
import timm
import torch
from timm.loss import SoftTargetCrossEntropy

import tmix_aug as tm


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = 10
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=32, patch_size=8, depth=2
    ).to(device)
    # An unsearched mixer (as here) mixes like Mixup, where TransMix labels equal the area labels;
    # for a learned one use tm.TransformMix.from_pretrained(NAME, num_classes=..., saliency=...).
    mixer = tm.TransformMix(num_classes, saliency="spectral", label_smoothing=0.1).to(device)
    labels = tm.TransMixLabels(model, area_weight=0.5)  # TransMix: hooks the last attention block
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = SoftTargetCrossEntropy()

    model.train()
    for step in range(3):
        x = torch.randn(16, 3, 32, 32, device=device)
        y = torch.randint(0, num_classes, (16,), device=device)
        out = mixer.mix(x, y)  # TransMix needs the masks, so use mix() rather than mixer(x, y)
        logits = model(out.images)  # the hooks capture the class-token attention of this forward
        targets = labels.relabel(out)  # TransMix: (N, num_classes) attention-weighted targets
        loss = loss_fn(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step}: loss {loss.item():.3f}")
    labels.remove()


if __name__ == "__main__":
    main()
