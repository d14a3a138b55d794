"""zoo: model names -> specs; `variants:` tables; `archc list`."""

from __future__ import annotations

import json

import pytest

import archcompiler
from archcompiler import SpecError, zoo
from archcompiler.spec import parse_spec, select_variant

from conftest import run_archc, spec_text

OLD_SPECS = ["alexnet", "alexnet_paper", "bn_inception", "googlenet", "googlenet_paper", "inception_resnet_v1",
             "inception_resnet_v2", "inception_v2", "inception_v3", "inception_v4", "lenet5", "resnet50", "vgg16"]

FAMILY = spec_text("""
stem: {conv: {out: $width, k: 3, pad: 1}}
stage: {conv: {out: $width, k: 3, pad: 1}, repeat: $depth}
""", name="fam", params="{width: 8, depth: 1}",
    variants="fam_s: {width: 4}\nfam_l: {width: 16, depth: 3}")


def test_every_spec_of_the_zoo_is_a_model_name_and_families_give_their_variants():
    names = archcompiler.list_models()
    assert names == sorted(names) and set(OLD_SPECS) <= set(names)
    for name, model in zoo.models().items():
        spec = zoo.find_model(name)
        assert spec.name == name and model.path.exists()
        family = archcompiler.load_spec(model.path)
        assert (model.variant is None) == (not family.variants or name == family.name)


def test_a_name_of_its_own_file_wins_over_a_family_variant():
    for name in ("resnet50", "vgg16"):
        assert zoo.models()[name].path.name == f"{name}.yaml" and zoo.models()[name].variant is None


def test_variant_sets_parameters_and_overrides_still_apply():
    spec = parse_spec(FAMILY, "fam.yaml")
    assert set(spec.variants) == {"fam_s", "fam_l"}
    large = select_variant(spec, "fam_l")
    assert large.name == "fam_l" and large.params["width"] == 16
    g = archcompiler.compile_graph(large)
    assert g.name == "fam_l" and g.nodes["stem"].shape[0] == 16 and "stage.2" in g.nodes
    assert archcompiler.compile_graph(large, depth=1, width=2).nodes["stage.0"].shape[0] == 2
    assert archcompiler.compile_graph(spec).nodes["stem"].shape[0] == 8  # by path: the defaults


@pytest.mark.parametrize("variants, message", [
    ("v: {widht: 4}", "variant 'v' sets 'widht', which is not a parameter"),
    ("v: {width: true}", "variant 'v': parameter 'width' has type int"),
    ("1v: {width: 4}", "is not a valid variant name"),
    ("v: [4]", "variants"),
])
def test_bad_variant_tables_are_located_errors(variants, message):
    text = spec_text("a: {conv: {out: $width, k: 1}}", params="{width: 8}", variants=variants)
    with pytest.raises(SpecError) as info:
        parse_spec(text, "fam.yaml")
    assert message in info.value.message and info.value.loc.line > 1


def test_unknown_variant_and_unknown_model_suggest_a_name():
    with pytest.raises(SpecError, match="did you mean 'fam_s'"):
        select_variant(parse_spec(FAMILY, "fam.yaml"), "fam_x")
    with pytest.raises(SpecError, match="did you mean 'resnet50'"):
        archcompiler.load_spec("resnet5O")


def test_cli_takes_model_names(tmp_path):
    r = run_archc("check", "lenet5")
    assert r.returncode == 0 and "lenet5" in r.stdout
    r = run_archc("summary", "no_such_model_anywhere")
    assert r.returncode == 2 and "error: no spec file or zoo model named 'no_such_model_anywhere'" in r.stderr
    assert "Traceback" not in r.stderr


def test_archc_list_gives_every_model_with_its_computed_counts():
    names = run_archc("list", "--names")
    assert names.returncode == 0 and names.stdout.split() == archcompiler.list_models()
    r = run_archc("list", "--format", "json")
    assert r.returncode == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert list(rows) == archcompiler.list_models()
    lenet = archcompiler.summary("lenet5")
    assert rows["lenet5"]["params"] == lenet.total_params and rows["lenet5"]["input"] == [1, 32, 32]
    assert rows["googlenet"]["gmacs"] == round(archcompiler.summary("googlenet").total_macs / 1e9, 3)
    table = run_archc("list", env={"COLUMNS": "200"})
    assert table.returncode == 0 and "He et al. 2016" in table.stdout
    assert run_archc("list", "--format", "xml").returncode == 2
