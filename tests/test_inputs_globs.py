"""Quoted globs: walked like a directory from their fixed part, files only, mirrored below it."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from convfilter.inputs import expand, walk
from convfilter.outputs import plan


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def paths(sources) -> list[str]:
    return [source.path for source in sources]


def test_a_recursive_glob_never_follows_a_symlink_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "in/a.png", "in/sub/b.png")
    os.symlink("..", tmp_path / "in" / "sub" / "up")  # in/sub/up/sub/up/... is in/ again
    assert paths(expand(["in/**/*.png"]).sources) == ["in/a.png", "in/sub/b.png"]
    assert paths(expand(["in/*/**/*.png"]).sources) == ["in/sub/b.png"]  # not in/sub/up/a.png either


def test_a_recursive_glob_takes_a_folder_reached_two_ways_once_like_r(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "in/a.png", "in/sub/b.png")
    os.symlink("sub", tmp_path / "in" / "linked")
    found = expand(["in/**/*.png"]).sources
    assert paths(found) == paths(walk("in", recursive=True))
    assert sorted(os.path.realpath(path) for path in paths(found)) == [
        str((tmp_path / name).resolve()) for name in ("in/a.png", "in/sub/b.png")
    ]


def test_a_glob_takes_files_and_mirrors_a_folder_named_like_an_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "in/fake.png/inner.png", "in/fake.png/other.jpg", "in/sub/d.png")
    expansion = expand(["in/**/*.png"])
    assert [(s.path, s.base) for s in expansion.sources] == [
        ("in/fake.png/inner.png", "in"), ("in/sub/d.png", "in"),
    ]  # the folder in/fake.png is no input of its own: its other.jpg is not taken
    jobs = plan(expansion.sources, "go", "blur", batch=expansion.batch)
    assert [job.target for job in jobs] == ["go/fake.png/inner.png", "go/sub/d.png"]
    jobs = plan(expansion.sources, None, "blur", batch=expansion.batch)
    assert [job.target for job in jobs] == ["in_blur/fake.png/inner.png", "in_blur/sub/d.png"]


def test_a_glob_that_matches_only_folders_matches_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "in/fake.png/inner.png")
    assert paths(expand(["in/*.png"]).sources) == ["in/*.png"]  # a per-file "no such file" later


@pytest.mark.parametrize("pattern", [
    "*", "*.png", "**", "**/*.png", "*/*.png", "a/**/*.png", "**/sub/*", "*/**/b*", "[ab]*/*",
    "?/*.png", "**/**/*.png", "sub/*/*.jpg", "**/a/**/*", "[!a]*/**/*.tif",
    ".*", ".*/*.png", "**/.h*", ".hidden/*",  # hidden names, where the pattern names them too
])
def test_a_glob_finds_the_files_python_glob_finds(tmp_path, monkeypatch, pattern):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "t/a.png", "t/b.jpg", "t/.h.png", "t/a/x.png", "t/a/sub/y.png", "t/b.png/z.png",
          "t/sub/a/q.tif", "t/sub/a/m.jpg", "t/sub/b1.png", "t/.hidden/w.png", "t/dd/sub/a/v.jpg", "t/c/sub/n.jpg")
    expected = {match for match in glob.glob(f"t/{pattern}", recursive=True) if not os.path.isdir(match)}
    assert expected  # a pattern that matches nothing gives a placeholder source instead
    found = paths(expand([f"t/{pattern}"]).sources)
    assert sorted(found) == sorted(expected) and len(found) == len(set(found))
    assert found == sorted(found, key=lambda path: Path(path).parts)  # sorted by path, like a walk


def test_a_glob_with_no_folder_part_lists_plain_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "b.png", "a.png", "sub/c.png")
    assert [(s.path, s.base) for s in expand(["*.png"]).sources] == [("a.png", "."), ("b.png", ".")]
    assert paths(expand(["**/*.png"]).sources) == ["a.png", "b.png", "sub/c.png"]


def test_a_glob_ending_in_a_slash_takes_the_folders_it_matches_as_folder_arguments(tmp_path, monkeypatch):
    """'photos/*/': the images in each folder it matches (-r: and below), mirrored below photos,
    and nothing from photos itself, which the pattern cannot match."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/1.png", "photos/a/3.png", "photos/a/notes.txt", "photos/a/b/4.png", "photos/c/7.jpg",
          "photos/.hid/6.png")
    expansion = expand(["photos/*/"])
    assert paths(expansion.sources) == ["photos/a/3.png", "photos/c/7.jpg"]
    assert [job.target for job in plan(expansion.sources, "out", "blur", batch=True)] == ["out/a/3.png", "out/c/7.jpg"]
    assert paths(expand(["photos/*/"], recursive=True).sources) == ["photos/a/3.png", "photos/a/b/4.png", "photos/c/7.jpg"]
    assert paths(expand(["photos/**/"]).sources) == ["photos/1.png", "photos/a/3.png", "photos/a/b/4.png", "photos/c/7.jpg"]


def test_dot_and_dot_dot_after_a_wildcard_are_a_usage_error(tmp_path, monkeypatch):
    from convfilter.errors import UsageError

    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "photos/1.png", "photos/a/3.png")
    for pattern in ("photos/*/../*.png", "photos/*/./3.png", "photos/*/.", "photos/*/./"):  # Path drops a '.' inside
        with pytest.raises(UsageError, match=r"'\.' and '\.\.' only before its first wildcard"):
            expand([pattern])
    assert paths(expand(["photos/../photos/*.png"]).sources) == ["photos/../photos/1.png"]  # before it: fine
