"""Tests for pipeline.listing: keys relative to a pattern's root and glob semantics
(object stores: test_sources.py, with its in-memory filesystem)."""

from __future__ import annotations

import pytest

from pipeline.store import listing as L


@pytest.mark.parametrize(
    ("path", "root", "key"),
    [
        ("/data/imgs/a/b.jpg", "/data/imgs/**/*.jpg", "a/b.jpg"),
        ("/data/imgs/x.jpg", "/data/imgs/*.jpg", "x.jpg"),
        ("/data/imgs/ab.jpg", "/data/imgs/a*.jpg", "ab.jpg"),
        ("/data/imgs/a/b.jpg", "/data/imgs", "a/b.jpg"),
        ("/data/imgs/a/b.jpg", "/data/imgs/", "a/b.jpg"),
        ("/data/imgs/one.jpg", "/data/imgs/one.jpg", "one.jpg"),
        ("gs://bucket/x/a/b.png", "gs://bucket/x/**", "a/b.png"),
        ("s3://bucket/x/y/z.png", "s3://bucket/x/y?/*.png", "y/z.png"),
        ("C:\\data\\imgs\\a\\b.jpg", "C:\\data\\imgs\\**", "a/b.jpg"),
    ],
)
def test_key_for(path, root, key):
    assert L.key_for(path, root) == key


def test_key_for_rejects_paths_outside_the_root():
    with pytest.raises(ValueError, match="not below"):
        L.key_for("/elsewhere/a.jpg", "/data/imgs/**")


def test_list_pattern_glob_semantics(tmp_path):
    for rel in ("x.jpg", "y.TXT", "a/b.JPG", "a/c/d.png", "a/e.jpeg.bak"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")

    def keys(pattern, **kwargs):
        return sorted(k for _, k in L.list_pattern(f"{tmp_path}/{pattern}", **kwargs))

    assert keys("**/*") == ["a/b.JPG", "a/c/d.png", "x.jpg"]  # '**/' may match no dir
    assert keys("*") == ["x.jpg"]  # '*' does not cross directories
    assert keys("a/**") == ["b.JPG", "c/d.png"]
    assert keys("") == ["a/b.JPG", "a/c/d.png", "x.jpg"]  # trailing '/': everything below
    assert keys("**/*.[jJ]*") == ["a/b.JPG", "x.jpg"]
    assert keys("a/*/*.png") == ["c/d.png"]
    assert keys("*", extensions=None) == ["x.jpg", "y.TXT"]
    with pytest.raises(ValueError, match="none has an image extension"):
        list(L.list_pattern(f"{tmp_path}/*.TXT"))
    with pytest.raises(ValueError, match="no file matched"):
        list(L.list_pattern(f"{tmp_path}/nothing/**"))
    with pytest.raises(ValueError, match="is a directory"):
        list(L.list_pattern(f"{tmp_path}/a"))
