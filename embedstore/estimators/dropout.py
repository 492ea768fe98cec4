"""Dropout whose CPU masks are drawn by numpy, for the networks the estimators train (the FC aligner, the MLP head).

Why not torch's: on CPU, `nn.Dropout` draws its mask with `bernoulli_`, one element at a time from torch's
Mersenne Twister. Measured (Intel Xeon, AVX-512, one thread, torch 2.13): a 512 x 1,024 mask took 5.4 ms that way
(the whole dropout 6.6 ms), against 0.07 ms for numpy's PCG64 random bits and 0.9 ms for its float32 uniforms; in
the FC aligner's default-recipe fit the three dropouts were 8.3 s of 41.2 s (cProfile). The masks are different
draws from the same distribution, so a fit under this dropout is a different fit than under torch's at the same
seed (`training.FIT_REVISION` keeps cached fits of the two apart).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Dropout(nn.Dropout):
    """`nn.Dropout` (same parameter, same scaling by 1/(1-p), the identity in eval mode) with CPU masks from numpy.

    Each mask's generator is seeded by one draw from torch's global RNG, so `torch.manual_seed` (which the training
    loop sets inside `fork_rng`) fixes every mask, as it fixed torch's, and a fit stays a function of its seed. At
    p = 0.5 each element keeps with one random bit (exactly probability 1/2); at other p with a float32 uniform
    (1 - p to within 2^-24). On other devices torch's own dropout runs: it draws masks on the device."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        rng = np.random.default_rng(int(torch.randint(0, 2**63 - 1, (1,)).item()))
        n = x.numel()
        if self.p == 0.5:
            keep = np.unpackbits(rng.integers(0, 256, size=-(-n // 8), dtype=np.uint8), count=n)
        else:
            keep = rng.random(n, dtype=np.float32) >= self.p
        mask = torch.from_numpy(keep).view(x.shape).to(x.dtype).mul_(1 / (1 - self.p))
        return x * mask
