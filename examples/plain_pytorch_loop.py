"""TransformMix in a plain PyTorch training loop (runs in seconds on a CPU with built-in data).

    python examples/plain_pytorch_loop.py
"""

import timm
import torch
from timm.loss import SoftTargetCrossEntropy
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

import tmix_aug as tm
from tmix_aug.synthetic import SyntheticObjects

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
data = DataLoader(SyntheticObjects(128, transform=ToTensor()), batch_size=32, shuffle=True)
model = timm.create_model("cifar_resnet20", num_classes=8).to(device)
# A searched mixer: tm.TransformMix.from_pretrained(NAME_OR_DIR, num_classes=8, saliency=model)
# Here: the weightless "softmax over CAMs" mode, with CAMs from the model being trained.
mixer = tm.TransformMix(8, saliency=model, mode="saliency-softmax").to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loss_fn = SoftTargetCrossEntropy()
model.train()
for x, y in data:
    x, y = x.to(device), y.to(device)
    x, y = mixer(x, y)  # mixed images and (N, 8) soft targets, no gradients into the mixer
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"last loss {loss.item():.3f}")
