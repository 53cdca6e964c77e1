"""The layout of the models directory: bundle file names, version names, the ``current`` pointer.

``<models_dir>/<version>/`` holds ``model.onnx`` and ``manifest.json`` (plus a report and plots for
people); ``<models_dir>/current`` is a text file naming one version. Training writes this layout
(``training.publish``), serving and the control plane read it (``streams.model.loader``). What
``current`` means for serving is documented in the README (Control plane): it is read when a
command is *published*, never when one is applied.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Final

from schemas.errors import ConfigError, ModelLoadError

MANIFEST_FORMAT: Final[int] = 1
MODEL_FILE: Final[str] = "model.onnx"
MANIFEST_FILE: Final[str] = "manifest.json"
CURRENT_FILE: Final[str] = "current"
# A version names a directory under models/: no separators, no leading dot (so never "..").
VERSION_PATTERN: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_version_name(version: object) -> bool:
    """Whether ``version`` is a safe bundle directory name (and not the pointer's name)."""
    return (
        isinstance(version, str)
        and VERSION_PATTERN.fullmatch(version) is not None
        and version != CURRENT_FILE
    )


def validate_version_name(version: str) -> str:
    """Return ``version`` if it is a safe directory name; else raise ConfigError."""
    if not is_version_name(version):
        raise ConfigError(
            f"invalid model version {version!r}: use letters, digits, '.', '_' or '-' "
            f"(at most 64, not starting with a symbol, not {CURRENT_FILE!r})"
        )
    return version


def list_versions(models_dir: Path) -> list[str]:
    """Names of the bundle directories in ``models_dir`` (those holding a manifest), sorted
    with ``vN`` names in numeric order first."""
    if not models_dir.is_dir():
        return []
    names = [
        entry.name
        for entry in models_dir.iterdir()
        if entry.is_dir() and is_version_name(entry.name) and (entry / MANIFEST_FILE).exists()
    ]

    def order(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"v(\d+)", name)
        return (0, int(match.group(1)), name) if match else (1, 0, name)

    return sorted(names, key=order)


def current_version(models_dir: Path) -> str:
    """The version named by ``<models_dir>/current``.

    Raises ModelLoadError if the file is missing, unreadable, empty or names an invalid version.
    """
    pointer = models_dir / CURRENT_FILE
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ModelLoadError(
            f"no active model: {pointer} does not exist (train one with 'sentinel train "
            "--activate')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {pointer}: {exc}") from None
    if not text:
        raise ModelLoadError(f"no active model: {pointer} is empty")
    if not is_version_name(text):
        raise ModelLoadError(f"{pointer} names an invalid version {text!r}")
    return text


def activate_version(models_dir: Path, version: str) -> None:
    """Point ``<models_dir>/current`` at ``version``, atomically (temp file + os.replace).

    Readers see the old or the new name, never a partial one. Raises ModelLoadError if the
    version has no bundle, ConfigError if the pointer cannot be written.
    """
    validate_version_name(version)
    if not (models_dir / version / MANIFEST_FILE).is_file():
        raise ModelLoadError(f"cannot activate {version}: no bundle at {models_dir / version}")
    try:
        handle, temp_name = tempfile.mkstemp(prefix=".current-", dir=models_dir)
        try:
            os.fchmod(handle, 0o644)  # mkstemp makes it private; scorers may run as another user
            with os.fdopen(handle, "w", encoding="utf-8") as temp:
                temp.write(f"{version}\n")
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, models_dir / CURRENT_FILE)
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
    except OSError as exc:
        raise ConfigError(f"cannot write {models_dir / CURRENT_FILE}: {exc.strerror}") from None
