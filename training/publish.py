"""Writing model bundles: all or nothing, never overwriting.

A bundle is assembled in a hidden staging directory inside the models directory (same file
system), then renamed to ``<models_dir>/<version>`` in one step, so a reader sees either no bundle
or a complete one. If anything fails before the rename, the staging directory is removed. The
layout and the ``current`` pointer live in :mod:`schemas.models_dir`, the manifest in
:mod:`schemas.manifest`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from schemas.errors import ConfigError
from schemas.models_dir import MANIFEST_FILE, MODEL_FILE, list_versions, validate_version_name

STAGING_PREFIX: Final[str] = ".staging-"


def next_version(models_dir: Path) -> str:
    """``v<N+1>`` where N is the highest ``vN`` directory in ``models_dir`` (``v1`` if none)."""
    numbers = [0]
    if models_dir.is_dir():
        for entry in models_dir.iterdir():
            match = re.fullmatch(r"v(\d+)", entry.name)
            if match and entry.is_dir():
                numbers.append(int(match.group(1)))
    return f"v{max(numbers) + 1}"


def check_version_free(models_dir: Path, version: str) -> None:
    """Raise ConfigError if ``version`` is not a valid name or already exists."""
    validate_version_name(version)
    if (models_dir / version).exists():
        raise ConfigError(
            f"model version {version} already exists in {models_dir}; bundles are never "
            "overwritten (omit --version to take the next free vN)"
        )


@contextmanager
def staging_dir(models_dir: Path) -> Iterator[Path]:
    """A fresh hidden directory inside ``models_dir``, removed on exit unless published.

    Creates ``models_dir`` if needed. Raises ConfigError at once if it cannot be written, so a
    long training run does not fail at the very end.
    """
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=models_dir))
        staging.chmod(0o755)  # mkdtemp makes it private; scorers may run as another user
    except OSError as exc:
        raise ConfigError(
            f"models directory {models_dir} is not writable: {exc.strerror or exc}"
        ) from None
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def publish(staging: Path, models_dir: Path, version: str) -> Path:
    """Move the staged bundle to ``<models_dir>/<version>`` in one rename.

    Raises ConfigError if the version appeared meanwhile or the bundle is incomplete.
    """
    for required in (MODEL_FILE, MANIFEST_FILE):
        if not (staging / required).is_file():
            raise ConfigError(f"internal error: staged bundle lacks {required}")
    check_version_free(models_dir, version)
    target = models_dir / version
    try:
        os.rename(staging, target)
    except OSError as exc:
        raise ConfigError(f"cannot publish bundle {target}: {exc.strerror or exc}") from None
    return target


__all__ = [
    "check_version_free",
    "list_versions",
    "next_version",
    "publish",
    "sha256_file",
    "staging_dir",
]
