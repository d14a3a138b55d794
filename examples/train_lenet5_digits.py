"""Train LeNet-5 (specs/lenet5.yaml) on scikit-learn's handwritten digits.

In: scikit-learn's bundled digits data set (1,797 8x8 images with 17 grey
levels, no download), split once into 1,347 training and 450 test images
(stratified, ``random_state=0``, whatever ``--seed`` is).  Out: the test
accuracy on stdout, and a PNG of the loss and accuracy per epoch (``--out``).

    .venv/bin/python examples/train_lenet5_digits.py            # 30 epochs: ~99 % in 15-30 s
    .venv/bin/python examples/train_lenet5_digits.py --seed 3 --out build/seed3.png
    .venv/bin/python examples/train_lenet5_digits.py --epochs 1 --limit 200   # a smoke run

The network is compiled from the spec with `archcompiler.build`; nothing
about it is changed here.  Each 8x8 image is upsampled (bilinear) to 24x24
and padded to 32x32, so the digit sits in the middle of the input with a
4-pixel border, much as MNIST's 20x20 digits sit in the middle of LeNet-5's
32x32 input (section III.A); pixels are scaled to the paper's -0.1
(background) .. 1.175 (foreground) (section II.B).  Training shifts each image by up to 2
pixels (a random crop of the 32x32 image padded with background).

LeNet-5's output is ten RBF *penalties* (squared distances to fixed
prototypes, smaller is better).  The loss is cross-entropy on their
negation, `archcompiler.training.penalty_logits`: the paper's MAP criterion
(eq. 9) without its constant rubbish-class term.  The optimiser is Adam
with a cosine learning-rate decay, not the paper's stochastic diagonal
Levenberg-Marquardt.

A run is deterministic given ``--seed`` and the number of threads
(``--threads``, default 1; other thread counts may order floating-point sums
differently).  One thread is also the fastest: the layers are too small to
split, and a second thread that has to wait for a busy core makes every step
wait with it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import archcompiler  # noqa: E402
from archcompiler.training import aux_loss, penalty_logits  # noqa: E402

SPEC = ROOT / "specs" / "lenet5.yaml"
BACKGROUND, FOREGROUND = -0.1, 1.175  # LeCun et al. 1998, section II.B


@dataclass
class History:
    """Per-epoch metrics; accuracies are fractions."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0


def load_digits_split(test_size: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 1x32x32 images and int64 labels, a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=test_size, stratify=digits.target, random_state=0)
    return to_lenet_input(x_train), torch.as_tensor(y_train), to_lenet_input(x_test), torch.as_tensor(y_test)


def to_lenet_input(images) -> torch.Tensor:
    """N x 8 x 8 grey levels 0..16 -> N x 1 x 32 x 32 in [-0.1, 1.175], the digit in the middle 24x24."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    x = F.pad(x, (4, 4, 4, 4))
    return BACKGROUND + (FOREGROUND - BACKGROUND) * x


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `max_shift` pixels in each direction, filling with background."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=BACKGROUND)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, 1, h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, 1, h, w)
    return out.gather(3, cols)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = penalty_logits(model(x[i:i + batch_size]))
        loss += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    return loss / len(x), correct / len(x)


def train(epochs: int = 30, seed: int = 0, batch_size: int = 32, lr: float = 1e-3, limit: int | None = None,
          max_shift: int = 2, progress: bool = True) -> tuple[torch.nn.Module, History]:
    """Train LeNet-5 on the digits' training split; evaluate on the test split after every epoch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_split()
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    model = archcompiler.build(SPEC, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    history = History(n_train=len(x_train), n_test=len(x_test))
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("LeNet-5", total=epochs * steps_per_epoch, status="")
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total, correct = 0.0, 0
            for i in range(0, len(x_train), batch_size):
                idx = order[i:i + batch_size]
                x, y = random_shift(x_train[idx], max_shift, generator), y_train[idx]
                logits = penalty_logits(model(x))
                loss = aux_loss(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                bar.advance(task)
            history.train_loss.append(total / len(x_train))
            history.train_acc.append(correct / len(x_train))
            test_loss, test_acc = evaluate(model, x_test, y_test)
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
            bar.update(task, description=f"epoch {epoch + 1}/{epochs}",
                       status=f"loss {history.train_loss[-1]:.3f}  test acc {100 * test_acc:.2f} %")
    return model, history


def plot(history: History, path: Path, title: str = "LeNet-5 on scikit-learn digits") -> None:
    """Loss (left) and accuracy (right) per epoch, train and test, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(history.train_loss) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    train_label = "train (running mean, shifted images)"
    ax_loss.plot(epochs, history.train_loss, marker=".", label=train_label)
    ax_loss.plot(epochs, history.test_loss, marker=".", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy on -penalties", yscale="log", title="loss")
    ax_acc.plot(epochs, [100 * a for a in history.train_acc], marker=".", label=train_label)
    ax_acc.plot(epochs, [100 * a for a in history.test_acc], marker=".", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training split (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="weights, shuffling and shifts (default 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "lenet5_digits.png",
                        help="PNG of loss and accuracy per epoch (default build/lenet5_digits.png)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="train on the first N training images only (a quick smoke run)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate (default 1e-3)")
    parser.add_argument("--max-shift", type=int, default=2, help="random shift in pixels while training (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: LeNet-5's layers are too small to gain from more, "
                             "and extra threads slow it down badly on a busy machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    _, history = train(args.epochs, args.seed, args.batch_size, args.lr, args.limit, args.max_shift,
                       progress=not args.no_progress)
    seconds = time.perf_counter() - start
    plot(history, args.out)
    n_test = history.n_test
    print(f"test accuracy: {100 * history.test_acc[-1]:.2f} % "
          f"({round(history.test_acc[-1] * n_test)}/{n_test} test images)")
    print(f"train loss {history.train_loss[-1]:.4f}, test loss {history.test_loss[-1]:.4f}, "
          f"{args.epochs} epochs in {seconds:.1f} s on {torch.get_num_threads()} threads, seed {args.seed}")
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
