"""Teacher-free saliency: the spectral residual of Hou & Zhang (2007)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

from ..checks import check_images, check_int, check_non_negative, check_number


class SpectralResidual:
    """Teacher-free saliency (Hou & Zhang 2007 spectral residual), needs no weights.

    Grayscale (mean over channels), resize to ``size`` x ``size``, FFT, log amplitude minus its
    3x3 local mean, inverse FFT with the original phase, squared magnitude, Gaussian blur; as
    in the authors' reference code (64 px, 3x3 mean with replicated edges, blur sigma 2.5).
    Batched on the images' device.

    Args:
        size: side of the square working resolution and of the output maps.
        blur_sigma: standard deviation of the final Gaussian blur, in pixels of the maps; 0
            turns the blur off.
        amplitude_floor: amplitudes below this fraction of the image's mean amplitude are
            raised to it before the logarithm (ours), so exact zeros of the spectrum of flat
            synthetic images do not dominate; 0 turns it off (as the reference code).
        margin: the image is mirrored by this fraction of ``size`` on every side before the
            FFT and the maps cropped back (ours). The FFT treats the image as periodic, so
            without it the jump between opposite borders lights up the corners of most
            natural images; 0 turns it off (as the reference code).
    """

    def __init__(
        self,
        *,
        size: int = 64,
        blur_sigma: float = 2.5,
        amplitude_floor: float = 1e-2,
        margin: float = 0.25,
    ) -> None:
        self.size = check_int("size", size, 2)
        self.blur_sigma = check_non_negative("blur_sigma", blur_sigma)
        self.amplitude_floor = check_non_negative("amplitude_floor", amplitude_floor)
        self.pad = int(round(check_number("margin", margin, low=0.0, high=1.0, high_open=True) * size))

    def __call__(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """Spectral residual saliency.

        Args:
            images: (N, C, H, W) float, any C, any float dtype, any device.
            targets: ignored (accepted for the common saliency signature).

        Returns:
            (N, size, size) float32 non-negative maps on the images' device, without autograd
            graph.
        """
        check_images(images, name="images")
        size = (self.size, self.size)
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            gray = images.mean(dim=1, keepdim=True, dtype=torch.float32)
            gray = F.interpolate(gray, size=size, mode="bilinear", align_corners=False,
                                 antialias=True)
            if self.pad:
                gray = F.pad(gray, (self.pad,) * 4, mode="reflect")
            spectrum = torch.fft.fft2(gray)
            amplitude = spectrum.abs()
            floor = amplitude.mean((-2, -1), keepdim=True) * self.amplitude_floor
            log_amplitude = torch.log(torch.maximum(amplitude, floor.clamp_min(1e-12)))
            padded = F.pad(log_amplitude, (1, 1, 1, 1), mode="replicate")
            residual = log_amplitude - F.avg_pool2d(padded, 3, stride=1)
            maps = torch.fft.ifft2(torch.polar(residual.exp(), spectrum.angle())).abs().square()
            if self.blur_sigma > 0:
                kernel = min(2 * math.ceil(2 * self.blur_sigma) + 1, 2 * self.size - 1)
                maps = gaussian_blur(maps, [kernel, kernel], [self.blur_sigma, self.blur_sigma])
        end = self.pad + self.size
        return maps[:, 0, self.pad : end, self.pad : end].clamp_min(0)
