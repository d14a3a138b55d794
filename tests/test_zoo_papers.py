"""The specs written after a paper reproduce that paper's own figures.

Each figure below is read off the paper (or the seed document the issue
names); the spec is compiled and analysed, and the computed numbers must
equal them.
"""

from __future__ import annotations

from pathlib import Path

import archcompiler

SPECS = Path(__file__).parents[1] / "specs"


def rows(spec: str, **params):
    report = archcompiler.summary(SPECS / f"{spec}.yaml", **params)
    return report, {r.name: r for r in report.rows}


# ---------------------------------------------------------------------------
# LeNet-5 (LeCun et al. 1998, section II.B; seed 001)


def test_lenet5_parameters_per_layer_and_total():
    report, row = rows("lenet5")
    assert {n: row[n].params for n in ("C1", "S2", "C3", "S4", "C5", "F6", "output")} == {
        "C1": 156, "S2": 12, "C3": 1_516, "S4": 32, "C5": 48_120, "F6": 10_164, "output": 0,
    }
    assert report.total_params == 60_000
    assert row["output"].buffers == 10 * 84  # the fixed prototypes


def test_lenet5_feature_map_sizes():
    _, row = rows("lenet5")
    assert {n: row[n].output_shape for n in ("C1", "S2", "C3", "S4", "C5", "F6", "output")} == {
        "C1": (6, 28, 28), "S2": (6, 14, 14), "C3": (16, 10, 10), "S4": (16, 5, 5),
        "C5": (120, 1, 1), "F6": (84,), "output": (10,),
    }


def test_lenet5_connections_equal_the_papers():
    # The paper counts connections with the bias: multiply-adds plus one per output unit.
    _, row = rows("lenet5")
    connections = {n: row[n].macs + row[n].activations for n in ("C1", "C3", "C5", "F6")}
    assert connections == {"C1": 122_304, "C3": 151_600, "C5": 48_120, "F6": 10_164}


# ---------------------------------------------------------------------------
# AlexNet, the 2012 paper's two-GPU network (seed 001's per-layer figures)


def test_alexnet_paper_parameters_per_layer_and_total():
    report, row = rows("alexnet_paper")
    layers = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
    assert [row[n].params for n in layers] == [
        34_944, 307_456, 885_120, 663_936, 442_624, 37_752_832, 16_781_312, 4_097_000,
    ]
    assert report.total_params == 60_965_224


def test_alexnet_paper_map_sizes_and_neurons():
    _, row = rows("alexnet_paper")
    assert row["conv1"].output_shape == (96, 55, 55) and row["conv1"].activations == 290_400
    assert row["pool1"].output_shape == (96, 27, 27)
    assert row["conv2"].output_shape == (256, 27, 27) and row["conv2"].activations == 186_624
    assert row["pool2"].output_shape == (256, 13, 13)
    assert row["conv3"].activations == row["conv4"].activations == 64_896
    assert row["conv5"].activations == 43_264
    assert row["pool5"].output_shape == (256, 6, 6)


# ---------------------------------------------------------------------------
# BN-Inception (Ioffe and Szegedy 2015, figure 5)

# module: (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, proj, stride): figure 5's rows
BN_INCEPTION_TABLE = {
    "inception_3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "inception_3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "inception_3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "inception_4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "inception_4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "inception_4c": (160, 128, 160, 128, 160, "avg", 128, 1),
    "inception_4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "inception_4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "inception_5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "inception_5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


def test_bn_inception_module_output_shapes_follow_the_filter_counts():
    _, row = rows("bn_inception")
    grid, channels = 28, 192
    for name, (c1, _, c3, _, d3, _, proj, s) in BN_INCEPTION_TABLE.items():
        grid = grid // s
        channels = c1 + c3 + d3 + (proj or channels)  # a pass-through pool keeps the input's channels
        assert row[name].output_shape == (channels, grid, grid), name
    # the depths the table prints for 4c, 4d and 4e disagree with its filter counts
    assert [row[f"inception_4{m}"].output_shape[0] for m in "cde"] == [608, 608, 1056]
    assert row["inception_5b"].output_shape == (1024, 7, 7)
    assert row["fc"].output_shape == (1000,)


def test_bn_inception_rows_are_instances_of_one_block_with_the_tables_arguments():
    graph = archcompiler.compile_graph(SPECS / "bn_inception.yaml")
    for name, table_row in BN_INCEPTION_TABLE.items():
        assert graph.scopes[name].block == "inception", name
        assert tuple(graph.scopes[name].args.values()) == table_row, name


def test_bn_inception_parameters_beside_the_caffe_port():
    report, _ = rows("bn_inception")
    assert report.total_params == 11_285_224
    # The widely used Caffe-derived port keeps a bias in every convolution,
    # BatchNorm or not: one per output channel, 10,016 in all.
    biased, _ = rows("bn_inception", conv_bias=True)
    assert biased.total_params == 11_295_240
    graph = archcompiler.compile_graph(SPECS / "bn_inception.yaml")
    conv_channels = sum(n.args.out for n in graph.nodes.values() if n.op == "conv")
    assert biased.total_params - report.total_params == conv_channels == 10_016


# ---------------------------------------------------------------------------
# Inception-v2 (Szegedy et al. 2016, Table 1, with seed 003's filter counts)

# every module's output shape in seed 003's tables (its labels: 3a-3c, 5a-5e, 2a-2b)
INCEPTION_V2_SHAPES = {
    "conv6": (288, 35, 35),          # the end of the stem
    "inception_3a": (288, 35, 35),   # seed 3a
    "inception_3b": (288, 35, 35),   # seed 3b
    "inception_3c": (768, 17, 17),   # seed 3c
    "inception_4a": (768, 17, 17),   # seed 5a
    "inception_4b": (768, 17, 17),   # seed 5b
    "inception_4c": (768, 17, 17),   # seed 5c
    "inception_4d": (768, 17, 17),   # seed 5d
    "inception_4e": (1280, 8, 8),    # seed 5e
    "inception_5a": (1280, 8, 8),    # seed 2a
    "inception_5b": (2048, 8, 8),    # seed 2b
    "avgpool": (2048, 1, 1),
    "fc": (1000,),
}


def test_inception_v2_module_output_shapes_equal_the_seeds_table():
    _, row = rows("inception_v2")
    assert {name: row[name].output_shape for name in INCEPTION_V2_SHAPES} == INCEPTION_V2_SHAPES


def test_inception_v2_stem_shapes_equal_the_seeds():
    _, row = rows("inception_v2")
    stem = {"conv1": (32, 149, 149), "conv2": (32, 147, 147), "conv3": (64, 147, 147), "pool1": (64, 73, 73),
            "conv4": (80, 71, 71), "conv5": (192, 35, 35)}
    assert {name: row[name].output_shape for name in stem} == stem


# ---------------------------------------------------------------------------
# Inception-ResNet-v1 (Szegedy et al. 2017, figures 7 and 10 to 15)

INCEPTION_RESNET_V1_SHAPES = {
    "conv2d_4b": (256, 35, 35),      # figure 14's stem output
    "repeat_1": (256, 35, 35),       # 5 x Inception-ResNet-A
    "mixed_6a": (896, 17, 17),       # reduction-A: 256 + n + m = 256 + 384 + 256
    "repeat_2": (896, 17, 17),       # 10 x Inception-ResNet-B
    "mixed_7a": (1792, 8, 8),        # reduction-B: 896 + 384 + 256 + 256
    "repeat_3": (1792, 8, 8),        # 5 x Inception-ResNet-C
    "avgpool_1a": (1792, 1, 1),
    "logits": (1000,),
}


def test_inception_resnet_v1_module_output_shapes_follow_the_figures():
    _, row = rows("inception_resnet_v1")
    assert {name: row[name].output_shape for name in INCEPTION_RESNET_V1_SHAPES} == INCEPTION_RESNET_V1_SHAPES


def test_inception_resnet_v1_repeats_and_residual_scales():
    graph = archcompiler.compile_graph(SPECS / "inception_resnet_v1.yaml")
    sums = {n.id: n.args for n in graph.nodes.values() if n.op == "residual_add"}
    for stage, count, scale in (("repeat_1", 5, 0.17), ("repeat_2", 10, 0.10), ("repeat_3", 5, 0.20)):
        mine = {k: a for k, a in sums.items() if k.startswith(stage + ".")}
        assert len(mine) == count, stage
        assert all(a.scale == scale and a.act == "relu" for a in mine.values()), stage
    assert len(sums) == 20  # no sixth C block in the paper's network


def test_inception_resnet_v1_against_the_public_ports():
    paper, _ = rows("inception_resnet_v1")
    port, row = rows("inception_resnet_v1", extra_block=True, embedding=512)
    assert paper.total_params == 22_756_328
    # The ports' additions, counted by hand from their layers:
    # a sixth Inception-ResNet-C block (its 1x1 branch, 1x1-1x3-3x1 branch and
    # biased 1x1 back to 1792 channels; BatchNorm adds 2 per channel) ...
    block8 = (1792 * 192 + 2 * 192) * 2 + (192 * 192 * 3 + 2 * 192) * 2 + 384 * 1792 + 1792
    # ... and a 512-d embedding (linear without bias, BatchNorm1d) before a smaller classifier.
    embedding = 1792 * 512 + 2 * 512
    classifier_change = (512 * 1000 + 1000) - (1792 * 1000 + 1000)
    assert row["block8"].params == block8 == 1_600_768
    assert port.total_params - paper.total_params == block8 + embedding + classifier_change
    assert port.total_params == 23_995_624
