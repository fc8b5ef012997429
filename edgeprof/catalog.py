"""Where the YAML catalogs (model presets, device profiles) are found.

Search order, later folders overriding earlier ones by file name:
1. the copy shipped inside the wheel (`edgeprof/_catalog/<kind>`);
2. the repository's top-level folder (`models/`, `devices/`) for a source checkout or editable install —
   only when edgeprof's own pyproject.toml stands beside the package: in an installed wheel the folder
   above the package is site-packages, whose `models/` belongs to whatever other package put it there;
3. the user's folder (`$EDGEPROF_CONFIG_DIR/<kind>`, default `~/.config/edgeprof/<kind>`).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from platformdirs import user_config_dir

from edgeprof.errors import CatalogError

_PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = _PACKAGE_DIR / "_data"
"""What edgeprof ships besides catalogs (`edgeprof/_data/`, its README names each file): texts, a trained model."""


def user_config_root() -> Path:
    """The user's edgeprof configuration folder; `EDGEPROF_CONFIG_DIR` overrides it."""
    env = os.environ.get("EDGEPROF_CONFIG_DIR")
    return Path(env) if env else Path(user_config_dir("edgeprof"))


def catalog_dirs(kind: str) -> list[Path]:
    """Existing folders that hold YAML entries of `kind` ("models" or "devices"), lowest priority first."""
    candidates = [
        _PACKAGE_DIR / "_catalog" / kind,
        *([_PACKAGE_DIR.parent / kind] if _is_source_checkout(_PACKAGE_DIR.parent) else []),
        user_config_root() / kind,
    ]
    seen: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder not in seen:
            seen.append(folder)
    return seen


def _is_source_checkout(folder: Path) -> bool:
    try:
        return 'name = "edgeprof"' in (folder / "pyproject.toml").read_text()
    except OSError:
        return False


def load_entries(kind: str) -> dict[str, tuple[dict, Path]]:
    """Every YAML entry of `kind` by name, with the file it came from."""
    entries: dict[str, tuple[dict, Path]] = {}
    for folder in catalog_dirs(kind):
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            data = read_yaml(path)
            name = str(data.get("name") or path.stem)
            entries[name] = (data, path)
    return entries


def read_yaml(path: Path) -> dict:
    """Parse one YAML mapping, turning syntax errors into a one-line `CatalogError`."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CatalogError(f"{path}: not readable YAML ({first_line})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a YAML mapping at the top level")
    return data
