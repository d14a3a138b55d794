"""archc writes its own files and nothing else (archcompiler.artifacts, and the CLI's -o and --save).

- `build -o DIR` into an existing DIR (`.`, `..` and the spec's own folder too) keeps every file of
  the user's and DIR's mode; a regular file as DIR is a user error and stays as it was; a user's own
  `.X.old` is left alone;
- files and new directories get the modes the umask gives (build, --emit, --save, draw);
- a failed write leaves the directory as it was, and no directory it made;
- a writer SIGKILLed mid-write leaves only its temporaries, which the next write sweeps; a live
  writer's temporaries are never swept;
- --save or draw -o to a path that cannot be written is a one-line user error;
- a checkpoint with a sparse tensor or a non-string key is a clear user error.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Ran, run_archc

ROOT = Path(__file__).parents[1]
LENET = ROOT / "specs" / "lenet5.yaml"
ARTIFACTS = ["forward.py", "lenet5.svg", "summary.json"]


def archc(*args: str, cwd: Path = ROOT) -> Ran:
    """The command line, in this process (conftest.run_archc)."""
    return run_archc(*args, cwd=cwd)


def archc_process(*args: str, umask: int) -> subprocess.CompletedProcess:
    """The command line in a process of its own, started with `umask`."""
    return subprocess.run([sys.executable, "-m", "archcompiler.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=lambda: os.umask(umask))


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def dead_pid() -> int:
    """The PID of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------- build -o DIR


def test_build_into_an_existing_directory_keeps_the_users_files_and_its_mode(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.csv").write_text("1,2")
    (out / "summary.json").write_text("{}")  # an artifact of an earlier build: replaced
    out.chmod(0o750)
    r = archc("build", str(LENET), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert names(out) == sorted([*ARTIFACTS, "notes.txt", "sub"])
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "data.csv").read_text() == "1,2"
    assert '"name": "lenet5"' in (out / "summary.json").read_text()
    assert mode(out) == 0o750


@pytest.mark.parametrize("where", [".", "$PWD", ".."])
def test_build_into_the_folder_holding_the_spec_keeps_the_spec(tmp_path, where):
    spec = tmp_path / "lenet5.yaml"
    spec.write_text(LENET.read_text())
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    cwd = tmp_path / "sub" if where == ".." else tmp_path
    r = archc("build", str(spec.relative_to(tmp_path)) if where != ".." else "../lenet5.yaml",
              "-o", str(tmp_path) if where == "$PWD" else where, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert names(tmp_path) == sorted([*ARTIFACTS, "lenet5.yaml", "notes.txt", "sub"])
    assert spec.read_text() == LENET.read_text() and (tmp_path / "notes.txt").read_text() == "mine"


def test_build_into_a_regular_file_is_a_user_error_and_the_file_stays(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    r = archc("build", str(LENET), "-o", str(target))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"archc: error: {target} exists and is not a directory")
    assert "(hint: " in r.stderr
    assert target.read_text() == "mine" and names(tmp_path) == ["out.txt"]  # no `.out.txt.old` either


def test_the_users_own_dot_old_files_are_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / ".out.old").write_text("mine")
    (out / ".summary.json.old").write_text("mine too")
    assert archc("build", str(LENET), "-o", str(out)).returncode == 0
    assert (tmp_path / ".out.old").read_text() == "mine" and (out / ".summary.json.old").read_text() == "mine too"
    assert names(tmp_path) == [".out.old", "out"] and names(out) == sorted([".summary.json.old", *ARTIFACTS])


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_modes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    out = tmp_path / "new" / "out"
    r = archc_process("build", str(LENET), "-o", str(out), "--emit", "python", "--save", str(tmp_path / "w" / "w.pt"),
                      umask=umask)
    assert r.returncode == 0, r.stderr
    assert archc_process("draw", str(LENET), "-o", str(tmp_path / "lenet5.svg"), umask=umask).returncode == 0
    assert {mode(d) for d in (tmp_path / "new", out, tmp_path / "w")} == {dir_mode}
    files = [*out.iterdir(), tmp_path / "w" / "w.pt", tmp_path / "lenet5.svg"]
    assert len(files) == 6 and {mode(f) for f in files} == {file_mode}


# ---------------------------------------------------------------------------- the mechanism


def test_a_failed_write_leaves_the_directory_as_it_was_and_no_new_directory(tmp_path):
    from archcompiler.artifacts import write_files

    def broken(path: str) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        write_files(tmp_path, {"a.txt": b"new", "b.bin": broken})
    assert names(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
    with pytest.raises(OSError, match="disk full"):
        write_files(tmp_path / "x" / "y" / "z", {"a.txt": b"new", "b.bin": broken})
    assert names(tmp_path) == ["a.txt"]


def test_a_dead_writers_temporaries_are_swept_and_a_live_ones_kept(tmp_path):
    from archcompiler.artifacts import write_file

    dead = f".summary.json.archc-{dead_pid()}-0123abcd.tmp"
    live = f".summary.json.archc-{os.getpid()}-4567cdef.tmp"  # this very process: alive
    mine = [".summary.json.tmp", ".notes.archc-1-x.tmp", "notes.txt"]  # the user's, whatever they look like
    for name in (dead, live, *mine):
        (tmp_path / name).write_text(name)
    write_file(tmp_path / "summary.json", b"{}")
    assert names(tmp_path) == sorted([live, *mine, "summary.json"])
    assert all((tmp_path / name).read_text() == name for name in (live, *mine))


DRIVER = textwrap.dedent("""
    import sys, time
    from archcompiler.artifacts import write_files

    def slow(path):  # a big artifact, killed while it is being written
        with open(path, "wb") as f:
            f.write(b"x" * 10_000_000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)

    write_files(sys.argv[1], {"summary.json": b"{}" * 1_000_000, "model.onnx": slow})
""")


def test_a_sigkill_mid_write_leaves_only_archc_temporaries_and_the_next_write_sweeps_them(tmp_path):
    from archcompiler.artifacts import TEMP, write_file

    (tmp_path / "summary.json").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    writer = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    left = [name for name in names(tmp_path) if name not in ("notes.txt", "summary.json")]
    assert len(left) == 2 and all(TEMP.fullmatch(name)[1] == str(writer.pid) for name in left), left
    assert (tmp_path / "summary.json").read_text() == "old" and (tmp_path / "notes.txt").read_text() == "mine"
    write_file(tmp_path / "forward.py", b"pass\n")
    assert names(tmp_path) == ["forward.py", "notes.txt", "summary.json"]
    assert (tmp_path / "summary.json").read_text() == "old"


# ---------------------------------------------------------------------------- paths that cannot be written


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked / "w.pt"
    if not Path("/proc/self").is_dir():
        pytest.skip("root may write anywhere but /proc, and there is no /proc")
    return Path("/proc/w.pt")


@pytest.mark.parametrize("case", ["a directory", "inside a file", "unwritable"])
def test_save_to_a_path_that_cannot_be_written_is_a_user_error(tmp_path, case):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("mine")
    save = {"a directory": tmp_path / "dir", "inside a file": tmp_path / "file" / "w.pt",
            "unwritable": _unwritable(tmp_path)}[case]
    r = archc("build", str(LENET), "-o", str(tmp_path / "out"), "--save", str(save))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("archc: error: ") and str(save) in r.stderr
    assert (tmp_path / "file").read_text() == "mine" and names(tmp_path / "dir") == []
    if case != "unwritable":  # known before building: nothing written
        assert not (tmp_path / "out").exists()


def test_draw_over_a_directory_is_a_user_error(tmp_path):
    (tmp_path / "g.svg").mkdir()
    r = archc("draw", str(LENET), "-o", str(tmp_path / "g.svg"))
    assert r.returncode == 2 and r.stderr.startswith(f"archc: error: {tmp_path / 'g.svg'} exists and is not a regular file")
    assert names(tmp_path) == ["g.svg"] and names(tmp_path / "g.svg") == []


# ---------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_with_a_sparse_tensor_is_a_user_error(tmp_path):
    import torch

    import archcompiler
    from archcompiler.checkpoints import load_weights
    from archcompiler.errors import UserError

    model = archcompiler.build(LENET)
    state = model.state_dict()
    state["C1.weight"] = state["C1.weight"].to_sparse()
    torch.save(state, tmp_path / "sparse.pt")
    with pytest.raises(UserError, match=r"sparse.pt: entry 'C1.weight' is a sparse_coo tensor, not a dense one"):
        load_weights(model, tmp_path / "sparse.pt")


def test_a_checkpoint_with_a_key_that_is_not_a_string_names_the_keys_type():
    import torch

    from archcompiler.checkpoints import normalize_state
    from archcompiler.errors import UserError

    with pytest.raises(UserError, match=r"the state_dict: key 1 is an int, not a string"):
        normalize_state({"a.weight": torch.ones(2), 1: torch.ones(2)})
