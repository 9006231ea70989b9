"""Reading and writing a configuration: strict TOML loading, ``--set`` overrides and hashing.

Loading rejects unknown sections and keys and wrong types *before any work is done*, with a
:class:`~secfed.errors.ConfigError` that names the key and what is allowed, then validates
(:func:`secfed.config.schema.validate`). The fully resolved configuration is written back as TOML
into every run directory; :func:`config_hash` names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import tomli_w

from secfed.config.schema import SECTIONS, ExperimentConfig, validate
from secfed.errors import ConfigError

__all__ = [
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "config_to_dict",
    "config_to_toml",
    "config_hash",
]


def _section_types() -> dict[str, type]:
    hints = get_type_hints(ExperimentConfig)
    return {name: hints[name] for name in SECTIONS}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is list:
        (item_type,) = get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {item_type.__name__}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation!r}")  # pragma: no cover


def config_from_dict(data: Mapping[str, Any], *, base_dir: str | Path = ".") -> ExperimentConfig:
    """Build and validate a configuration from nested mappings (as parsed from TOML).

    Args:
        data: ``{section: {key: value}}``; missing sections and keys take their defaults.
        base_dir: Folder that relative data paths are resolved against.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: On an unknown section or key, a wrong type, or a bad value.
    """
    types = _section_types()
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; allowed sections: {', '.join(types)}")
    sections: dict[str, Any] = {}
    for name, cls in types.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] must be a table of keys, got {raw!r}")
        hints = get_type_hints(cls)
        allowed = [f.name for f in fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in hints:
                raise ConfigError(f"unknown key {name}.{key}; allowed keys in [{name}]: {', '.join(allowed)}")
            kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
        sections[name] = cls(**kwargs)
    cfg = ExperimentConfig(**sections, base_dir=str(base_dir))
    validate(cfg)
    return cfg


def load_config(path: str | Path, *, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate a TOML configuration file.

    Args:
        path: The TOML file.
        overrides: ``section.key=value`` strings (values in TOML syntax; bare words are strings).

    Returns:
        The validated configuration; relative data paths resolve against the file's folder.

    Raises:
        ConfigError: If the file is missing or not valid TOML, or on any invalid key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as a UTF-8 TOML file: {exc}") from exc
    data = apply_overrides(data, overrides=overrides)
    base = data.pop("_base_dir", None)
    return config_from_dict(data, base_dir=base if isinstance(base, str) else path.resolve().parent)


def apply_overrides(data: Mapping[str, Any], *, overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to parsed TOML data.

    Args:
        data: Parsed TOML.
        overrides: Override strings; the value is parsed as TOML (``3``, ``1e-3``, ``true``,
            ``[1, 2]``, ``"text"``) or else taken as a bare string.

    Returns:
        A new nested dict.

    Raises:
        ConfigError: If an override is not of the form ``section.key=value``.
    """
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"override {item!r}: {section} is not a section")
        table[key] = value
    return out


def config_to_dict(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """The configuration as nested plain dicts (every key, defaults included)."""
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}


def config_to_toml(cfg: ExperimentConfig) -> str:
    """The fully resolved configuration as TOML text (data root made absolute)."""
    data = config_to_dict(cfg)
    if cfg.data.root:
        data["data"]["root"] = str(cfg.data_root())
    return tomli_w.dumps(data)


def config_hash(cfg: ExperimentConfig) -> str:
    """SHA-256 of the canonical JSON of the configuration (for reports and run identity)."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
