"""Feature extraction: build(spec, outputs=[...]) returns the named maps as a dict,
keeps only the layers they need, loads a whole network's weights, and the
summary lists each map's channels and stride."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archcompiler
from archcompiler.graph import select_outputs

SPECS = Path(__file__).parents[1] / "specs"


def test_resnet50_backbone_returns_its_stages_as_a_dict():
    backbone = archcompiler.build(SPECS / "resnet50.yaml", outputs=["layer2", "layer3", "layer4"])
    maps = backbone(torch.randn(2, 3, 224, 224))
    assert list(maps) == ["layer2", "layer3", "layer4"]
    assert [tuple(m.shape) for m in maps.values()] == [(2, 512, 28, 28), (2, 1024, 14, 14), (2, 2048, 7, 7)]
    assert not any(k.startswith("fc.") for k in backbone.state_dict())  # the classifier is not needed
    backbone.train()
    assert isinstance(backbone(torch.randn(2, 3, 224, 224)), dict)  # the same in training mode


def test_backbone_computes_what_the_whole_network_computes_with_the_same_weights(tmp_path):
    whole = archcompiler.build(SPECS / "googlenet.yaml", seed=3)
    path = tmp_path / "googlenet.safetensors"
    archcompiler.save_weights(whole, path)
    backbone = archcompiler.build(SPECS / "googlenet.yaml", weights=path, outputs=["inception3b", "inception4e.branch1"])
    whole.eval()
    backbone.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        values = whole._forward_all(x)
        maps = backbone(x)
    torch.testing.assert_close(maps["inception3b"], values["inception3b.concat"])
    torch.testing.assert_close(maps["inception4e.branch1"], values["inception4e.branch1"])
    assert set(backbone.state_dict()) < set(whole.state_dict())


def test_outputs_of_the_spec_and_train_only_heads_can_be_selected():
    graph = archcompiler.compile_graph(SPECS / "googlenet.yaml")
    heads = select_outputs(graph, ["aux1", "logits"])
    assert not any(n.train_only for n in heads.nodes.values())  # an aux head runs whenever it is asked for
    assert "inception5b.concat" in heads.nodes and "aux2.fc2" not in heads.nodes


def test_unknown_output_is_a_user_error_with_a_suggestion():
    with pytest.raises(archcompiler.UserError, match="no output, block or layer named 'layer9'.*layer4"):
        archcompiler.build(SPECS / "resnet50.yaml", outputs=["layer9"])


def test_summary_reports_each_maps_channels_and_stride():
    report = archcompiler.summary(SPECS / "resnet50.yaml", outputs=["layer1", "layer2", "layer3", "layer4"])
    assert {k: v[0] for k, v in report.outputs.items()} == {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    assert report.output_strides == {"layer1": (4, 4), "layer2": (8, 8), "layer3": (16, 16), "layer4": (32, 32)}
    whole = archcompiler.summary(SPECS / "resnet50.yaml")
    assert report.total_params == whole.total_params - 2048 * 1000 - 1000
    assert report.total_macs == whole.total_macs - 2048 * 1000
