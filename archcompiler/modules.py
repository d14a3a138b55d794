"""The few torch modules archc's lowering needs beyond torch.nn.

An op's lowering description names them by their bare class name
("ConvNormAct"); `codegen` finds them here to build a model, and `emit`
copies their source into a standalone file.  Imported only when a model is
built; nothing here imports the op registry.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def pair(value: "int | Sequence[int]") -> tuple[int, int]:
    """An int or a pair of ints as a pair: 3 -> (3, 3), [1, 7] -> (1, 7)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ScaledTanh(nn.Module):
    """LeCun's squashing function `1.7159 * tanh(2/3 * x)` (LeNet-5, appendix A).

    The constants make f(1) = 1 and f(-1) = -1, so targets of +-1 sit where the
    curve bends most.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class ConvNormAct(nn.Module):
    """conv -> BatchNorm -> activation, with children named `conv` and `bn`.

    These are the names of torchvision's and timm's `BasicConv2d`, so a spec's
    normalised convs produce their state_dict keys.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: Optional[nn.Module] = None,
                 pad: Optional[tuple[int, int, int, int]] = None):
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = act if act is not None else nn.Identity()
        # Asymmetric padding (e.g. TF "same" at stride 2) cannot live in Conv2d.
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.act(self.bn(self.conv(x)))


class PartialConv2d(nn.Module):
    """A convolution in which output map i sees only the input maps `connections[i]`.

    LeNet-5's C3 is one: 16 maps over 6 inputs, 60 connections of 5x5 kernels.
    Only the connected kernels are parameters (`weight` is connections x kh x
    kw), so the parameter count is the paper's; `forward` scatters them into a
    dense kernel whose missing connections are zero and runs one conv2d.
    """

    def __init__(self, in_channels: int, connections: Sequence[Sequence[int]], kernel_size: "int | tuple[int, int]",
                 stride: "int | tuple[int, int]" = 1, padding: "int | tuple[int, int]" = 0,
                 dilation: "int | tuple[int, int]" = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, len(connections)
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        # Flat (output, input) slots of the dense kernel, in the order of `weight`'s rows.
        self.slots = tuple(o * in_channels + i for o, inputs in enumerate(connections) for i in inputs)
        self.weight = nn.Parameter(torch.empty(len(self.slots), *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Conv2d's default init, with the fan-in of each output map's own inputs (on average).
        fan_in = len(self.slots) * math.prod(self.kernel_size) / self.out_channels
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def dense_weight(self) -> torch.Tensor:
        slots = torch.tensor(self.slots, device=self.weight.device)
        dense = self.weight.new_zeros(self.out_channels * self.in_channels, *self.kernel_size)
        return dense.index_copy(0, slots, self.weight).view(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, connections={len(self.slots)}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}")


class Subsample2d(nn.Module):
    """LeNet-5's trainable subsampling: per map, the sum over each window times a
    coefficient plus a bias (`weight` and `bias`, one of each per channel)."""

    def __init__(self, channels: int, kernel_size: "int | tuple[int, int]", stride: "int | tuple[int, int]"):
        super().__init__()
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window_sum = F.avg_pool2d(x, self.kernel_size, self.stride) * math.prod(self.kernel_size)
        return window_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class RBF(nn.Module):
    """Euclidean radial basis function units: y_j = sum_i (x_i - w_ji)^2.

    The prototypes `w` are fixed, not trained (LeNet-5's output layer): a
    buffer, so they are saved with the model but take no gradient.
    """

    def __init__(self, prototypes: torch.Tensor):
        super().__init__()
        self.register_buffer("prototypes", prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(1) - self.prototypes).pow(2).sum(-1)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map: torchvision's `LayerNorm2d` (ConvNeXt).

    The map is permuted to NHWC, normalised over C (`weight` and `bias` of shape (C,)), and
    permuted back.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    """`torch.permute(x, dims)`, `dims` including the batch (torchvision.ops.misc.Permute)."""

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Reshape(nn.Module):
    """Each sample reshaped to `shape` (one size may be -1); the batch dimension is kept."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle, as torchvision's ShuffleNetV2 writes it: the channels seen as
    (groups, C / groups), transposed.  (torch.nn.ChannelShuffle computes the same but does not
    export to ONNX.)"""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.size()
        x = x.view(batch, self.groups, channels // self.groups, height, width)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(batch, -1, height, width)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def stochastic_depth(x: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """torchvision.ops.stochastic_depth: in training, drop whole samples (`row`) or the whole batch
    (`batch`) with probability `p`, scaling what survives by 1 / (1 - p); the identity otherwise."""
    if not training or p == 0.0:
        return x
    survival_rate = 1.0 - p
    if mode == "row":
        size = [x.shape[0]] + [1] * (x.ndim - 1)
    else:
        size = [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return x * noise


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: `stochastic_depth` in training mode, the identity in eval."""

    def __init__(self, p: float, mode: str = "row"):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.p, self.mode, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"
