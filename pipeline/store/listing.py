"""File-pattern listing and keys: which files a ``source.pattern`` names, and their keys.

Globs on any Beam filesystem (local, gs://, s3://): ``*`` and ``?`` stay within a
directory, ``**`` recurses (``a/**/*.jpg`` includes ``a/x.jpg``), a trailing ``/`` means
everything below. Local trees are walked here (Beam's listing silently drops dangling
symlinks, which must surface as read failures); elsewhere one Beam listing of the root.
Keys are paths relative to the patterns' common root, made printable. No PTransforms here
(:class:`pipeline.beam.sources.ReadImages` uses these functions).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence

from apache_beam.io.filesystems import FileSystems

from pipeline.store.decode import IMAGE_EXTENSIONS, short_error

__all__ = [
    "IMAGE_EXTENSIONS",
    "check_files_exist",
    "check_pattern_matches",
    "class_folders",
    "common_root",
    "folder_label",
    "glob_root",
    "key_for",
    "list_pattern",
    "normalise_pattern",
    "printable",
    "source_root",
    "relative_key",
    "split_patterns",
]

_WILDCARDS = re.compile(r"[*?\[]")


def printable(text: str) -> str:
    """``text`` as valid Unicode: file names that are not UTF-8 (Python keeps their bytes as
    lone surrogates) get those bytes as ``\\xNN``, so keys and sources can go into JSON and
    TFRecords. Valid text is returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


def split_patterns(pattern: str) -> list[str]:
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    if not patterns:
        raise ValueError(
            f"pattern={pattern!r} names no files: give a glob such as '/data/imgs/**/*.jpg' "
            "(several separated by commas)"
        )
    return patterns


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def normalise_pattern(pattern: str) -> str:
    """Absolute posix local patterns; a trailing '/' means everything below (``dir/**``)."""
    if _is_local(pattern):
        trailing = pattern.endswith(("/", os.sep))
        pattern = os.path.abspath(pattern).replace(os.sep, "/")
        if trailing:
            pattern = pattern.rstrip("/") + "/"
    if pattern.endswith("/"):
        pattern += "**"
    return pattern


def glob_root(pattern: str) -> str:
    """The fixed directory part of a glob: up to the last '/' before the first wildcard.

    "/data/imgs/**/*.jpg" -> "/data/imgs/"; "gs://b/x/a*.png" -> "gs://b/x/";
    a pattern without wildcards (one file) -> its directory.
    """
    m = _WILDCARDS.search(pattern)
    prefix = pattern[: m.start()] if m else pattern
    return prefix[: prefix.rfind("/") + 1]


def source_root(pattern: str) -> str:
    """The common root of a ``source.pattern``'s comma-separated globs (normalised)."""
    return common_root([normalise_pattern(p) for p in split_patterns(pattern)])


def common_root(patterns: Sequence[str]) -> str:
    """The deepest directory holding every pattern's :func:`glob_root` ('' when they share
    none, e.g. a local and a gs:// pattern). ReadImages keys files relative to it, so two
    different files never share a key ("/d/a/*,/d/b/*": "a/x.jpg" and "b/x.jpg")."""
    roots = [glob_root(p) for p in patterns]
    prefix = os.path.commonprefix(roots)
    return prefix[: prefix.rfind("/") + 1]


def relative_key(path: str, root: str) -> str:
    if root and path.startswith(root) and len(path) > len(root):
        return path[len(root) :]
    return path


def key_for(path: str, root: str) -> str:
    """Stable key of ``path``: relative to ``root``, posix separators.

    ``root`` is a glob (its :func:`glob_root` is used), a directory, or the path itself (a
    pattern naming one file: the key is the file name).
    "/data/imgs/a/b.jpg" under "/data/imgs/**/*.jpg" -> "a/b.jpg".
    """
    path = path.replace("\\", "/") if _is_local(path) else path
    root = root.replace("\\", "/") if _is_local(root) else root
    if _WILDCARDS.search(root):
        root = glob_root(root)
    elif path == root:
        return path.rsplit("/", 1)[-1]
    elif not root.endswith("/"):
        root += "/"
    if not path.startswith(root) or len(path) == len(root):
        raise ValueError(f"path {path!r} is not below the pattern root {root!r}")
    return path[len(root) :]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob -> regex: '*' and '?' stay within a directory, '**' crosses directories and
    '**/' also matches no directory at all ('a/**/*.jpg' matches 'a/x.jpg')."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _has_extension(path: str, extensions: tuple[str, ...] | None) -> bool:
    if extensions is None:
        return True
    return path.lower().endswith(tuple("." + e.lower().lstrip(".") for e in extensions))


def _iter_candidates(pattern: str) -> Iterator[str]:
    """Every file path the pattern matches, lazily where the filesystem allows.

    Locally the tree is walked here (not with Beam's listing, which silently drops dangling
    symlinks: they must surface as read failures). Elsewhere one Beam listing of the root.
    """
    if not _WILDCARDS.search(pattern):
        if _is_local(pattern):
            if os.path.isdir(pattern):
                raise ValueError(
                    f"pattern {pattern!r} is a directory: use {pattern.rstrip('/')}/** "
                    "to read the images below it"
                )
            if os.path.lexists(pattern):
                yield pattern
        else:
            for meta in FileSystems.match([pattern])[0].metadata_list:
                yield meta.path
        return
    regex = _glob_regex(pattern)
    root = glob_root(pattern)
    if _is_local(pattern):
        rest = pattern[len(root) :]
        max_depth = None if "**" in rest else rest.count("/")  # no '**': walk no deeper
        for dirpath, dirs, files in os.walk(root or "."):
            rel = os.path.relpath(dirpath, root or ".")
            depth = 0 if rel == "." else rel.count(os.sep) + 1
            if max_depth is not None and depth >= max_depth:
                dirs[:] = []
            dirs.sort()
            base = dirpath.replace(os.sep, "/").rstrip("/") + "/"
            for name in sorted(files):
                path = base + name
                if regex.match(path):
                    yield path
    else:
        for meta in FileSystems.match([root + "**"])[0].metadata_list:
            if not meta.path.endswith("/") and regex.match(meta.path):
                yield meta.path


def list_pattern(
    pattern: str, *, extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS
) -> Iterator[tuple[str, str]]:
    """(path, key) of the files a glob matches with an allowed extension (None: all).

    Raises ValueError when the pattern matches no such file.
    """
    pattern = normalise_pattern(pattern)
    seen = skipped = 0
    for path in _iter_candidates(pattern):
        if _has_extension(path, extensions):
            seen += 1
            yield path, key_for(path, pattern)
        else:
            skipped += 1
    if not seen:
        raise ValueError(_no_match_message(pattern, skipped, extensions))


def _no_match_message(pattern: str, skipped: int, extensions: tuple[str, ...] | None) -> str:
    detail = (
        f"{skipped} file(s) matched but none has an image extension {extensions}"
        if skipped
        else "no file matched"
    )
    return f"pattern {pattern!r} matches no image file ({detail}): check the path and glob"


def check_pattern_matches(pattern: str, extensions: tuple[str, ...] | None) -> None:
    """Fail at pipeline construction, not after workers started, for an empty pattern.

    Local: stops at the first matching image file. Elsewhere one cheap limited listing
    (the extension check then happens when the files are listed for real).
    """
    pattern = normalise_pattern(pattern)
    if _is_local(pattern):
        next(list_pattern(pattern, extensions=extensions))
        return
    candidates = [pattern]
    if "**/" in pattern:  # '**/' may match no directory: try that reading too
        candidates.append(pattern.replace("**/", "", 1))
    try:
        results = FileSystems.match(candidates, limits=[1] * len(candidates))
    except Exception as e:
        raise ValueError(f"cannot list pattern {pattern!r}: {short_error(e)}") from e
    if not any(r.metadata_list for r in results):
        raise ValueError(_no_match_message(pattern, 0, extensions))


def class_folders(root: str) -> tuple[str, ...]:
    """The sorted names of the folders directly below ``root`` (``source.labels: folders``:
    folder i holds class i). Local: the directory's entries; object stores: the first path
    segment of every object below the root (one listing). ValueError when there is none."""
    folders = _folders_below(root) if root else ()
    if not folders:
        raise ValueError(
            f"folders: no folder below {root!r}; put each class's images in <root>/<class "
            "name>/ (the class ids follow the sorted folder names)"
        )
    return folders


def _folders_below(root: str) -> tuple[str, ...]:
    if _is_local(root):
        with os.scandir(root) as entries:
            return tuple(
                sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
            )
    try:
        matched = FileSystems.match([root + "**"])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - said once, with the root
        raise ValueError(f"cannot list {root!r} for its class folders: {short_error(e)}") from e
    names = {m.path[len(root) :].split("/", 1)[0] for m in matched
             if m.path.startswith(root) and "/" in m.path[len(root) :]}  # fmt: skip
    return tuple(sorted(n for n in names if n and not n.startswith(".")))


def folder_label(key: str, ids: Mapping[str, int]) -> int:
    """The label of a file keyed ``key`` (relative to the root): the id of its first folder
    (``ids``: folder name -> class id); -1 for a file directly under the root or in no
    class folder."""
    head, sep, _ = key.partition("/")
    return ids.get(head, -1) if sep else -1


def check_files_exist(pattern: str) -> None:
    """For TFRecord patterns: at least one file (any name)."""
    pattern = normalise_pattern(pattern)
    try:
        found = FileSystems.match([pattern], limits=[1])[0].metadata_list
    except Exception as e:
        raise ValueError(f"cannot list pattern {pattern!r}: {short_error(e)}") from e
    if not found:
        raise ValueError(f"TFRecord pattern {pattern!r} matches no file: check the path")
