"""Checkpoints: read, check, load and save weights (archcompiler.checkpoints).

- save_weights + load_weights round-trip a model exactly, as torch.save
  files and as safetensors files, atomically;
- training checkpoints ({"state_dict": ...}, {"model": ...}) and DDP's
  "module." prefix load;
- a checkpoint that does not fit raises WeightsError with a short report;
- a file that is not a checkpoint raises a one-line UserError naming it;
- a checkpoint laid out as torchvision or timm save it (keys, shapes and
  dtypes from tests/fixtures/reference/, values from the deterministic fill)
  loads into every reference-layout spec and gives the reference's logits.
"""

from __future__ import annotations

import os
import pickle
import stat
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from test_zoo_reference import REFERENCES, SPECS

import archcompiler
from archcompiler.checkpoints import (
    WeightsError,
    WeightsReport,
    check_weights,
    load_weights,
    read_checkpoint,
    save_weights,
)
from archcompiler.errors import UserError

from conftest import make_spec
from reference import facts, keys, reference_input, reference_state, relative_error

SMALL = make_spec("""
stem: {conv: {out: 8, k: 3, pad: 1, bias: false, norm: true, act: relu}}
stage: {conv: {out: 16, k: 3, s: 2, pad: 1, act: relu}}
pool: global_avgpool
flatten: flatten
fc: {linear: {out: $num_classes}}
""", name="small", params="num_classes: 10")


def small(seed: int = 0, **params) -> torch.nn.Module:
    return archcompiler.build(SMALL, seed=seed, **params)


def assert_same_state(a: dict, b: dict, *, ordered: bool = True) -> None:
    """Same keys (in the same order, unless not `ordered`: safetensors files sort theirs), dtypes and values."""
    assert (list(a) == list(b)) if ordered else (sorted(a) == sorted(b))
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["w.pt", "w.pth", "w.bin", "w.safetensors"])
def test_save_then_load_round_trips_exactly(tmp_path, name):
    source, target = small(seed=1), small(seed=2)
    source.stem.bn.num_batches_tracked.fill_(7)  # an int64 buffer travels too
    path = tmp_path / name
    save_weights(source, path)
    assert_same_state(read_checkpoint(path), source.state_dict(), ordered=not name.endswith(".safetensors"))
    load_weights(target, path)
    assert_same_state(target.state_dict(), source.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # an ordinary file, not mkstemp's private one


def test_pt_file_is_a_plain_state_dict_and_safetensors_file_is_safetensors(tmp_path):
    from safetensors.torch import load_file

    model = small()
    save_weights(model, tmp_path / "w.pt")
    save_weights(model, tmp_path / "w.safetensors")
    plain = torch.load(tmp_path / "w.pt", weights_only=True)
    assert isinstance(plain, OrderedDict)
    assert_same_state(plain, model.state_dict())
    assert_same_state(load_file(tmp_path / "w.safetensors"), model.state_dict(), ordered=False)


def test_save_replaces_atomically_and_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "w.pt"
    save_weights(small(seed=1), path)  # makes the folder
    save_weights(small(seed=2), path)  # replaces the file
    assert_same_state(read_checkpoint(path), small(seed=2).state_dict())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_weights(small(seed=3), path)
    assert_same_state(read_checkpoint(path), small(seed=2).state_dict())
    assert [p.name for p in path.parent.iterdir()] == ["w.pt"]


def test_safetensors_bytes_under_another_name_are_read_as_safetensors(tmp_path):
    model = small()
    save_weights(model, tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").rename(tmp_path / "w.bin")
    load_weights(small(seed=5), tmp_path / "w.bin")
    assert_same_state(read_checkpoint(tmp_path / "w.bin"), model.state_dict(), ordered=False)


def test_save_of_a_meta_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="meta"):
        save_weights(archcompiler.build(SMALL, device="meta"), tmp_path / "w.pt")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- checkpoint layouts


def _wrapped(state):
    prefixed = OrderedDict(("module." + k, v) for k, v in state.items())
    return {
        "state_dict": {"epoch": 3, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
        "model": {"model": state, "epoch": 3},
        "model_state_dict": {"model_state_dict": state, "loss": 0.5},
        "module.": prefixed,
        "state_dict+module.": {"state_dict": prefixed, "arch": "small"},
    }


@pytest.mark.parametrize("layout", list(_wrapped({})))
def test_wrapped_and_ddp_checkpoints_load(tmp_path, layout):
    source = small(seed=1)
    path = tmp_path / "w.pth"
    torch.save(_wrapped(source.state_dict())[layout], path)
    assert_same_state(read_checkpoint(path), source.state_dict())
    target = small(seed=2)
    load_weights(target, path)
    assert_same_state(target.state_dict(), source.state_dict())


@pytest.mark.parametrize("layout", ["plain", "state_dict", "module."])
def test_a_state_dict_in_memory_loads(layout):
    source, target = small(seed=1), small(seed=2)
    state = source.state_dict() if layout == "plain" else _wrapped(source.state_dict())[layout]
    load_weights(target, state)
    assert_same_state(target.state_dict(), source.state_dict())


def test_floating_dtype_differences_are_fine():
    source, target = small(seed=1), small(seed=2)
    state = {k: v.double() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    assert check_weights(target, state).ok
    load_weights(target, state)
    assert_same_state(target.state_dict(), source.state_dict())


# ---------------------------------------------------------------------------- mismatches


def test_mismatch_report_lists_missing_unexpected_and_misshaped_keys():
    model = small()
    state = small(num_classes=5).state_dict()
    del state["stage.bias"]
    del state["stem.conv.weight"]
    state["head.weight"] = torch.zeros(3, 3)
    report = check_weights(model, state)
    assert report == WeightsReport(
        missing=["stem.conv.weight", "stage.bias"],
        unexpected=["head.weight"],
        misshaped=[("fc.weight", (5, 16), (10, 16)), ("fc.bias", (5,), (10,))],
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_weights(model, state)
    assert_same_state(model.state_dict(), before)  # nothing loaded
    assert info.value.report == report
    assert isinstance(info.value, UserError)
    assert str(info.value) == "\n".join([
        "error: the state_dict does not fit small: 2 missing, 1 unexpected, 2 mis-shaped keys",
        "  missing (in the model, not in the checkpoint):",
        "    stem.conv.weight",
        "    stage.bias",
        "  unexpected (in the checkpoint, not in the model):",
        "    head.weight",
        "  mis-shaped (checkpoint vs model):",
        "    fc.weight  5x16 vs 10x16",
        "    fc.bias    5 vs 10",
    ])


def test_a_checkpoint_without_batchnorm_counters_loads_like_torch_loads_it():
    source = small()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    target = small()
    target.stem.bn.num_batches_tracked.fill_(5)
    load_weights(target, state)
    assert int(target.stem.bn.num_batches_tracked) == 0
    assert torch.equal(target.stem.conv.weight, source.stem.conv.weight)


def test_only_misshaped_keys_hint_at_other_params(tmp_path):
    path = tmp_path / "ten.pt"
    save_weights(small(num_classes=10), path)
    with pytest.raises(WeightsError) as info:
        load_weights(small(num_classes=3), path)
    text = str(info.value)
    assert text.splitlines()[0] == f"error: {path} does not fit small: 0 missing, 0 unexpected, 2 mis-shaped keys"
    assert text.splitlines()[-1].startswith("hint: ") and "params" in text.splitlines()[-1]


def test_googlenet_checkpoint_into_inception_v3_gives_a_short_report(tmp_path):
    """The counts first, then five keys of each kind and how many more: not torch's 900 lines."""
    googlenet = OrderedDict((k, torch.zeros(shape, dtype=getattr(torch, dtype)))
                            for k, shape, dtype in keys("googlenet"))
    path = tmp_path / "googlenet.pth"
    torch.save(googlenet, path)
    model = archcompiler.build(SPECS / "inception_v3.yaml")
    ours = {k: tuple(shape) for k, shape, _ in keys("inception_v3")}
    # A missing BatchNorm step counter is filled in, as torch's own loading does.
    missing = [k for k in ours if k not in googlenet and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in googlenet if k not in ours]
    assert len(missing) > 100 and len(unexpected) > 100

    with pytest.raises(WeightsError) as info:
        load_weights(model, path)
    path.unlink()  # 50 MB
    report = info.value.report
    assert report.missing == missing and report.unexpected == unexpected
    assert report.misshaped == [("fc.weight", (1000, 1024), (1000, 2048))]
    lines = str(info.value).splitlines()
    assert lines[0] == (f"error: {path} does not fit inception_v3: "
                        f"{len(missing)} missing, {len(unexpected)} unexpected, 1 mis-shaped keys")
    assert len(lines) <= 20
    assert f"    ... and {len(missing) - 5} more" in lines
    assert f"    ... and {len(unexpected) - 5} more" in lines
    assert "    fc.weight  1000x1024 vs 1000x2048" in lines
    assert lines[-1].startswith("hint: ") and "another network" in lines[-1]


def test_a_prefixed_checkpoint_hints_at_the_prefix():
    state = {"model." + k: v for k, v in small().state_dict().items()}
    with pytest.raises(WeightsError, match="starts with 'model.'"):
        load_weights(small(), state)


# ---------------------------------------------------------------------------- files that are not checkpoints


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}

    def make(name, write):
        files[name] = path = tmp_path / name
        write(path)

    make("text.pt", lambda p: p.write_text("hello, this is not a checkpoint\n"))
    make("empty.pt", lambda p: p.write_bytes(b""))
    make("list.pkl", lambda p: p.write_bytes(pickle.dumps([1, 2, 3])))
    make("list.pt", lambda p: torch.save([torch.ones(2)], p))
    make("whole_model.pt", lambda p: torch.save(torch.nn.Linear(2, 2), p))
    make("no_tensors.pt", lambda p: torch.save({"epoch": 3, "lr": 0.1}, p))
    make("empty_dict.pt", lambda p: torch.save({}, p))
    make("mixed.pt", lambda p: torch.save({"a.weight": torch.ones(2), "note": "hi"}, p))
    make("truncated.pt", lambda p: (torch.save(small().state_dict(), p), p.write_bytes(p.read_bytes()[:200])))
    make("junk.safetensors", lambda p: p.write_text("not safetensors"))
    make("a_folder", lambda p: p.mkdir())
    files["missing.pt"] = tmp_path / "missing.pt"
    return files


@pytest.mark.parametrize("name", ["text.pt", "empty.pt", "list.pkl", "list.pt", "whole_model.pt", "no_tensors.pt",
                                  "empty_dict.pt", "mixed.pt", "truncated.pt", "junk.safetensors", "a_folder",
                                  "missing.pt"])
def test_a_bad_file_is_a_one_line_user_error_naming_it(tmp_path, name):
    path = _bad_files(tmp_path)[name]
    for call in (lambda: read_checkpoint(path), lambda: load_weights(small(), path),
                 lambda: load_weights(small(), str(path))):
        with pytest.raises(UserError) as info:
            call()
        assert not isinstance(info.value, WeightsError)
        text = str(info.value)
        assert str(path) in text and "\n" not in text and info.value.hint, text


# ---------------------------------------------------------------------------- reference checkpoints

# These specs are saved as safetensors files, the rest with torch.save (both as the reference libraries
# publish them). vgg16 (138M parameters, ~550 MB) goes through a file like the others; it is deleted
# as soon as it is loaded.
SAFETENSORS = {"vgg16", "inception_v4"}
# For these, the loaded model is saved again and must have the reference's layout.
SAVE_AGAIN = {"googlenet", "resnet50"}


@pytest.fixture(scope="module", params=sorted(REFERENCES))
def zoo(request):
    """(reference name, a model built once from its spec)."""
    return REFERENCES[request.param], archcompiler.build(SPECS / f"{request.param}.yaml")


def test_reference_checkpoint_loads_and_gives_the_reference_logits(zoo, tmp_path):
    """A checkpoint as torchvision/timm write it: their keys, shapes and dtypes, in their order."""
    name, model = zoo
    state = reference_state(name)  # computed once per session, shared with test_zoo_reference
    path = tmp_path / (f"{name}.safetensors" if name in SAFETENSORS else f"{name}.pth")
    if name in SAFETENSORS:
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)
    try:
        load_weights(model, path)
    finally:
        path.unlink()
    model.eval()
    with torch.no_grad():
        out = model(reference_input(name))
    assert relative_error(out, torch.tensor(facts(name)["logits"])) < 1e-4

    if name in SAVE_AGAIN:
        again = tmp_path / f"{name}.pt"
        save_weights(model, again)
        layout = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in read_checkpoint(again).items()]
        again.unlink()
        assert layout == keys(name)
