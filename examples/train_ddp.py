"""Data-parallel training of a compiled spec: DistributedDataParallel or FSDP2.

Launch one process per device with torchrun; on CPUs the processes talk
through gloo, on GPUs through NCCL (``--backend auto`` picks NCCL when CUDA
is available):

    .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        examples/train_ddp.py --steps 40 --out build/ddp
    .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 8 \\
        examples/train_ddp.py --spec specs/googlenet.yaml --set num_classes=10 \\
        --data synthetic --wrap fsdp                          # a GPU node

In: a spec (default specs/lenet5.yaml; ``--set K=V`` for its parameters)
and a data set: scikit-learn's digits (1x32x32, as in
examples/train_lenet5_digits.py) or a fixed synthetic one of the spec's
input shape (``--data synthetic``).  Every rank builds the model from the
same seed, trains on its own shard of every epoch (`DistributedSampler`)
and averages gradients with the other ranks in ``backward()``.
``--wrap ddp`` (default) wraps the model in DistributedDataParallel (which
also broadcasts rank 0's parameters and buffers when it wraps the model);
``--wrap fsdp`` shards it with FSDP2's ``fully_shard``, one unit per group
of `archcompiler.training.layer_groups` (a block instance's layers).

Out: with ``--out DIR``, one ``DIR/rank{R}.json`` per rank: its loss at
every step, the mean loss over all ranks at every step, a SHA-256 and the
norm of its final (for FSDP: gathered) parameters, which must be the same
on every rank, and a SHA-256 of its buffers, which may differ (BatchNorm's
running statistics see each rank's own batches); rank 0 prints the losses
and, for digits, the test accuracy.

The loss is `archcompiler.training.losses`: the main head plus 0.3 x each
auxiliary head for specs with training-only outputs (GoogLeNet's aux1 and
aux2), plain cross-entropy otherwise; RBF penalties (LeNet-5) are turned
into logits with `penalty_logits` first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import archcompiler  # noqa: E402
from archcompiler.training import layer_groups, losses, main_output, penalty_logits  # noqa: E402


def parse_value(text: str) -> Any:
    """`--set` values: ints, floats, true/false, else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def outputs_penalties(model: torch.nn.Module) -> bool:
    """Whether the model's main output is an RBF layer (penalties, smaller is better)."""
    graph = model.graph
    main = next(iter(graph.outputs.values()))
    return graph.nodes[main.node].op == "rbf"


def datasets(kind: str, input_shape: tuple[int, ...], num_classes: int, seed: int,
             size: int) -> tuple[TensorDataset, TensorDataset | None]:
    """(train, test): the digits split, or `size` fixed random images with random labels (no test set)."""
    if kind == "digits":
        if tuple(input_shape) != (1, 32, 32):
            raise SystemExit(f"--data digits needs a 1x32x32 input, the spec has {input_shape}; use --data synthetic")
        sys.path.insert(0, str(ROOT / "examples"))
        from train_lenet5_digits import load_digits_split

        x_train, y_train, x_test, y_test = load_digits_split()
        return TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((size, *input_shape), generator=generator)
    y = torch.randint(0, num_classes, (size,), generator=generator)
    return TensorDataset(x, y), None


def sha256(named_tensors) -> str:
    """SHA-256 of (name, tensor) pairs: the names and the tensors' bytes on the CPU, in order."""
    digest = hashlib.sha256()
    for name, value in named_tensors:
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def wrap(model: torch.nn.Module, kind: str, device: torch.device) -> torch.nn.Module:
    """The data-parallel model: DDP around it, or FSDP2 sharding it in place."""
    if kind == "ddp":
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for group in layer_groups(model).values():  # one unit per block instance; never a Container
        fully_shard(group)
    fully_shard(model)  # the root: whatever is left, and the forward's entry hook
    return model


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter as a plain tensor: FSDP's DTensor shards gathered (a collective: every rank calls it)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "lenet5.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="a spec parameter")
    parser.add_argument("--data", choices=["digits", "synthetic"], default="digits")
    parser.add_argument("--synthetic-size", type=int, default=64, help="images in the synthetic data set")
    parser.add_argument("--wrap", choices=["ddp", "fsdp"], default="ddp",
                        help="DistributedDataParallel (default) or FSDP2's fully_shard, one unit per block")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps (default 40)")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank (default 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--aux-weight", type=float, default=0.3, help="weight of each auxiliary head's loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto")
    parser.add_argument("--out", type=Path, default=None, help="write DIR/rank{R}.json")
    args = parser.parse_args(argv)

    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend)  # rank, world size and rendezvous from torchrun's environment
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        params = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
        torch.manual_seed(args.seed)  # dropout; the same stream on every rank is fine
        model = archcompiler.build(args.spec, seed=args.seed, **params).to(device)
        penalties = outputs_penalties(model)
        num_classes = model.graph.nodes[next(iter(model.graph.outputs.values())).node].shape[0]
        train_set, test_set = datasets(args.data, model.graph.input_shape, num_classes, args.seed,
                                       args.synthetic_size)
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                     drop_last=True)
        loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True)
        parallel = wrap(model, args.wrap, device)
        optimizer = torch.optim.Adam(parallel.parameters(), lr=args.lr)

        local_losses: list[float] = []
        mean_losses: list[float] = []
        heads_seen: list[str] = []
        epoch = 0
        parallel.train()
        while len(local_losses) < args.steps:
            sampler.set_epoch(epoch)  # a new shuffle per epoch, the same on every rank
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                out = parallel(x)
                if penalties:
                    out = penalty_logits(out)
                parts = losses(out, y, aux_weight=args.aux_weight)
                heads_seen = list(parts.parts)
                optimizer.zero_grad(set_to_none=True)
                parts.total.backward()  # gradients are averaged over the ranks here
                optimizer.step()
                loss = parts.total.detach()
                local_losses.append(loss.item())
                dist.all_reduce(loss)  # a sum (gloo has no AVG)
                mean_losses.append(loss.item() / world)
                if len(local_losses) == args.steps:
                    break
            epoch += 1

        accuracy = None
        if test_set is not None:  # every rank: DDP broadcasts buffers and FSDP gathers parameters in forward
            parallel.eval()
            with torch.no_grad():
                x, y = (t.to(device) for t in test_set.tensors)
                logits = main_output(parallel(x))
                logits = penalty_logits(logits) if penalties else logits
                accuracy = (logits.argmax(1) == y).float().mean().item()
        named_params = [(name, full(p)) for name, p in model.named_parameters()]
        record = {
            "rank": rank, "world_size": world, "backend": backend, "wrap": args.wrap, "spec": str(args.spec),
            "heads": heads_seen, "losses": local_losses, "mean_losses": mean_losses,
            "params_sha256": sha256(named_params),
            "params_norm": float(torch.cat([p.detach().flatten() for _, p in named_params]).norm()),
            # BatchNorm's running statistics: DDP copies rank 0's buffers to every rank at the start of each
            # forward, so they differ only by the last step's local batch; FSDP leaves them per rank.
            "buffers_sha256": sha256(model.named_buffers()),
            "test_accuracy": accuracy,
        }
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))
        if rank == 0:
            print(f"{args.wrap.upper()} on {world} ranks ({backend}), {args.steps} steps of {args.batch_size} "
                  f"per rank, heads {', '.join(heads_seen)}: mean loss {mean_losses[0]:.4f} -> {mean_losses[-1]:.4f}")
            if accuracy is not None:
                print(f"test accuracy: {100 * accuracy:.2f} %")
            print(f"parameters sha256 {record['params_sha256'][:16]}...")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
