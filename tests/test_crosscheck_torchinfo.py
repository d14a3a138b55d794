"""torchinfo as an independent cross-check of `archcompiler.summary` on every spec.

torchinfo (github.com/TylerYep/torchinfo, checked against 1.8.0) runs the
compiled model once with forward hooks and counts, for every leaf module that
ran (torchinfo/layer_info.py, `LayerInfo.calculate_macs`):

- a module whose class name contains "Conv": (weight + bias elements) x output
  positions (batch x H x W). For a Conv2d that is archc's MACs plus one per
  output element when the conv has a bias (torchinfo counts the bias add).
  archc's `PartialConv2d` (LeNet-5's C3) matches "Conv" too, and its weight
  holds only the connected kernels, so torchinfo counts it right as well.
- any other module with a weight or bias: (weight + bias elements) x batch,
  not x positions. Linear: in x out + out, i.e. archc's MACs + out.
  BatchNorm2d: 2 x channels (one per affine weight and bias); archc counts 0.
  LeNet-5's `Subsample2d`: 2 x channels likewise; archc counts 0.
- modules without parameters: 0. That includes ReLU, pools, LRN, dropout, and
  also LeNet-5's `RBF`, whose prototypes are a buffer; archc counts out x in.

`total_mult_adds` sums those over leaf modules that ran. In eval mode the
auxiliary heads (googlenet, googlenet_paper, inception_v3) do not run, so they
are in neither tool's MACs. Their parameters are still in torchinfo's
`total_params`: not as rows of their own but as the "leftover" parameters of
the root module (its `named_parameters()` minus those of the rows listed under
it), whereas `total_param_bytes` sums listed leaves only and leaves them out.

Other columns: torchinfo never counts buffers (its "non-trainable params" are
parameters with requires_grad=False, none here), while archc's `buffers` are
BatchNorm running mean/var + step counter and RBF prototypes. torchinfo's
"forward/backward pass size" is bytes, 2 (output + gradient) x 4 (float32) x the
output elements of each leaf module that has parameters (conv and BN count
separately; ReLU, pools, concats, adds don't count); archc's activations are
elements of every layer's output, once per node (a conv with fused BN and
activation is one node).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torchinfo

import archcompiler
from archcompiler.analysis import Report, Row
from archcompiler.graph import Graph

SPECS = Path(__file__).parents[1] / "specs"
# Networks torchinfo counts by other conventions (docs/summaries.md says how): ConvNeXt's linear layers act on
# every position of a map, which torchinfo counts once per sample, and its layer_scale parameters belong to
# no leaf module, so torchinfo's per-layer rows leave them out.
TORCHINFO_COUNTS_OTHERWISE = {"convnext"}
SPEC_NAMES = sorted(p.stem for p in SPECS.glob("*.yaml") if p.stem not in TORCHINFO_COUNTS_OTHERWISE)
FLOAT32 = 4  # bytes per element: every model here is float32
AUX_SPECS = {"googlenet", "googlenet_paper", "inception_v3"}  # auxiliary heads, training mode only


@dataclass(frozen=True)
class Leaf:
    """What torchinfo recorded for one leaf module that ran."""

    name: str  # module path in the model
    node: str  # the archc graph node the module belongs to
    class_name: str
    macs: int
    num_params: int
    output_size: tuple[int, ...]
    output_bytes: int


@dataclass(frozen=True)
class Case:
    name: str
    report: Report
    graph: Graph
    leaves: list[Leaf]
    total_params: int
    trainable_params: int
    total_mult_adds: int
    total_output_bytes: int
    total_param_bytes: int
    total_input: int
    root_leftover_params: int
    model_params: int
    model_buffers: int

    def eval_layers(self, *ops: str) -> list[Row]:
        return [r for r in self.report.rows
                if r.kind == "layer" and not r.train_only and (not ops or r.op in ops)]

    def leaves_of(self, *classes: str) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.class_name in classes]


@lru_cache(maxsize=None)
def _case(name: str) -> Case:
    """Build `name` once, run torchinfo in eval mode, keep plain numbers (not the model)."""
    path = SPECS / f"{name}.yaml"
    graph = archcompiler.compile_graph(path)
    report = archcompiler.summary(path)
    model = archcompiler.build(path)
    with torch.no_grad():
        stats = torchinfo.summary(model, input_size=(1, *graph.input_shape), mode="eval", verbose=0)
    names = {id(m): n for n, m in model.named_modules()}

    def node_of(module_name: str) -> str:  # e.g. "inception3a.branch2.1.conv" -> "inception3a.branch2.1"
        n = module_name
        while n and n not in graph.nodes:
            n = n.rpartition(".")[0]
        assert n, f"module {module_name!r} belongs to no graph node"
        return n

    leaves = [
        Leaf(names[id(li.module)], node_of(names[id(li.module)]), li.class_name, li.macs, li.num_params,
             tuple(li.output_size), li.output_bytes)
        for li in stats.summary_list if li.is_leaf_layer and li.executed
    ]
    return Case(
        name=name, report=report, graph=graph, leaves=leaves,
        total_params=stats.total_params, trainable_params=stats.trainable_params,
        total_mult_adds=stats.total_mult_adds, total_output_bytes=stats.total_output_bytes,
        total_param_bytes=stats.total_param_bytes, total_input=stats.total_input,
        root_leftover_params=stats.summary_list[0].leftover_params(),
        model_params=sum(p.numel() for p in model.parameters()),
        model_buffers=sum(b.numel() for b in model.buffers()),
    )


@pytest.fixture(scope="module", params=SPEC_NAMES)
def case(request) -> Case:
    return _case(request.param)


# --- what archc's own graph says about the layers torchinfo counts differently ---

def _partial(case: Case, row: Row) -> bool:
    node = case.graph.nodes[row.name]
    return node.op == "conv" and node.args.connections is not None


def _bias_elements(case: Case, row: Row) -> int:
    """Output elements of a conv or linear layer with a bias: one bias add (a torchinfo MAC) each."""
    return row.activations if case.graph.nodes[row.name].args.bias else 0


def _affine_bn_channels(case: Case) -> int:
    """Channels of every BatchNorm with affine parameters that runs in eval mode (fused or not)."""
    total = 0
    for row in case.eval_layers("conv", "batchnorm"):
        args = case.graph.nodes[row.name].args
        norm = args.norm if row.op == "conv" else args
        if norm is not None and norm.affine:
            total += row.output_shape[0]
    return total


def _param_modules(case: Case, row: Row) -> int:
    """How many modules with parameters archc lowers `row` to (a conv with affine BN: conv and bn)."""
    if row.params == 0:
        return 0
    args = case.graph.nodes[row.name].args
    return 2 if row.op == "conv" and args.norm is not None and args.norm.affine else 1


# --- 1. parameters ---

def test_total_params_agree_with_torchinfo(case):
    assert case.total_params == case.trainable_params == case.report.total_params == case.model_params


def test_torchinfo_lists_only_layers_that_ran(case):
    # torchinfo rows come from forward hooks, so the aux heads (training-only) get no rows; their
    # parameters reach torchinfo's total only as the root module's leftover, and its "params size"
    # (bytes of the listed leaves) leaves them out.
    train_only = sum(r.params for r in case.report.rows if r.kind == "layer" and r.train_only)
    assert (train_only > 0) == (case.name in AUX_SPECS)
    listed = sum(leaf.num_params for leaf in case.leaves)
    assert listed == case.report.total_params - train_only
    assert case.root_leftover_params == train_only
    assert case.total_param_bytes == FLOAT32 * listed


# --- 2. conv + linear multiply-adds ---

def test_conv_and_linear_macs_agree_layer_by_layer(case):
    # torchinfo = archc + one MAC per output element of a conv/linear with a bias (the bias add).
    ours = {r.name: r.macs + _bias_elements(case, r) for r in case.eval_layers("conv", "linear")}
    theirs: dict[str, int] = {}
    for leaf in case.leaves_of("Conv2d", "PartialConv2d", "Linear"):
        assert leaf.node not in theirs, f"two conv/linear modules for node {leaf.node}"
        theirs[leaf.node] = leaf.macs
    assert theirs == ours


def test_conv2d_and_linear_totals_agree(case):
    dense = case.leaves_of("Conv2d", "Linear")
    bias = sum(_bias_elements(case, r) for r in case.eval_layers("conv", "linear") if not _partial(case, r))
    # Only LeNet-5 has MACs in layers that are not an nn.Conv2d / nn.Linear (see the next test).
    other = (sum(r.macs for r in case.eval_layers("conv") if _partial(case, r))
             + sum(r.macs for r in case.eval_layers("rbf")))
    assert (other > 0) == (case.name == "lenet5")
    assert sum(leaf.macs for leaf in dense) - bias == case.report.total_macs - other


def test_lenet5_partial_conv_and_rbf():
    c = _case("lenet5")
    assert c.report.total_macs == 326_520
    assert c.total_mult_adds == 332_232
    (partial,) = c.leaves_of("PartialConv2d")
    (rbf,) = c.leaves_of("RBF")
    # C3 (PartialConv2d) is no nn.Conv2d, but torchinfo matches "Conv" in the class name and multiplies
    # its parameters (60 connected 5x5 kernels + 16 biases) by the 10x10 output positions: archc's
    # 60 x 25 x 100 = 150,000 MACs plus 16 x 100 bias adds. A count of the dense kernel it runs
    # (what fvcore reports, zeros included) would be 16 x 6 x 25 x 100 = 240,000.
    assert c.report.row("C3").macs == 150_000
    assert partial.macs == 150_000 + 1_600
    # The RBF output layer has no parameters (its prototypes are a buffer), so torchinfo counts 0;
    # archc counts its 10 x 84 squared differences as MACs.
    assert c.report.row("output").macs == 840
    assert rbf.macs == 0
    # S2, S4 (Subsample2d): not "Conv", so (coefficients + biases) x batch = 2 x channels: 12 and 32.
    assert [leaf.macs for leaf in c.leaves_of("Subsample2d")] == [12, 32]
    # Total: archc - RBF + bias adds (C1 6x28x28, C3 16x10x10, C5 120, F6 84) + subsampling.
    assert c.total_mult_adds == 326_520 - 840 + (4_704 + 1_600 + 120 + 84) + (12 + 32)


# --- 3. where the other columns differ ---

def test_total_mult_adds_is_conv_linear_plus_bias_plus_batchnorm(case):
    r = case.report
    bias = sum(_bias_elements(case, row) for row in case.eval_layers("conv", "linear"))
    bn = case.leaves_of("BatchNorm2d")
    # BatchNorm2d: weight + bias elements x batch = 2 x channels, not x H x W.
    assert all(leaf.macs == 2 * leaf.output_size[1] for leaf in bn)
    assert sum(leaf.macs for leaf in bn) == 2 * _affine_bn_channels(case)
    subsample = sum(row.params for row in case.eval_layers("subsample"))  # 2 x channels
    rbf = sum(row.macs for row in case.eval_layers("rbf"))
    assert case.total_mult_adds == r.total_macs - rbf + bias + 2 * _affine_bn_channels(case) + subsample
    # Every other module torchinfo lists (ReLU, pools, LRN, dropout, flatten, RBF) counts 0, as in archc.
    counted = {"Conv2d", "PartialConv2d", "Linear", "BatchNorm2d", "Subsample2d"}
    assert all(leaf.macs == 0 for leaf in case.leaves if leaf.class_name not in counted)


def test_buffers_are_not_torchinfo_non_trainable_params(case):
    # torchinfo's "non-trainable params" are parameters with requires_grad=False: none here.
    assert case.total_params - case.trainable_params == 0
    # archc's buffers (BatchNorm running mean + var + step counter, RBF prototypes) are the model's
    # buffers, which torchinfo's totals do not include in any column.
    assert case.report.total_buffers == case.model_buffers
    # Summed over every layer, training-only ones included, as archc's total_buffers is.
    layers = [row for row in case.report.rows if row.kind == "layer"]
    expected = sum(2 * row.output_shape[0] + 1 for row in layers
                   if row.op == "batchnorm" or (row.op == "conv" and case.graph.nodes[row.name].args.norm))
    for row in layers:
        if row.op == "rbf":  # prototypes: units x inputs
            (source,) = case.graph.nodes[row.name].inputs
            expected += row.output_shape[0] * math.prod(case.graph.nodes[source].shape)
    assert case.report.total_buffers == expected


def test_pass_size_is_bytes_of_parameterised_outputs_twice(case):
    # torchinfo: 2 (output and its gradient) x 4 bytes x output elements of each leaf with parameters.
    elements = sum(r.activations * _param_modules(case, r) for r in case.eval_layers())
    assert case.total_output_bytes == 2 * FLOAT32 * elements
    assert case.total_output_bytes == sum(2 * leaf.output_bytes for leaf in case.leaves if leaf.num_params)
    # "Input size" is sys.getsizeof of the input tensor's storage: its bytes plus the Python
    # object's own few dozen bytes (64 with torch 2.13 on CPython 3.x, 64-bit).
    assert 0 <= case.total_input - FLOAT32 * math.prod(case.report.input) <= 256
    # archc: elements of every eval layer's output, parameterless layers included, once per node.
    assert case.report.total_activations == sum(r.activations for r in case.eval_layers())


# Pinned numbers: archc total_macs, torchinfo total_mult_adds = conv/linear MACs + bias adds + BN,
# archc total_activations and torchinfo's pass size in bytes.
PINNED = {
    #             total_macs     mult_adds      bias   BN      acts        pass bytes
    "googlenet": (1_498_376_192, 1_498_391_752, 1_000, 14_560, 5_883_288, 51_626_560),
    "resnet50": (4_089_184_256, 4_089_238_376, 1_000, 53_120, 36_056_552, 177_831_744),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_differences(name):
    c = _case(name)
    macs, mult_adds, bias, bn, acts, pass_bytes = PINNED[name]
    assert c.report.total_macs == macs
    assert c.total_mult_adds == mult_adds == macs + bias + bn
    # Both nets: bias-free convs, each followed by a BatchNorm; one biased fc, 1000 outputs.
    assert sum(leaf.macs for leaf in c.leaves_of("Conv2d")) == sum(r.macs for r in c.eval_layers("conv"))
    assert [leaf.macs - leaf.output_size[1] for leaf in c.leaves_of("Linear")] == [c.report.row("fc").macs]
    assert sum(leaf.macs for leaf in c.leaves_of("BatchNorm2d")) == bn
    assert c.report.total_activations == acts
    assert c.total_output_bytes == pass_bytes
    assert pass_bytes != 2 * FLOAT32 * acts
