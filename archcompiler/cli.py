"""The `archc` command line: check, build, summary, draw, schema.

Each command runs the pipeline as far as it needs and prints the result.
A mistake of the user's prints one line `PATH:LINE:COL: error: MESSAGE` on
stderr and exits 2; an internal fault exits 1 with a traceback.  Only
`build` imports torch.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .artifacts import check_target, write_file, write_files
from .errors import UserError, shorten


class _Archc(typer.core.TyperGroup):
    """The command group: every usage error (a missing argument, an unknown option) is one line,
    `archc: error: MESSAGE (hint: ...)`, on stderr with exit status 2, like archc's own option errors."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from typer._click import exceptions as click

        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.NoArgsIsHelpError as exc:  # `archc` alone: the help
            exc.show()
            sys.exit(0)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "archc"
            typer.echo(shorten(f"archc: error: {exc.format_message()} (hint: see '{command} -h')", 600), err=True)
            sys.exit(2)
        except click.ClickException as exc:
            typer.echo(f"archc: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("archc: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def format_help(self, ctx: Any, formatter: Any) -> Any:
        _types_in_words(self, ctx)
        return super().format_help(ctx, formatter)


app = typer.Typer(
    name="archc",
    cls=_Archc,
    help="Compile declarative YAML specs of convolutional networks: validate them, infer every shape, "
    "count parameters and multiply-adds, draw them, and build runnable torch.nn.Modules.\n\n"
    "Example: archc summary resnet18 --depth 1",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SPEC_ARG = typer.Argument(..., help="Path of the spec file (YAML), e.g. specs/googlenet.yaml, or a zoo model's "
                          "name, e.g. resnet18 (see `archc list`).", show_default=False)
SET_OPT = typer.Option(
    None, "--set", metavar="KEY=VALUE",
    help="Override a spec parameter, e.g. --set num_classes=10 --set aux_logits=false (repeatable).",
)


def _user_errors(command: Callable) -> Callable:
    """Turn UserError into one line on stderr and exit 2; anything else is our fault: exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            located = getattr(exc, "loc", None) is not None  # a spec's error: PATH:LINE:COL: error: ...
            typer.echo(str(exc) if located else f"archc: {exc}", err=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # `archc schema | head`: the reader has gone, which is fine
            sys.stderr.close()
            raise typer.Exit(0) from None
        except Exception:  # noqa: BLE001 - report an internal fault with its traceback
            traceback.print_exc()
            typer.echo("archc: internal error (a bug in archc, not in your spec); please report it", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"archc {__version__}")
        raise typer.Exit(0)


# What the help shows for an option's value, in words (typer's own are Python types: `<list[str]>`).
_TYPE_WORDS = {"int": "N", "float": "NUMBER", "Path": "PATH", "str": "TEXT", "list[str]": "TEXT",
               "list[Path]": "PATH", "bool": ""}


def _types_in_words(group: Any, ctx: Any) -> None:
    """Give every option and argument of every command a metavar in words; flags get none."""
    from typer.core import TyperArgument

    for command in [group, *getattr(group, "commands", {}).values()]:
        for param in [*command.params, command.get_help_option(ctx)]:
            if param is None:
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif isinstance(param, TyperArgument):
                param.metavar = param.metavar or param.name.upper()
                word = _TYPE_WORDS.get(param.bare_type(), "TEXT")
                param.display_type_rich = lambda ctx, word=word: word  # `<path>` -> PATH
            elif param.metavar is None:
                kind = param.bare_type()
                param.metavar = _TYPE_WORDS.get(kind, kind.upper())


@app.callback()
@_user_errors
def _load_plugins(
    ctx: typer.Context,
    plugin: Optional[List[str]] = typer.Option(
        None, "--plugin", metavar="MODULE",
        help="Import this plugin module (one that registers its own ops, see docs/extending.md) before the "
        "command runs; repeatable. Installed plugins (entry points in 'archc.ops') and the modules named in "
        "ARCHC_PLUGINS (comma-separated) are loaded too.",
    ),
    version: bool = typer.Option(False, "--version", "-V", callback=_show_version, is_eager=True,
                                 help="Print archc's version and exit."),
) -> None:
    """Compile declarative YAML specs of convolutional networks."""
    from .plugins import load_plugins

    _types_in_words(ctx.command, ctx)  # before a command's --help is shown
    load_plugins(plugin or ())


def parse_overrides(pairs: Optional[List[str]]) -> dict[str, Any]:
    """`["num_classes=10", "aux_logits=false"]` -> {"num_classes": 10, "aux_logits": False}."""
    from .errors import SpecError, shown
    from .source import InvalidYAML, parse_value

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {shown(pair)}", hint="e.g. --set num_classes=10")
        name = key.strip()
        # Read as a spec's values are, with the same bounds (digits, depth, tags): yaml.safe_load
        # would raise on `!!int 1.5`, a 5,000-digit integer or a 100,000-deep `[[[...`.
        try:
            value = parse_value(text, "--set") if text.strip() else ""
        except InvalidYAML:  # not YAML at all (`a: b: c`): the text as it stands
            value = text
        except SpecError as exc:
            raise UserError(f"--set {shorten(name)}: {exc.message}", hint=exc.hint) from None
        if isinstance(value, (dict, list)):
            raise UserError(f"--set {shorten(name)}: the value must be a single number, true/false or a word")
        out[name] = value
    return out


MAX_MEMORY_OPT = typer.Option(
    None, "--max-memory", metavar="SIZE",
    help="Refuse a network whose weights plus one batch of activations (fp32) need more than SIZE, "
    "e.g. --max-memory 32GiB (default 8GiB; units B, KB, MB, GB or KiB, MiB, GiB, TiB).",
)


def _graph(spec: Path, overrides: Optional[List[str]], input_shape: Optional[tuple[int, ...]] = None,
           max_memory: Optional[str] = None):
    from . import compile_graph

    return compile_graph(spec, input_shape=input_shape, max_memory=_memory_limit(max_memory),
                         **parse_overrides(overrides))


def _memory_limit(text: Optional[str]) -> int:
    """--max-memory's bytes: the default, or the size it names."""
    from .limits import DEFAULT_MAX_MEMORY, parse_size

    return DEFAULT_MAX_MEMORY if text is None else parse_size(text)


def _depth(text: Optional[str]) -> Optional[int]:
    if text is None or text == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--depth takes a whole number or 'full', got '{shorten(text)}'") from None
    if value < 1:
        raise UserError(f"--depth must be at least 1, got {value}")
    return value


def _console():
    from rich.console import Console

    return Console(stderr=True)


class Steps:
    """A long command's steps as rich progress on stderr, shown once it has run `delay` seconds.

    Only on a terminal (unless `console` says otherwise); transient, so nothing stays behind.
    """

    def __init__(self, total: int, delay: float = 1.0, console: Any = None):
        import threading

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = console or _console()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
                                 disable=not console.is_terminal)
        self.task = self.progress.add_task("starting", total=total)
        self.timer = threading.Timer(delay, self.progress.start)
        self.timer.daemon = True

    def __enter__(self) -> "Steps":
        self.timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.timer.cancel()
        self.timer.join()
        self.progress.stop()

    def step(self, text: str) -> Any:
        """A context for one step: its description while it runs, one more done when it ends."""
        from contextlib import contextmanager

        @contextmanager
        def running():
            self.progress.update(self.task, description=text)
            yield
            self.progress.advance(self.task)

        return running()


@app.command()
@_user_errors
def check(spec: Path = SPEC_ARG, set_: Optional[List[str]] = SET_OPT,
          max_memory: Optional[str] = MAX_MEMORY_OPT) -> None:
    """Validate SPEC, infer every layer's output shape and check that it fits --max-memory (no torch).

    Example: archc check specs/googlenet.yaml --set num_classes=10
    """
    graph = _graph(spec, set_, max_memory=max_memory)
    outs = ", ".join(f"{o.name} {'x'.join(map(str, graph.nodes[o.node].shape))}" for o in graph.outputs.values())
    typer.echo(f"{spec}: ok: {graph.name}, {plural(len(graph.nodes), 'layer')}, "
               f"{plural(len(graph.scopes), 'block or group', 'blocks and groups')}; outputs: {outs}")


def plural(n: int, one: str, many: Optional[str] = None) -> str:
    """`1 layer`, `2 layers`; `many` where the plural is not one + s."""
    return f"{n:,} {one}" if n == 1 else f"{n:,} {many or one + 's'}"


INPUT_OPT = typer.Option(None, "--input", help="Replace the spec's input shape, e.g. --input 3,448,448 (C,H,W).",
                         show_default=False)


def parse_input(text: Optional[str], option: str = "--input") -> Optional[tuple[int, ...]]:
    """`"3,448,448"` -> (3, 448, 448); `option` names the option in the error."""
    if text is None:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    # ASCII digits only (`isdigit` takes '²', which int() refuses), and few enough for a size.
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 18 and int(p) > 0 for p in parts):
        raise UserError(f"{option} expects three positive sizes C,H,W, got '{shorten(text)}'",
                        hint=f"e.g. {option} 3,224,224")
    return tuple(int(p) for p in parts)


def _counting_doc(command: Callable) -> Callable:
    """Fill `{counted}` in a command's help with the ops MACs count, from the registry."""
    from .ops import counting_convention

    command.__doc__ = (command.__doc__ or "").replace("{counted}", counting_convention())
    return command


@app.command()
@_user_errors
@_counting_doc
def summary(
    spec: Path = SPEC_ARG,
    format: str = typer.Option("table", "--format", "-f", help="table, json, csv, markdown or latex (booktabs)."),
    depth: Optional[str] = typer.Option(None, "--depth", "-d", metavar="N",
                                        help="Fold rows nested deeper than N into their block's row, or 'full' "
                                        "for every layer (default: the table and Markdown show every row down to "
                                        "the outermost block instances; JSON and CSV show every row)."),
    units: str = typer.Option("raw", "--units", help="raw (exact integers) or si (13.0M, 1.50G, 52.0 MB)."),
    columns: Optional[str] = typer.Option(None, "--columns", "-c", metavar="LIST",
                                          help="The table's columns, comma-separated, from: op, output, kernel, "
                                          "params, params_percent, buffers, macs, act, rf; torchinfo's ids "
                                          "output_size, num_params, mult_adds, kernel_size work too, e.g. "
                                          "--columns output_size,num_params,mult_adds. Default: all but kernel "
                                          "and params_percent, fitted to the terminal's width."),
    count_as: str = typer.Option("macs", "--count", metavar="macs|flops",
                                 help="Count multiply-accumulates (MACs) or FLOPs (= 2 x MACs, labelled FLOPs)."),
    include: Optional[str] = typer.Option(None, "--include", metavar="LIST",
                                          help="Also count these kinds of work, comma-separated, from: bias (bias "
                                          "adds), norm (BatchNorm, LayerNorm, LRN), act (activations), pool "
                                          "(pooling), add (elementwise joins), e.g. --include bias,norm. "
                                          "See docs/summaries.md."),
    like: Optional[str] = typer.Option(None, "--like", metavar="fvcore|torchinfo|ptflops",
                                       help="Count what that tool counts, so that the total is its total: "
                                       "fvcore's FlopCountAnalysis, torchinfo's total mult-adds, ptflops' MACs "
                                       "(pytorch backend), e.g. archc summary resnet50 --like fvcore."),
    input_: Optional[str] = INPUT_OPT,
    batch: int = typer.Option(1, "--batch", "-b", help="Batch size: scales MACs and activation memory."),
    paper: bool = typer.Option(False, "--paper", help="The papers' table form (GoogLeNet's Table 1): one row per "
                               "top-level layer or module, with the width of each Inception branch."),
    outputs: Optional[str] = typer.Option(None, "--outputs", help="Summarise the feature extractor returning these "
                                          "layers or blocks (comma-separated), e.g. --outputs layer2,layer3,layer4; "
                                          "each one's channels and stride are listed."),
    train: bool = typer.Option(False, "--train", help="Training memory instead: parameters, gradients, optimizer "
                               "state and the activations autograd saves for backward, per layer and in total, "
                               "for --batch samples, e.g. archc summary resnet18 --train --optimizer adam."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", metavar="sgd|momentum|adam|adamw",
                                            help="With --train: the optimizer whose state counts (sgd none, "
                                            "momentum one buffer per parameter, adam and adamw two). Default: adam."),
    dtype: Optional[str] = typer.Option(None, "--dtype", metavar="fp32|bf16|fp16",
                                        help="With --train: the dtype the whole model is cast to. Default: fp32."),
    max_memory: Optional[str] = MAX_MEMORY_OPT,
    set_: Optional[List[str]] = SET_OPT,
) -> None:
    """Print parameters, MACs, activation memory, receptive field and output shape of every block and layer.

    Static (no torch, no forward pass). MACs are multiply-accumulates of
    {counted} layers, the quantity fvcore calls flops; BatchNorm,
    pooling, activations and adds count zero, unless --include adds them
    or --like counts as fvcore, torchinfo or ptflops does (archc summary
    resnet50 --like fvcore prints fvcore's total). See docs/summaries.md.

    Example: archc summary resnet18 --units si --columns output_size,num_params,mult_adds
    """
    from . import report
    from .analysis import analyze, counting

    if format not in report.FORMATS:
        raise UserError(f"--format must be one of {', '.join(report.FORMATS)}, got '{shorten(format)}'")
    if units not in report.UNITS:
        raise UserError(f"--units must be raw or si, got '{shorten(units)}'")
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    if not train and (optimizer is not None or dtype is not None):
        raise UserError(f"{'--optimizer' if optimizer is not None else '--dtype'} applies to training memory only",
                        hint="add --train")
    if train:
        from . import memory

        memory.check_options(optimizer or "adam", dtype or "fp32", batch)
        if paper:
            raise UserError("--paper and --train are two different tables; choose one")
    graph = _graph(spec, set_, parse_input(input_), max_memory)
    if outputs:
        from .graph import select_outputs

        graph = select_outputs(graph, [name.strip() for name in outputs.split(",") if name.strip()])
    if train:
        mem = memory.training_memory(graph, optimizer=optimizer or "adam", dtype=dtype or "fp32", batch=batch)
        d = _depth(depth) if depth is not None else (report.MODULES if format in ("table", "markdown", "latex") else None)
        if format == "table":
            width = _width()
            _print(memory.to_table(mem, d, units, width=width, columns=memory.parse_columns(columns)), width)
        else:
            _print(memory.RENDERERS[format](mem, d, units))
        return
    rep = analyze(graph, batch=batch, counting=counting(include, like))
    report.measure(count_as)  # refuses anything but macs or flops
    cols = report.parse_columns(columns)
    d = _depth(depth) if depth is not None else (report.MODULES if format in ("table", "markdown", "latex") else None)
    if paper:
        from . import paper as paper_table

        table = paper_table.paper_table(graph, rep)
        renderers = {"table": paper_table.to_table, "json": paper_table.to_json, "csv": paper_table.to_csv,
                     "markdown": paper_table.to_markdown, "latex": paper_table.to_latex}
        out = renderers[format](table, units)
    elif format == "table":
        width = _width()
        _print(report.to_table(rep, d, units, width=width, columns=cols, count_as=count_as), width)
        return
    else:
        out = {"json": lambda: report.to_json(rep, d, count_as), "csv": lambda: report.to_csv(rep, d, count_as),
               "markdown": lambda: report.to_markdown(rep, d, units, count_as),
               "latex": lambda: report.to_latex(rep, d, units, count_as)}[format]()
    _print(out)


PIPED_WIDTH = 100  # the table's width when stdout is not a terminal and COLUMNS is not set


def _width() -> int:
    """The width to fit tables to: COLUMNS if set, else the terminal's, else PIPED_WIDTH."""
    import os

    text = os.environ.get("COLUMNS", "").strip()
    if text.isascii() and text.isdigit() and 20 <= int(text) <= 10_000:
        return int(text)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((PIPED_WIDTH, 24)).columns
    return PIPED_WIDTH


def _print(out: Any, width: Optional[int] = None) -> None:
    """Write a string as is, or a rich renderable: `width` wide, or as wide as it needs when piped."""
    if isinstance(out, str):
        sys.stdout.write(out + ("" if out.endswith("\n") else "\n"))
        return
    from rich.console import Console
    from rich.measure import Measurement

    if width is not None:
        Console(width=width).print(out)
        return
    console = Console()
    if not console.is_terminal:  # piped into a file: as wide as the table needs, never squeezed
        wide = Console(width=10_000)
        console = Console(width=Measurement.get(wide, wide.options, out).maximum)
    console.print(out)


@app.command()
@_user_errors
def draw(
    spec: Path = SPEC_ARG,
    output: Path = typer.Option(..., "--output", "-o",
                                help="Output file; the format comes from its extension: .svg, .png, .pdf or .dot."),
    depth: str = typer.Option("1", "--depth", "-d", help="Open modules down to depth N (1: one box per top-level "
                              "block instance or repeat), or 'full' for every layer."),
    expand: Optional[List[str]] = typer.Option(None, "--expand", "-e", help="Open this module (a block instance, "
                                               "repeat or container, by its dotted name); repeatable."),
    unroll: Optional[List[str]] = typer.Option(None, "--unroll", help="Draw this repeat (or run of identical "
                                               "block instances, by any of its names) copy by copy; repeatable."),
    block: Optional[str] = typer.Option(None, "--block", help="Draw one block template on its own, every layer, "
                                        "the way the papers draw a module: by its name, its instance with the most "
                                        "layers (optional parts and residual drawn); or one instance by its dotted "
                                        "name."),
    rankdir: str = typer.Option("TB", "--rankdir", help="TB (top to bottom) or LR (left to right)."),
    annotate: Optional[str] = typer.Option(None, "--annotate", help="Add a line of counts to every box, totals in "
                                           "the legend: any of params, macs, rf, comma-separated."),
    dpi: Optional[int] = typer.Option(None, "--dpi", min=10, max=1200, help="Resolution of a PNG (default 96)."),
    page: Optional[str] = typer.Option(None, "--page", help="A4, A5 or letter: lay the figure out for print "
                                       "(8 pt text, shapes in the boxes), an overview wrapped into as many columns "
                                       "as fit that page's text area; refused, with its size, if it does not fit."),
    input_: Optional[str] = INPUT_OPT,
    max_memory: Optional[str] = MAX_MEMORY_OPT,
    set_: Optional[List[str]] = SET_OPT,
) -> None:
    """Draw SPEC with Graphviz: one box per module, tensor shapes on the edges, colours by op kind.

    Modules (block instances, repeats, concat/add/residual containers) are
    boxes at the chosen depth and labelled clusters when opened; a repeat,
    or a run of identical blocks, stays one box until --unroll opens it.
    Branches keep the spec's order left to right. No torch.
    """
    from .draw import ANNOTATIONS, FORMATS, render, repeat_runs

    fmt = output.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UserError(f"cannot tell the format of '{output}'", hint=f"end the file name in .{', .'.join(FORMATS)}")
    if rankdir not in ("TB", "LR"):
        raise UserError(f"--rankdir must be TB or LR, got '{shorten(rankdir)}'")
    counts = [part.strip() for part in (annotate or "").split(",") if part.strip()]
    for part in counts:
        if part not in ANNOTATIONS:
            raise UserError(f"--annotate takes {', '.join(ANNOTATIONS)}, got '{shorten(part)}'")
    graph = _graph(spec, set_, parse_input(input_), max_memory)
    unknown = [name for name in expand or () if name not in graph.scopes]
    if unknown:
        raise UserError(f"--expand {unknown[0]}: '{graph.name}' has no module of that name",
                        hint="use a dotted name from `archc summary`, e.g. " + next(iter(graph.scopes), "stage"))
    folded = {m for members in repeat_runs(graph).values() for m in members}
    folded |= {s.id for s in graph.scopes.values() if s.parent in folded}
    for name in unroll or ():
        if name not in folded:
            raise UserError(f"--unroll {name}: '{graph.name}' has no repeat of that name",
                            hint="its repeats are: " + (", ".join(sorted(repeat_runs(graph))) or "none"))
    data = render(graph, fmt, _depth(depth), rankdir, expand or (), block, unroll or (), counts, dpi, page)
    write_file(output, data)
    typer.echo(f"wrote {output}")


EMIT_FORMATS = {"python": ".py", "onnx": ".onnx", "torchscript": ".torchscript.pt", "exported": ".pt2"}


def _emitted(model: Any, kind: str, spec: Path) -> bytes:
    if kind == "python":
        from .emit import emit_python

        return emit_python(model.graph, str(spec)).encode()
    from .export import export

    return export(model, kind)


@app.command()
@_user_errors
def build(
    spec: Path = SPEC_ARG,
    out_dir: Optional[Path] = typer.Option(None, "--output", "-o", help="Directory for the artifacts (default: build/NAME/)."),
    seed: int = typer.Option(0, help="Seed of the weight initialisation."),
    batch: int = typer.Option(2, help="Batch size of the self-check forward pass."),
    emit: Optional[List[str]] = typer.Option(None, "--emit", help="Also write the model as: python (standalone "
                                             "PyTorch source, NAME.py), onnx (NAME.onnx, opset 17), torchscript "
                                             "(NAME.torchscript.pt), exported (torch.export, NAME.pt2); repeatable."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Load this checkpoint, strictly: a state_dict "
                                           "(.pt/.pth), a dict holding one under 'state_dict' or 'model', or a "
                                           ".safetensors file; a mismatch prints a short report of the keys."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the model's weights (initialised, or loaded "
                                        "with --weights) to this file: .safetensors, or a torch state_dict."),
    optimize: bool = typer.Option(False, "--optimize", help="Write an inference build: BatchNorm folded into "
                                  "the conv and linear weights, activations in place, eval mode only. Its "
                                  "weights (--save) are not a checkpoint of the spec's network: keep the eager "
                                  "one and rebuild from it (--weights CKPT --optimize)."),
    max_memory: Optional[str] = MAX_MEMORY_OPT,
    set_: Optional[List[str]] = SET_OPT,
) -> None:
    """Compile SPEC to a torch model, check every runtime shape against the inferred one, write artifacts.

    The artifacts are summary.json (the `summary --format json` report),
    NAME.svg (the diagram; NAME.dot when Graphviz is not installed),
    forward.py (the generated forward, for reading) and what --emit asks
    for.  They are written together: on any error nothing in the directory
    changes.  Other files in it are left as they are.  --weights loads a
    checkpoint first; --save writes the weights.  --optimize writes the same
    artifacts from the inference build of the model (after --weights), and
    says so; --emit python, the standalone source of the spec's network, is
    then refused.

    Example: archc build resnet50 --set num_classes=10 --emit python -o build/r50
    """
    from . import report
    from .analysis import analyze
    from .draw import render
    from .limits import check_memory

    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    for kind in emit or ():
        if kind not in EMIT_FORMATS:
            raise UserError(f"--emit must be one of {', '.join(EMIT_FORMATS)}, got '{shorten(kind)}'")
    # A path that cannot be written is refused now, not after the compile (and, for --save, not after
    # the artifacts are written).
    if out_dir is not None:
        check_target(out_dir, directory=True)
    if save is not None:
        check_target(save)
    if optimize and "python" in (emit or ()):
        raise UserError("--emit python writes the spec's eager network, not an inference build; "
                        "leave out --optimize, or emit onnx, torchscript or exported")
    with Steps(4 + (weights is not None) + optimize) as steps:
        with steps.step("validating and inferring shapes"):
            graph = _graph(spec, set_, max_memory=max_memory)
            # The self-check's batch needs more than the one sample `_graph` checked.
            check_memory(graph, _memory_limit(max_memory), batch)
            rep = analyze(graph)
        with steps.step(f"building {graph.name} ({plural(rep.total_params, 'parameter')})"):
            from .lower import lower, shape_mismatches

            model = lower(graph, seed=seed)
        if weights is not None:
            from .checkpoints import load_weights

            with steps.step(f"loading {weights}"):
                load_weights(model, weights)
        eager = model
        if optimize:
            from .optimize import inference_model

            with steps.step("folding BatchNorm into the weights (an inference build)"):
                model = inference_model(eager)
        with steps.step(f"checking a forward pass on a batch of {batch}"):
            mismatches = shape_mismatches(model, batch)
        if mismatches:
            for node, inferred, runtime in mismatches:
                typer.echo(f"shape mismatch at '{node}': inferred {inferred}, ran {runtime}", err=True)
            raise RuntimeError(f"{plural(len(mismatches), 'runtime shape')} differ from the inferred ones")
        runtime_params = sum(p.numel() for p in eager.parameters())
        if runtime_params != rep.total_params:
            raise RuntimeError(f"static parameter count {rep.total_params} != compiled model's {runtime_params}")
        with steps.step("rendering the diagram and writing " + ", ".join(emit or ()) if emit else
                        "rendering the diagram"):
            fmt = "svg" if shutil.which("dot") else "dot"
            files = {
                "summary.json": report.to_json(rep).encode(),
                f"{graph.name}.{fmt}": render(graph, fmt),
                "forward.py": model.code.encode(),
            }
            for kind in dict.fromkeys(emit or ()):
                files[graph.name + EMIT_FORMATS[kind]] = _emitted(model, kind, spec)
    target = out_dir or Path("build") / graph.name
    write_files(target, files)  # only these files; the rest of the directory stays
    if save is not None:
        from .checkpoints import save_weights

        save_weights(model, save)
    typer.echo(
        f"built {graph.name}: {plural(rep.total_params, 'parameter')}, {report.si(rep.total_macs, 'MACs')}; "
        f"runtime shapes of {'the' if len(graph.nodes) == 1 else 'all'} {plural(len(graph.nodes), 'layer')} "
        f"{'matches' if len(graph.nodes) == 1 else 'match'} the inferred ones; "
        f"wrote {target}/{{{', '.join(files)}}}" + (f" and the weights to {save}" if save is not None else "")
        + (f"; weights from {weights}" if weights is not None else "")
        + (f"; an inference build ({plural(len(model.folded), 'BatchNorm')} folded, eval only, its state_dict "
           "not the spec's)" if optimize else "")
    )


@app.command("diff")
@_user_errors
def diff_command(
    spec_a: Path = typer.Argument(..., help="The first spec (A).", show_default=False),
    spec_b: Path = typer.Argument(..., help="The second spec (B); deltas are B - A.", show_default=False),
    format: str = typer.Option("table", "--format", "-f", help="table, json, markdown or latex (booktabs)."),
    input_: Optional[str] = typer.Option(None, "--input", metavar="C,H,W", show_default=False,
                                         help="Replace both specs' input shape, e.g. --input 3,299,299."),
    input_a: Optional[str] = typer.Option(None, "--input-a", metavar="C,H,W", show_default=False,
                                          help="Replace A's input shape only (over --input), e.g. --input-a 3,224,224."),
    input_b: Optional[str] = typer.Option(None, "--input-b", metavar="C,H,W", show_default=False,
                                          help="Replace B's input shape only (over --input), e.g. --input-b 3,299,299."),
    include_train_only: bool = typer.Option(False, "--include-train-only", help="Add the training-only layers "
                                            "(auxiliary heads) to the totals, as a row of their own."),
    max_memory: Optional[str] = MAX_MEMORY_OPT,
    set_: Optional[List[str]] = SET_OPT,
) -> None:
    """Compare two networks stage by stage (by downsampling step): parameters, MACs, output shape and deltas.

    Stage "stride s" holds the layers whose outputs are s input pixels apart
    (stride 2 after the first halving of the grid, ...), then the head, so
    networks with different module names and input sizes compare directly:
    GoogLeNet's 28x28 (224 input) pairs with Inception-v3's 35x35 (299
    input), and a note says how stages were paired when the inputs differ.
    The totals are eval mode, and say so; --include-train-only adds the
    auxiliary heads. --set applies to both specs. No torch.

    Example: archc diff googlenet inception_v3 --input-a 3,299,299 --format markdown
    """
    from . import diff as diffing

    renderers = {"table": diffing.to_table, "json": diffing.to_json, "markdown": diffing.to_markdown,
                 "latex": diffing.to_latex}
    if format not in renderers:
        raise UserError(f"--format must be one of {', '.join(renderers)}, got '{shorten(format)}'")
    both = parse_input(input_)
    shape_a, shape_b = parse_input(input_a, "--input-a") or both, parse_input(input_b, "--input-b") or both
    result = diffing.diff(_graph(spec_a, set_, shape_a, max_memory), _graph(spec_b, set_, shape_b, max_memory),
                          train_only=include_train_only)
    if format == "table":
        width = _width()
        _print(diffing.to_table(result, width=width), width)
        return
    _print(renderers[format](result))


@app.command("list")
@_user_errors
def list_command(
    format: str = typer.Option("table", "--format", "-f", help="table, json or markdown."),
    names_only: bool = typer.Option(False, "--names", help="Only the names, one per line (fast: nothing is compiled)."),
) -> None:
    """List the zoo's models: every name `archc build NAME` and `archcompiler.build(NAME)` take.

    Each row gives the model's paper, its native input, parameters and GMACs
    (at batch 1 and that input, computed from the spec; no torch), and the
    spec file it comes from.

    Example: archc list --format markdown
    """
    from . import zoo

    if format not in ("table", "json", "markdown"):
        raise UserError(f"--format must be one of table, json, markdown, got '{shorten(format)}'")
    if names_only:
        typer.echo("\n".join(zoo.models()))
        return
    rows = [{"name": r.name, "paper": r.paper, "input": list(r.input), "params": r.params,
             "gmacs": round(r.macs / 1e9, 3), "spec": r.path.name} for r in zoo.rows()]
    if format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    header = ["name", "input", "params", "GMACs", "spec", "paper"]
    cells = [[r["name"], "x".join(map(str, r["input"])), f"{r['params']:,}", f"{r['gmacs']:.3f}", r["spec"],
              _short_paper(r["paper"])] for r in rows]
    if format == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        typer.echo("\n".join(lines))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for h in header:
        table.add_column(h, justify="right" if h in ("params", "GMACs") else "left", no_wrap=h != "paper",
                         overflow="fold")
    for c in cells:
        table.add_row(*c)
    Console(width=shutil.get_terminal_size((120, 24)).columns).print(table)


def _short_paper(paper: str) -> str:
    """A citation as one table cell: `He et al. 2016`, `Tan and Le 2019`, `LeCun et al. 1998`."""
    import re

    text = " ".join(paper.split())
    authors = [a.replace("et al.", "").strip() for a in re.split(r",|\band\b", text.split('"')[0]) if a.strip()]
    surnames = [a.split()[-1] for a in authors if a]
    if not surnames:
        return ""
    many = len(surnames) > 2 or "et al" in text.split('"')[0]
    who = f"{surnames[0]} et al." if many else " and ".join(surnames)
    # A year stands alone: not the 1905 of arXiv:1905.11946, nor a page or volume number.
    years = re.findall(r"(?<![\d.:/])(?:19|20)\d\d(?![\d.])", text)
    return f"{who} {years[-1]}" if years else who


@app.command()
@_user_errors
def schema(
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE",
                                          help="Write the schema to FILE (atomically) instead of printing it."),
    builtin_only: bool = typer.Option(False, "--builtin-only", help="Only archc's own ops, not those of loaded "
                                      "plugins (the schema file committed in schema/ is made so)."),
) -> None:
    """Print (or write) the JSON Schema of the spec language, for editor completion and checking.

    Its $id is stable (urn:archc:spec:v1). See docs/editors.md for VS Code.

    Example: archc schema --builtin-only -o schema/archc-spec.schema.json
    """
    from .spec import json_schema

    text = json.dumps(json_schema(builtin_only), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    write_file(output, text.encode())
    typer.echo(f"wrote {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
