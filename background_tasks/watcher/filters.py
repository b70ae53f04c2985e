"""Which paths the watcher may turn into tasks, decided from the path alone (and a walk that honours it).

Split out of ``watcher.core`` (which re-exports these names).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from background_tasks.extraction.extractors import SUPPORTED_EXTENSIONS

log = logging.getLogger("background_tasks.watcher.core")  # the name its lines had before the split

#: Temporary, partial and system files (matched case-insensitively against the file name).
IGNORED_FILE_PATTERNS: tuple[str, ...] = (
    "~$*",
    ".~lock*",
    "*.tmp",
    "*.part",
    "*.crdownload",
    "*.download",
    ".ds_store",
    "thumbs.db",
    "desktop.ini",
)
#: Folders whose contents are never enqueued (matched case-insensitively against each folder name).
IGNORED_DIR_PATTERNS: tuple[str, ...] = (".git", "__macosx", "$recycle.bin", ".trash*", "@eadir")

_WIN_HIDDEN = 0x2  # FILE_ATTRIBUTE_HIDDEN


class PathFilter:
    """Decides from a path alone whether a file may become a task.

    Ignored: unsupported extensions, the temporary/partial/system names of the
    issue, hidden files and folders (a leading dot), the ignored folders, MIDAS's
    own data and log folders (so a watched folder containing them cannot feed
    itself), and the extra glob patterns, which are matched against the file
    name, each folder name below the watched root, and the path relative to it.
    """

    def __init__(
        self,
        roots: Iterable[Path] = (),
        extensions: Iterable[str] = SUPPORTED_EXTENSIONS,
        extra_patterns: Iterable[str] = (),
        exclude_dirs: Iterable[Path] = (),
    ) -> None:
        self.roots = tuple(sorted((Path(os.path.abspath(r)) for r in roots), key=lambda p: len(p.parts), reverse=True))
        self.extensions = frozenset(e.lower() for e in extensions)
        self.extra_patterns = tuple(p.strip().lower() for p in extra_patterns if p.strip())
        self.exclude_dirs = tuple(Path(os.path.abspath(d)) for d in exclude_dirs)

    def _relative(self, path: Path) -> tuple[str, ...]:
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root).parts
        return path.parts[1:]  # outside every root: judge all components but the anchor

    def dir_reason(self, name: str) -> str | None:
        """Why a folder (by name) is skipped, or None."""
        lowered = name.lower()
        for pattern in IGNORED_DIR_PATTERNS:
            if fnmatch.fnmatchcase(lowered, pattern):
                return f"folder {name!r} is ignored ({pattern})"
        if lowered.startswith("."):
            return f"folder {name!r} is hidden"
        for pattern in self.extra_patterns:
            if fnmatch.fnmatchcase(lowered, pattern):
                return f"folder {name!r} matches the ignore pattern {pattern!r}"
        return None

    def is_excluded_dir(self, path: Path) -> bool:
        """MIDAS's own folders (data, logs): never scanned."""
        absolute = Path(os.path.abspath(path))
        return any(absolute == d or absolute.is_relative_to(d) for d in self.exclude_dirs)

    def reason(self, path: str | os.PathLike[str]) -> str | None:
        """Why ``path`` is ignored, or None when it may be enqueued."""
        absolute = Path(os.path.abspath(path))
        if self.is_excluded_dir(absolute):
            return "inside MIDAS's own data or log folder"
        parts = self._relative(absolute)
        for folder in parts[:-1]:
            why = self.dir_reason(folder)
            if why:
                return why
        name = absolute.name
        lowered = name.lower()
        for pattern in IGNORED_FILE_PATTERNS:
            if fnmatch.fnmatchcase(lowered, pattern):
                return f"temporary or system file ({pattern})"
        if lowered.startswith("."):
            return "hidden file"
        relative = "/".join(parts).lower()
        for pattern in self.extra_patterns:
            if fnmatch.fnmatchcase(lowered, pattern) or fnmatch.fnmatchcase(relative, pattern):
                return f"matches the ignore pattern {pattern!r}"
        if absolute.suffix.lower() not in self.extensions:
            return f"unsupported type {absolute.suffix.lower() or '(no extension)'}"
        return None

    def accepts(self, path: str | os.PathLike[str]) -> bool:
        return self.reason(path) is None


def hidden_by_attribute(st: os.stat_result) -> bool:
    """Windows' hidden attribute (POSIX has only the leading dot, which PathFilter handles)."""
    return bool(getattr(st, "st_file_attributes", 0) & _WIN_HIDDEN)


def walk_files(root: Path, path_filter: PathFilter, recursive: bool = True) -> Iterator[Path]:
    """Accepted files under ``root``; ignored, hidden and symlinked folders are not entered."""
    stack = [Path(os.path.abspath(root))]
    while stack:
        folder = stack.pop()
        if path_filter.is_excluded_dir(folder):
            continue
        try:
            with os.scandir(folder) as entries:
                items = list(entries)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        for entry in items:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive and path_filter.dir_reason(entry.name) is None:
                        stack.append(Path(entry.path))
                    continue
            except OSError:
                continue
            path = Path(entry.path)
            if path_filter.accepts(path):
                yield path
