"""Input expansion and output planning on their own: pure path logic, no image is read."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from convfilter.errors import UsageError
from convfilter.inputs import Source, expand, parse_shard, read_list, walk
from convfilter.outputs import plan, shard


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    touch(root, "b.jpg", "a.PNG", "notes.txt", ".hidden.png", "sub/c.tif", "sub/deeper/d.webp",
          ".cache/e.png", "sub/x.jpeg", "Z.GIF")
    return root


def relative(sources, root):
    return [os.path.relpath(s.path, root) for s in sources]


# ---------------------------------------------------------------------------- expansion


def test_walk_takes_image_suffixes_skips_hidden_and_sorts(tree):
    assert relative(walk(str(tree), recursive=False), tree) == ["Z.GIF", "a.PNG", "b.jpg"]
    assert relative(walk(str(tree), recursive=True), tree) == [
        "Z.GIF", "a.PNG", "b.jpg", "sub/c.tif", "sub/deeper/d.webp", "sub/x.jpeg",
    ]
    assert all(s.base == str(tree) for s in walk(str(tree), recursive=True))


def test_walk_never_follows_a_symlink_loop(tree):
    os.symlink(tree, tree / "sub" / "loop")
    os.symlink(tree / "sub", tree / "linked")
    found = relative(walk(str(tree), recursive=True), tree)
    assert len(found) == len(set(os.path.realpath(tree / f) for f in found)) == 6


def test_expand_mixes_files_directories_globs_and_lists(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lone = tmp_path / "lone.bmp"
    lone.write_bytes(b"")
    expansion = expand([str(lone), "photos", "photos/sub/*.t*f"], recursive=False, listed=["photos/b.jpg", "x.png"])
    assert [(s.path, s.base) for s in expansion.sources] == [
        (str(lone), None),
        ("photos/Z.GIF", "photos"), ("photos/a.PNG", "photos"), ("photos/b.jpg", "photos"),
        ("photos/sub/c.tif", "photos/sub"),
        ("x.png", None),  # listed, missing: a per-file error later
    ]  # photos/b.jpg from the list is a duplicate and dropped
    assert expansion.batch


def test_recursive_glob_mirrors_below_its_fixed_part(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    sources = expand(["photos/**/*.webp"]).sources
    assert sources == [Source("photos/sub/deeper/d.webp", base="photos")]
    assert sources[0].relative == "sub/deeper/d.webp"


def test_a_single_file_is_not_a_batch_and_stdin_must_be_alone(tree):
    assert not expand([str(tree / "b.jpg")]).batch
    assert expand(["-"]).sources == [Source("-")]
    with pytest.raises(UsageError, match="must be the only input"):
        expand(["-", str(tree / "b.jpg")])


def test_read_list_lines_and_nul():
    assert read_list(io.BytesIO(b"a.png\nb c.jpg\n\n"), null=False) == ["a.png", "b c.jpg"]
    assert read_list(io.BytesIO(b"a\nb.png\0c.jpg\0"), null=True) == ["a\nb.png", "c.jpg"]


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "1/0", "-1/2"])
def test_bad_shard(text):
    with pytest.raises(UsageError, match=r"--shard must be K/N with 1 <= K <= N"):
        parse_shard(text)


# ---------------------------------------------------------------------------- planning


def test_one_file_default_name_and_explicit_outputs(tmp_path):
    one = [Source(str(tmp_path / "a.jpg"))]
    assert plan(one, None, "sharpen")[0].target == str(tmp_path / "a_sharpen.jpg")
    assert plan(one, None, "sharpen", fmt="png")[0].target == str(tmp_path / "a_sharpen.png")
    assert plan(one, "-", "sharpen")[0].target == "-"
    assert plan(one, "x.tif", "sharpen")[0].format == "TIFF"
    assert plan(one, "out/", "sharpen")[0].target == "out/a.jpg"
    assert plan([Source("-")], None, "blur")[0].target == "-"
    assert plan([Source("-")], "out/", "blur")[0].target == "out/stdin.png"
    assert plan(one, None, "blur", show=True)[0].target is None


def test_directory_mirrors_the_tree_below_each_directory_argument(tree, tmp_path):
    expansion = expand([str(tree), str(tmp_path / "photos" / "b.jpg")], recursive=True)
    jobs = plan(expansion.sources, str(tmp_path / "out"), "sharpen", batch=expansion.batch)
    assert [os.path.relpath(j.target, tmp_path / "out") for j in jobs] == [
        "Z.GIF", "a.PNG", "b.jpg", "sub/c.tif", "sub/deeper/d.webp", "sub/x.jpeg",
    ]
    assert [j.format for j in jobs][:3] == ["GIF", "PNG", "JPEG"]


def test_directory_without_output_goes_to_a_sibling_directory(tree):
    jobs = plan(walk(str(tree), recursive=True), None, "blur", batch=True)
    assert jobs[3].target == str(tree.parent / "photos_blur" / "sub" / "c.tif")
    jobs = plan(walk(str(tree), recursive=True), None, "blur", fmt="png", batch=True)
    assert jobs[3].target == str(tree.parent / "photos_blur" / "sub" / "c.png")


def test_the_root_folder_without_output_is_a_usage_error():
    """`convfilter apply / -r`: no folder beside / to write into (it raised ValueError)."""
    with pytest.raises(UsageError, match=r"^'/' has no folder beside it to write into; give -o$"):
        plan([Source("/a.png", base="/")], None, "blur", batch=True)


def test_several_files_without_output_go_beside_each(tmp_path):
    jobs = plan([Source(str(tmp_path / "a.png")), Source(str(tmp_path / "b.jpg"))], None, "pool2")
    assert [j.target for j in jobs] == [str(tmp_path / "a_pool2.png"), str(tmp_path / "b_pool2.jpg")]


def test_collisions_are_a_usage_error_listing_them(tmp_path):
    sources = [Source(str(tmp_path / "a.png")), Source(str(tmp_path / "a.jpg")), Source(str(tmp_path / "b.png"))]
    with pytest.raises(UsageError) as raised:
        plan(sources, str(tmp_path / "out"), "blur", fmt="png")
    assert str(raised.value) == (
        f"several inputs would write the same output: {os.path.relpath(tmp_path / 'out' / 'a.png')} <- "
        f"'{tmp_path / 'a.png'}', '{tmp_path / 'a.jpg'}'"
    )


def test_an_output_that_is_an_input_is_refused(tmp_path):
    a, b = str(tmp_path / "a.png"), str(tmp_path / "a_blur.png")
    with pytest.raises(UsageError, match=r"output '.*a_blur.png' is the input '.*a_blur.png'; convfilter never"):
        plan([Source(a), Source(b)], None, "blur")
    with pytest.raises(UsageError, match="never overwrites an input"):
        plan([Source(a, base=str(tmp_path))], str(tmp_path), "blur", batch=True)


@pytest.mark.parametrize("argument, expected", [
    ("photos", [("photos/a.png", "photos/out/a.png"), ("photos/sub/b.png", "photos/out/sub/b.png")]),
    ("photos/**/*.png", [("photos/a.png", "photos/out/a.png"), ("photos/sub/b.png", "photos/out/sub/b.png")]),
    # photos/out/a.png is no output of this pattern's inputs (photos/a.png is not one): an input
    ("photos/*/*.png", [("photos/out/a.png", "photos/out/out/a.png"), ("photos/sub/b.png", "photos/out/sub/b.png")]),
])
def test_an_output_folder_inside_the_input_tree_is_not_an_input(tmp_path, monkeypatch, argument, expected):
    """The files of a first run that this run would write again are not inputs; the others are."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/a.png", "photos/sub/b.png", "photos/out/a.png", "photos/out/sub/b.png")  # a first run
    expansion = expand([argument], recursive=True)
    for output in ("photos/out", "photos/out/", str(tmp_path / "photos" / "out")):
        jobs = plan(expansion.sources, output, "sharpen", batch=expansion.batch)
        assert [(j.source, os.path.relpath(j.target)) for j in jobs] == expected  # resumable: outputs exist


def test_an_output_folder_that_is_the_input_folder_or_a_named_input_is_still_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/a.png", "photos/out/a.png")
    with pytest.raises(UsageError, match="output 'photos/a.png' is the input 'photos/a.png'"):
        plan(expand(["photos"], recursive=True).sources, "photos/", "sharpen", batch=True)
    with pytest.raises(UsageError, match="output 'photos/out/a.png' is the input 'photos/out/a.png'"):
        plan(expand(["photos/out/a.png", "photos"]).sources, "photos/out", "sharpen", batch=True)


def test_batch_output_must_be_a_directory(tmp_path):
    existing = tmp_path / "file.png"
    existing.write_bytes(b"")
    sources = [Source("a.png"), Source("b.png")]
    with pytest.raises(UsageError, match="is a file; several inputs need a directory"):
        plan(sources, str(existing), "blur")
    with pytest.raises(UsageError, match="-o - writes one image to standard output; 2 inputs were given"):
        plan(sources, "-", "blur")


def test_unwritable_input_suffix_becomes_png(tmp_path):
    assert plan([Source(str(tmp_path / "scan.psd"))], None, "blur")[0].target == str(tmp_path / "scan_blur.png")


@pytest.mark.parametrize("count", [1, 2, 3, 7, 50])
def test_shards_cover_every_job_exactly_once(count):
    jobs = plan([Source(f"d/{i:03}.png", base="d") for i in range(101)], "out", "blur", batch=True)
    slices = [shard(jobs, k, count) for k in range(1, count + 1)]
    covered = [job.target for part in slices for job in part]
    assert sorted(covered) == sorted(job.target for job in jobs)
    assert len(covered) == len(set(covered)) == 101
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert shard(jobs, 1, count) == shard(list(jobs), 1, count)  # deterministic


def test_shards_do_not_depend_on_the_order_the_inputs_were_given_in():
    """Two tasks given the same files in another order (arguments, --from lists) took the slices
    of their own orders: one file twice, another never. The slices are of the sorted plan."""
    names = [f"{i:02}.png" for i in range(20)]
    shuffled = names[7:] + names[:7][::-1]
    forward, backward = (plan([Source(n) for n in order], "out", "blur", batch=True) for order in (names, shuffled))
    for k in (1, 2, 3):
        assert {job.source for job in shard(forward, k, 3)} == {job.source for job in shard(backward, k, 3)}
    assert [job.source for job in shard(backward, 1, 3)] == [n for n in shuffled if int(n[:2]) % 3 == 0]  # plan order


def test_a_pipe_named_as_a_file_goes_to_standard_output_like_standard_input(tmp_path):
    """<(...) without -o: there is no folder beside /dev/fd/N to write into."""
    read_end, write_end = os.pipe()
    try:
        pipe = f"/dev/fd/{read_end}"
        assert [job.target for job in plan([Source(pipe)], None, "blur")] == ["-"]
        assert [job.target for job in plan([Source(pipe)], str(tmp_path / "o.png"), "blur")] == [str(tmp_path / "o.png")]
        with pytest.raises(UsageError, match=rf"^'{pipe}' is a stream, with no folder beside it for its output; give -o$"):
            plan([Source(pipe), Source(str(tmp_path / "a.png"))], None, "blur")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_originals_in_an_output_folder_inside_the_tree_stay_inputs(tmp_path, monkeypatch):
    """-o photos/sub where sub holds photos of its own: only what this run writes is left out."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/a.png", "photos/sub/b.png", "photos/sub/a.png")  # sub/a.png: photos/a.png's output
    jobs = plan(expand(["photos"], recursive=True).sources, "photos/sub", "blur", batch=True)
    assert [(j.source, os.path.relpath(j.target)) for j in jobs] == [
        ("photos/a.png", "photos/sub/a.png"), ("photos/sub/b.png", "photos/sub/sub/b.png")]


def test_an_output_folder_reached_through_a_link_is_recognised(tmp_path, monkeypatch):
    """-o photos/linked, a symbolic link to a folder outside the tree: its files are still this
    run's outputs, so a rerun resumes."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/a.png", "elsewhere/a.png")
    (tmp_path / "photos" / "linked").symlink_to(tmp_path / "elsewhere")
    jobs = plan(expand(["photos"], recursive=True).sources, "photos/linked", "blur", batch=True)
    assert [(j.source, j.target) for j in jobs] == [("photos/a.png", "photos/linked/a.png")]


def test_with_overwrite_an_output_the_walk_found_as_an_input_is_refused(tmp_path, monkeypatch):
    """photos/sub/a.png may be the user's own photo: left out without --overwrite (a rerun with
    --skip-existing resumes), refused with it. It was left out and then replaced, exit 0."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/a.png", "photos/sub/a.png")
    sources = expand(["photos"], recursive=True).sources
    assert [j.source for j in plan(sources, "photos/sub", "blur", batch=True)] == ["photos/a.png"]
    with pytest.raises(UsageError) as raised:
        plan(sources, "photos/sub", "blur", batch=True, overwrite=True)
    assert str(raised.value) == (
        "output 'photos/sub/a.png' of 'photos/a.png' is also an input, found in 'photos'; convfilter never "
        "overwrites an input: without --overwrite it is left out as an earlier output (--skip-existing "
        "resumes), or write outside the input folder")


def test_an_input_whose_name_another_writes_is_left_out_or_refused_with_overwrite(tmp_path, monkeypatch):
    """-o photos --format tif: photos/a.tif may be an earlier run's output of photos/a.png (a rerun
    with --skip-existing resumes), or a photo of the user's: with --overwrite, refused. It was
    left out and then replaced."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/a.png", "photos/a.tif")
    sources = expand(["photos"]).sources
    assert [(j.source, j.target) for j in plan(sources, "photos", "blur", fmt="tif", batch=True)] == [
        ("photos/a.png", "photos/a.tif")]
    with pytest.raises(UsageError, match=r"^output 'photos/a.tif' of 'photos/a.png' is also an input, found in"):
        plan(sources, "photos", "blur", fmt="tif", batch=True, overwrite=True)


def test_an_input_outside_the_output_folder_is_never_taken_for_an_output(tmp_path, monkeypatch):
    """out/p.png is a hard link to x/q.png: x/q.png is still an input (it was left out)."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "x/p.png", "x/q.png")
    (tmp_path / "out").mkdir()
    os.link(tmp_path / "x/q.png", tmp_path / "out/p.png")
    jobs = plan(expand(["x"]).sources, "out", "blur", batch=True, overwrite=True)
    assert [(j.source, j.target) for j in jobs] == [("x/p.png", "out/p.png"), ("x/q.png", "out/q.png")]


def test_a_file_opened_by_the_shell_as_dev_stdin_goes_to_standard_output(tmp_path):
    """`apply /dev/stdin < photo.png`: /dev/stdin is then a regular file, and the output was
    planned beside it, as /dev/stdin_blur.png."""
    (tmp_path / "a.png").write_bytes(b"an image")
    with open(tmp_path / "a.png", "rb") as opened:
        name = f"/dev/fd/{opened.fileno()}"
        assert os.path.isfile(name)
        assert [job.target for job in plan([Source(name)], None, "blur")] == ["-"]
        assert [job.target for job in plan([Source("/dev/stdin")], None, "blur")] == ["-"]


def test_a_regular_file_in_a_folder_under_dev_is_written_beside_itself(tmp_path):
    """/dev/shm is a tmpfs of ordinary files: only descriptors' names (/dev/stdin, /dev/fd/N,
    /proc/self/fd/N), pipes and devices are streams. Everything under /dev was, for a while."""
    assert plan([Source("/dev/shm/convfilter-test/a.png")], None, "blur")[0].target == "/dev/shm/convfilter-test/a_blur.png"
    assert plan([Source("/proc/self/fd/0")], None, "blur")[0].target == "-"


@pytest.mark.parametrize("first, fmt", [("a.png", "jpg"), ("a.tif", "png")])
def test_a_rerun_into_the_input_folder_resumes_whichever_input_sorts_first(tmp_path, monkeypatch, first, fmt):
    """photos/FIRST -> photos/a.FMT exists from the first run. When the input that is its own
    output (a.FMT, refused alone) sorted first, the rerun was refused: 'output is the input'."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, f"photos/{first}", f"photos/a.{fmt}")
    sources = expand(["photos"]).sources
    assert [(j.source, j.target) for j in plan(sources, "photos", "blur", fmt=fmt, batch=True)] == [
        (f"photos/{first}", f"photos/a.{fmt}")]
    with pytest.raises(UsageError, match=rf"^output 'photos/a.{fmt}' of 'photos/{first}' is also an input"):
        plan(sources, "photos", "blur", fmt=fmt, batch=True, overwrite=True)


@pytest.mark.parametrize("name", ["//dev/stdin", "/proc/thread-self/fd/0", "/proc/self/task/1/fd/0", "link"])
def test_every_spelling_of_a_descriptor_name_goes_to_standard_output(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    os.symlink("/dev/stdin", tmp_path / "link")
    assert plan([Source(name)], None, "blur")[0].target == "-"


def test_long_operation_names_fit_a_file_name_and_count_only_what_is_left_out():
    """A single kernel name over 100 characters came out as 'kkk...+0more'; the limit counted
    characters, so nine CJK names of 10 characters made a name past 255 bytes."""
    from types import SimpleNamespace

    from convfilter.steps import op_name

    def steps(*names):
        return [SimpleNamespace(name=name, repeat=1) for name in names]

    assert op_name(steps("k" * 120)) == "k" * 120
    assert op_name(steps("核" * 10, "核" * 10)) == "核" * 10 + "+" + "核" * 10  # 61 bytes
    assert op_name(steps(*["核" * 10] * 9)) == "核" * 10 + "x9"  # 278 bytes in full
    assert op_name(steps("a" * 60, "b" * 60)) == "a" * 60 + "+1more"
    many = op_name(steps(*[f"核{i}" for i in range(40)]))
    assert many == "+".join(f"核{i}" for i in range(17)) + "+23more" and len(many.encode()) == 98  # 核17 would pass 100


def test_one_file_through_a_folder_linked_back_is_a_clash_of_outputs(tmp_path, monkeypatch):
    """d/x.png and d/sub/loop/x.png (loop -> ..) are one file with two names; their outputs beside
    them are one file too: the plan passed, and the second write failed as 'exists'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "x.png").write_bytes(b"")
    os.symlink("..", tmp_path / "d" / "sub" / "loop")
    with pytest.raises(UsageError, match=r"^several inputs would write the same output: d/x_blur.png <- 'd/x.png', "
                                         r"'d/sub/loop/x.png'$"):
        plan([Source("d/x.png"), Source("d/sub/loop/x.png")], None, "blur")
