"""Batch runs end to end on a folder tree: mirrored outputs, per-file errors, summary, --json,
shards, --from lists, --dry-run, --fail-fast, and interrupts (SIGINT, SIGTERM) with resume."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ASTRONAUT, CAMERA, gray, run_process
from convfilter import kernels
from test_pipeline import max_diff, opencv_filter

GOOD = ["a.png", "b.jpg", "sub/b.png", "sub/c.tif", "sub/d.webp", "sub/deeper/e.png", "sub/deeper/f.gif", "g.bmp"]
BAD = {"broken.jpg": "truncated or corrupt image: ", "empty.png": "empty file",
       "sub/fake.png": "not an image (Pillow cannot identify its format)"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Photos in nested folders in mixed formats, a truncated JPEG, a zero-byte PNG, a text file
    named .png, a notes.txt (not an image name: not taken) and a hidden image (skipped)."""
    root = tmp_path_factory.mktemp("batch") / "photos"
    camera, astronaut = Image.open(CAMERA), Image.open(ASTRONAUT)
    for i, name in enumerate(GOOD):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        source = camera if i % 2 == 0 else astronaut
        source.crop((i * 20, i * 10, i * 20 + 200 + i, i * 10 + 150)).save(path)
    (root / "broken.jpg").write_bytes(ASTRONAUT.read_bytes()[:3000])
    (root / "empty.png").write_bytes(b"")
    (root / "sub" / "fake.png").write_text("just some text\n")
    (root / "notes.txt").write_text("not an image\n")
    camera.save(root / ".hidden.png")
    return root


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_folder_run_mirrors_the_tree_and_reports_each_failure(cli, tree, tmp_path):
    out = tmp_path / "out"
    result = cli("apply", tree, "-r", "-k", "sharpen", "-o", out)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    errors = sorted(line for line in lines if line.startswith("convfilter: error: "))
    for name, message in BAD.items():
        [line] = [e for e in errors if f"'{tree / name}'" in e]
        assert line.startswith(f"convfilter: error: '{tree / name}': {message}")
    assert len(errors) == len(BAD)
    assert sorted(line for line in lines if line.startswith("wrote ")) == sorted(f"wrote {out / n}" for n in GOOD)
    assert re.fullmatch(rf"{len(GOOD)} written, 0 skipped, {len(BAD)} failed in \d+\.\d s", lines[-1])
    assert files_in(out) == sorted(GOOD)
    sharpen = kernels.resolve("sharpen").weights()
    for name in GOOD:
        expected = opencv_filter(gray(tree / name), sharpen, "reflect")
        limit = 1 if Path(name).suffix in (".png", ".tif", ".bmp", ".gif") else 40  # lossy outputs: still the picture
        assert max_diff(gray(out / name), expected) <= limit, name


def test_json_summary_parses_back(cli, tree, tmp_path):
    result = cli("pool", tree, "-r", "--size", "2", "-o", tmp_path / "out", "--json", "-q")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert (document["written"], document["skipped"], document["failed"]) == (len(GOOD), 0, len(BAD))
    statuses = {Path(f["input"]).relative_to(tree).as_posix(): f["status"] for f in document["files"]}
    assert statuses == {**{n: "written" for n in GOOD}, **{n: "failed" for n in BAD}}
    assert all(f["error"].startswith(f"'{f['input']}': ") for f in document["files"] if f["status"] == "failed")
    assert result.stderr.count("convfilter: error:") == len(BAD)  # -q keeps the errors


def test_json_lists_the_files_in_the_order_of_the_plan(cli, tree, tmp_path):
    """The `files` array came in the order files finished, which changes from run to run (the
    broken files finish first): a report that cannot be diffed between runs."""
    plan = json.loads(cli("apply", tree, "-r", "-k", "blur", "-o", tmp_path / "out", "--dry-run", "--json").stdout)
    planned = [f["input"] for f in plan["files"]]
    assert planned == sorted(planned)
    result = cli("apply", tree, "-r", "-k", "blur", "-o", tmp_path / "out", "--json", "-q", "-j", "2")
    assert [f["input"] for f in json.loads(result.stdout)["files"]] == planned


def test_skip_existing_resumes_and_overwrite_replaces(cli, tree, tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "c.tif").write_bytes(b"old")
    result = cli("apply", tree, "-r", "-k", "blur", "-o", out, "--skip-existing", "--json")
    document = json.loads(result.stdout)
    assert (document["written"], document["skipped"]) == (len(GOOD) - 1, 1)
    assert (out / "sub" / "c.tif").read_bytes() == b"old"
    result = cli("apply", tree, "-r", "-k", "blur", "-o", out)
    assert result.stderr.count("exists (use --overwrite or --skip-existing)") == len(GOOD)
    result = cli("apply", tree, "-r", "-k", "blur", "-o", out, "--overwrite", "-q")
    assert gray(out / "sub" / "c.tif").shape == gray(tree / "sub" / "c.tif").shape


def test_without_output_a_sibling_directory(cli, tree):
    result = cli("apply", tree, "-k", "identity", "--format", "png", "-q")
    sibling = tree.parent / "photos_identity"
    try:
        assert result.exit_code == 1  # broken.jpg and empty.png are in the top folder
        assert files_in(sibling) == ["a.png", "b.png", "g.png"]
        assert np.array_equal(gray(sibling / "a.png"), gray(tree / "a.png"))
    finally:
        for path in sibling.iterdir():
            path.unlink()
        sibling.rmdir()


def test_dry_run_prints_the_plan_and_writes_nothing(cli, tree, tmp_path):
    result = cli("apply", tree, "-r", "-k", "blur", "-o", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0
    plan = result.stdout.decode().splitlines()
    assert f"{tree / 'sub/deeper/e.png'} -> {tmp_path / 'out/sub/deeper/e.png'}" in plan
    assert len(plan) == len(GOOD) + len(BAD)
    assert not (tmp_path / "out").exists()


def test_dry_run_with_json_prints_the_plan_as_json(cli, tree, tmp_path):
    import json

    result = cli("apply", tree, "-r", "-k", "blur", "-o", tmp_path / "out", "--dry-run", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    assert {"input": str(tree / "sub/deeper/e.png"), "output": str(tmp_path / "out/sub/deeper/e.png")} in document["files"]
    assert len(document["files"]) == len(GOOD) + len(BAD)
    assert not (tmp_path / "out").exists()


def test_collisions_are_refused_before_anything_is_written(cli, tree, tmp_path):
    result = cli("apply", tree / "b.jpg", tree / "sub" / "b.png", "-k", "blur", "-o", tmp_path / "out", "--format", "png")
    assert result.exit_code == 2
    assert result.stderr == (f"convfilter: error: several inputs would write the same output: "
                             f"{os.path.relpath(tmp_path / 'out' / 'b.png')} <- '{tree / 'b.jpg'}', '{tree / 'sub' / 'b.png'}'\n")
    assert not (tmp_path / "out").exists()


def test_fail_fast_stops_at_the_first_failure(cli, tree, tmp_path):
    result = cli("apply", tree / "empty.png", tree / "a.png", tree / "b.jpg", "-k", "blur", "-o", tmp_path / "out",
                 "--fail-fast", "-j", "1")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"convfilter: error: '{tree / 'empty.png'}': empty file"
    assert not (tmp_path / "out").exists()


def test_shards_together_write_each_output_exactly_once(cli, tree, tmp_path):
    out = tmp_path / "out"
    written = []
    for k in (1, 2, 3):
        result = cli("apply", tree, "-r", "-k", "blur", "-o", out, "--shard", f"{k}/3", "--json", "-q")
        document = json.loads(result.stdout)
        written += [f["output"] for f in document["files"] if f["status"] == "written"]
        assert "exists" not in result.stderr
    assert sorted(written) == sorted(str(out / n) for n in GOOD)
    assert files_in(out) == sorted(GOOD)


def test_find_print0_into_from_null(tree, tmp_path):
    """find DIR -name '*.jpg' -print0 | convfilter apply --from - --null -k blur -o OUT"""
    listed = tmp_path / "listed"
    (listed / "with space").mkdir(parents=True)
    for name in ("one.jpg", "with space/two.jpg"):
        Image.open(ASTRONAUT).save(listed / name)
    command = (f"find {shlex.quote(str(listed))} -name '*.jpg' -print0 | {shlex.quote(sys.executable)} -m convfilter "
               f"apply --from - --null -k blur -o {shlex.quote(str(tmp_path / 'out'))}")
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert files_in(tmp_path / "out") == ["one.jpg", "two.jpg"]
    assert re.search(rb"2 written, 0 skipped, 0 failed in", done.stderr)


def test_from_file_list_with_a_missing_entry(cli, tree, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tree / 'a.png'}\n{tree / 'missing.png'}\n")
    result = cli("pool", "--from", listing, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert f"convfilter: error: '{tree / 'missing.png'}': no such file" in result.stderr.splitlines()
    assert files_in(tmp_path / "out") == ["a.png"]


def test_a_list_entry_named_dash_is_that_file_not_standard_input(tree, tmp_path):
    """List entries are taken literally: '-' in a --from list read standard input instead of the
    file named '-' (and with --from - the list itself, already read: 'empty input')."""
    Image.open(tree / "a.png").save(tmp_path / "-", format="PNG")
    (tmp_path / "list.txt").write_text("-\n")
    other = Image.open(ASTRONAUT).convert("L").crop((0, 0, 90, 70))
    piped = io.BytesIO()
    other.save(piped, format="PNG")
    done = run_process("apply", "--from", "list.txt", "-k", "blur", "-o", "out/", input=piped.getvalue(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert files_in(tmp_path / "out") == ["-.png"]
    expected = opencv_filter(gray(tmp_path / "-"), kernels.resolve("blur").weights(), "reflect")
    assert max_diff(gray(tmp_path / "out" / "-.png"), expected) <= 1
    done = run_process("apply", "--from", "-", "-k", "blur", "-o", "out2/", input=b"-\n", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(gray(tmp_path / "out2" / "-.png"), gray(tmp_path / "out" / "-.png"))


def test_progress_bar_only_on_a_terminal(tree, tmp_path):
    import pty

    controller, terminal = pty.openpty()
    done = subprocess.run([sys.executable, "-m", "convfilter", "pool", str(tree), "-r", "-o", str(tmp_path / "out")],
                          stderr=terminal, stdout=subprocess.DEVNULL, timeout=300)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert done.returncode == 1
    assert b"files/s" in seen and b"\x1b[" in seen  # rich's bar, drawn with terminal codes


# ---------------------------------------------------------------------------- interrupts


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many") / "in"
    camera = Image.open(CAMERA)
    for i in range(40):
        (root / f"g{i % 4}").mkdir(parents=True, exist_ok=True)
        camera.rotate(i * 9).save(root / f"g{i % 4}" / f"p{i:02}.png")
    return root


def assert_all_valid(out: Path, expected: int) -> None:
    names = files_in(out)
    assert [n for n in names if Path(n).name.startswith(".")] == []  # no temporary files
    assert len(names) == expected
    for name in names:
        with Image.open(out / name) as image:
            image.load()  # a partial file would fail here
            assert image.size == (512, 512)


def interruptible() -> None:
    """In the child: Ctrl-C's default action back (a shell ignores SIGINT in background jobs, and
    a process that starts with SIGINT ignored rightly keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_run_then_resume_with_skip_existing(many, tmp_path, signum):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "convfilter", "apply", str(many), "-r", "-k", "gaussian5", "--repeat", "8",
               "-o", str(out), "-j", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, preexec_fn=interruptible)
    first = process.stderr.readline()
    assert first.startswith(b"wrote "), first
    process.send_signal(signum)
    rest = process.stderr.read().decode()
    assert process.wait(timeout=120) == 130
    assert rest.splitlines()[-1] == "convfilter: interrupted"
    finished = files_in(out)
    assert 1 <= len(finished) < 40
    assert_all_valid(out, len(finished))
    again = subprocess.run(command + ["--skip-existing", "-q"], capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert_all_valid(out, 40)


def test_inputs_are_decoded_ahead_while_the_filter_loads_within_the_memory_budget(tmp_path, monkeypatch):
    """Until the filter is ready (torch importing), workers decode the next inputs, up to
    READ_AHEAD_BYTES (plus what is in flight), and write nothing; then every file comes out right."""
    import threading
    import time

    from convfilter import imageio, process
    from convfilter.outputs import Job
    from convfilter.pipeline import Filter
    from convfilter.steps import from_table

    camera = np.asarray(Image.open(CAMERA))
    sources = []
    for i in range(12):
        path = tmp_path / f"in{i:02}.png"
        Image.fromarray(camera[i * 10:i * 10 + 100, i * 20:i * 20 + 80]).save(path)
        sources.append(path)
    monkeypatch.setattr(process, "READ_AHEAD_BYTES", 3 * 100 * 80)  # three decoded images
    reads = []
    real_read = imageio.read_image
    monkeypatch.setattr(imageio, "read_image", lambda *a, **k: reads.append(1) or real_read(*a, **k))
    ready = threading.Event()
    sharpen = Filter([from_table({"kernel": "sharpen"})], "cpu")
    jobs = [Job(str(p), str(tmp_path / f"out{i:02}.png")) for i, p in enumerate(sources)]
    options = process.WriteOptions(encoding=imageio.Encoding(90, 1), workers=2)
    results = []
    runner = threading.Thread(target=lambda: results.append(process.process(
        jobs, sharpen, options, stdin=None, stdout=None, on_result=lambda r: None, filter_ready=ready)))
    runner.start()
    try:
        while len(reads) < 3 and runner.is_alive():
            time.sleep(0.01)
        time.sleep(0.5)  # room to read too far, were the budget not kept
        assert 3 <= len(reads) <= 3 + 2 * 2 - 1  # the budget, plus the jobs in flight (2 per worker)
        assert not list(tmp_path.glob("out*"))
    finally:
        ready.set()
        runner.join(timeout=60)
    assert results[0].written == 12 and len(reads) == 12
    sharpen_weights = kernels.resolve("sharpen").weights()
    for i, path in enumerate(sources):
        expected = opencv_filter(gray(path), sharpen_weights, "reflect")
        assert max_diff(gray(tmp_path / f"out{i:02}.png"), expected) <= 1


@pytest.mark.parametrize("jobs, workers, allowed, cores, expected", [
    (None, 1, 16, 16, None),  # one image, no -j, every core allowed: torch's default
    (None, 2, 16, 16, 8), (None, 16, 16, 16, 1), (None, 3, 2, 2, 1),  # the default: every core, shared
    (1, 1, 16, 16, 1), (4, 1, 16, 16, 4), (4, 2, 16, 16, 2), (4, 8, 16, 16, 1),  # -j N: N cores, shared
    (2, 0, 2, 2, 2),
    (None, 1, 4, 16, 4), (None, 2, 4, 16, 2), (None, 4, 4, 16, 1), (3, 1, 4, 16, 3),  # an affinity of 4 cores
    (1024, 1, 2, 2, 2), (100, 3, 4, 16, 1),  # never more than the cores (-j 20000 failed to start OpenMP threads)
])
def test_torch_threads_keep_to_the_jobs_cores(monkeypatch, jobs, workers, allowed, cores, expected):
    from convfilter import process

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(process, "available_cores", lambda: allowed)
    assert process.torch_threads(jobs, workers) == expected


def test_available_cores_are_the_affinity_where_there_is_one(monkeypatch):
    from convfilter import process

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5, 7}, raising=False)
    assert process.available_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows
    assert process.available_cores() == 64


# One interpreter runs the command several times (as a library caller could) and prints, for each
# run, the torch thread counts the filter saw where it ran (the workers, or the main thread for a
# single image), what a new thread gets afterwards, and how many threads filtered; first torch's
# default, as a new thread sees it.
THREADS = """
import sys, threading, torch
from convfilter import pipeline
from convfilter.cli import app
def in_a_new_thread():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]
print(in_a_new_thread())
seen, names = [], set()
real = pipeline.Filter.__call__
def spy(self, image):
    seen.append(torch.get_num_threads())
    names.add(threading.current_thread().name)
    return real(self, image)
pipeline.Filter.__call__ = spy
for arguments in sys.argv[1:]:
    seen.clear()
    names.clear()
    if arguments.startswith("NVIDIA "):  # /dev/nvidiactl there, but no CUDA torch can use
        import convfilter.cli
        convfilter.cli._nvidia_present = lambda: True
        arguments = arguments.removeprefix("NVIDIA ")
    if arguments.startswith("ONE-CORE "):  # as `taskset -c N`: the process may run on one core
        import os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        arguments = arguments.removeprefix("ONE-CORE ")
    app(arguments.split(), prog_name="convfilter", standalone_mode=False)
    print(*sorted(set(seen)), "/", in_a_new_thread(), "/", len(names))
"""


def test_each_run_gives_its_workers_their_share_of_torch_threads(tmp_path):
    """-j 1 over several files runs torch on one thread (N processes of -j 1 side by side must not
    oversubscribe the cores), and so does a single image with -j 1; a single image without -j has
    torch's default again, every core, and so do threads started after it. With no usable GPU
    behind /dev/nvidiactl the per-file workers still get their share, not every core each. A
    process bound to one core (taskset) filters a single image on one thread."""
    from convfilter import process

    sources = []
    for i in range(3):
        sources.append(tmp_path / f"in{i}.png")
        Image.open(CAMERA).crop((0, 0, 64 + i, 48)).save(sources[-1])
    files, one = " ".join(map(str, sources)), str(sources[0])
    runs = [f"apply {files} -k sharpen -o {tmp_path}/a/ -q -j 1",
            f"apply {one} -k sharpen -o {tmp_path}/b/ -q",
            f"apply {files} -k sharpen -o {tmp_path}/c/ -q -j 2",
            f"apply {one} -k sharpen -o {tmp_path}/d/ -q -j 1",
            f"apply {one} -k sharpen -o {tmp_path}/e/ -q",
            f"NVIDIA apply {files} -k sharpen -o {tmp_path}/f/ -q",
            f"ONE-CORE apply {files} -k sharpen -o {tmp_path}/g/ -q",
            f"apply {one} -k sharpen -o {tmp_path}/h/ -q"]  # still bound to one core
    done = subprocess.run([sys.executable, "-c", THREADS, *runs], capture_output=True, text=True, check=True)
    (default,), *seen = [line.split() for line in done.stdout.splitlines()]
    cores = process.available_cores()
    single = default if cores == os.cpu_count() else str(cores)  # one image, no -j: every core it may use
    assert int(single) > 1 or cores == 1  # else the single images tell nothing
    shared = str(max(1, cores // min(cores, 3)))  # the default: those cores, shared by the workers
    assert [line[:3] for line in seen] == [["1", "/", "1"], [single, "/", single], ["1", "/", "1"], ["1", "/", "1"],
                                           [single, "/", single], [shared, "/", shared], ["1", "/", "1"],
                                           ["1", "/", "1"]]
    assert [line[-1] for line in seen[:2]] == ["1", "1"]  # -j 1; a single image
    assert seen[6][-1] == "1"  # bound to one core: one worker by default
    assert sum(1 for _ in tmp_path.rglob("*.png")) == 3 + 3 + 1 + 3 + 1 + 1 + 3 + 3 + 1
