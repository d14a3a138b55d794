"""The few torch modules archc's lowering needs beyond torch.nn.

Imported only by `lower` (through the op registry's lowering functions).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import ACTIVATIONS


class ConvNormAct(nn.Module):
    """conv -> BatchNorm -> activation, with children named `conv` and `bn`.

    These are the names of torchvision's and timm's `BasicConv2d`, so a spec's
    normalised convs produce their state_dict keys.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: Optional[str] = None,
                 pad: Optional[tuple[int, int, int, int]] = None):
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = getattr(nn, ACTIVATIONS[act][0])() if act else nn.Identity()
        # Asymmetric padding (e.g. TF "same" at stride 2) cannot live in Conv2d.
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.act(self.bn(self.conv(x)))
