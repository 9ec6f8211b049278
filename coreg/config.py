"""Stage configuration: frozen dataclasses with YAML and ``--set key=value`` overrides.

Precedence is dataclass defaults < ``--config file.yaml`` < ``--set`` flags. Overrides use
dotted keys (``method.p_threshold=0.4``), values are parsed with :func:`ast.literal_eval`
(falling back to the raw string) and type-checked against the field's declared type.
Every config validates itself in ``__post_init__`` and raises :class:`ValueError`.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from coreg.errors import CoregError

T = TypeVar("T", bound="StageConfig")


class ConfigError(CoregError):
    """A configuration value or key is invalid (shown to users as a one-line error)."""


def parse_value(text: str) -> Any:
    """Parse one ``--set`` value: a Python literal if it is one, else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """Parse ``["a.b=1", "c=x"]`` into ``{"a.b": 1, "c": "x"}``.

    Raises:
        ConfigError: an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (a resolved type), converting where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key} must be a boolean, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if tp is str:
        if not isinstance(value, str):
            return str(value)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return tp.from_dict(value, prefix=key + ".") if issubclass(tp, StageConfig) else tp(**value)
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base class of every stage/sub-config: a frozen dataclass with helpers."""

    def __post_init__(self) -> None:
        # Once for every config: 1e999 parses to inf and YAML has .nan; neither is ever a valid
        # setting, and a non-finite lr/weight only shows up later as a "diverged" run.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple | list) else (value,)
            for v in values:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{f.name} must be a finite number, got {v}")
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an invalid value. Subclasses extend this."""

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
        """Build from a nested mapping, checking keys and types.

        Raises:
            ConfigError: unknown key or wrongly typed value.
        """
        return cls().with_updates(data, prefix=prefix)

    def with_updates(self: T, data: dict[str, Any], *, prefix: str = "") -> T:
        """Return a copy with nested or dotted-key updates applied (types checked)."""
        hints = self._hints()
        names = {f.name for f in dataclasses.fields(self)}
        nested: dict[str, dict[str, Any]] = {}
        direct: dict[str, Any] = {}
        for key, value in data.items():
            head, _, rest = key.partition(".")
            if head not in names:
                raise ConfigError(
                    f"unknown config key {prefix + head!r}; valid keys: {', '.join(sorted(names))}"
                )
            if rest:
                nested.setdefault(head, {})[rest] = value
            elif isinstance(value, dict) and isinstance(getattr(self, head), StageConfig):
                nested.setdefault(head, {}).update(value)
            else:
                direct[head] = _coerce(value, hints[head], prefix + head)
        for head, sub in nested.items():
            cur = direct.get(head, getattr(self, head))
            if not isinstance(cur, StageConfig):
                raise ConfigError(f"{prefix + head} is not a section; cannot set {list(sub)}")
            direct[head] = cur.with_updates(sub, prefix=prefix + head + ".")
        try:
            return dataclasses.replace(self, **direct)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None

    def with_overrides(self: T, items: typing.Iterable[str]) -> T:
        """Apply ``--set key=value`` strings."""
        return self.with_updates(parse_overrides(items))

    @classmethod
    def from_yaml(cls: type[T], path: str | Path) -> T:
        """Load a YAML file of (possibly nested) values on top of the defaults."""
        return cls().with_yaml(path)

    def with_yaml(self: T, path: str | Path) -> T:
        """Apply a YAML file of (possibly nested) values on top of this config.

        Raises:
            ConfigError: unreadable file, not a mapping, unknown key or bad type.
        """
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        return self.with_updates(data)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-dict form (lists for tuples), suitable for YAML."""

        def conv(v: Any) -> Any:
            if isinstance(v, tuple | list):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v

        return conv(dataclasses.asdict(self))

    def to_params(self) -> dict[str, Any]:
        """Flatten to dotted keys (``method.p_threshold``) for ``mlflow.log_params``."""
        return flatten(self.to_dict())

    def to_yaml(self) -> str:
        """Resolved configuration as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def build_config(
    cls: type[T], *, config_file: str | Path | None = None, overrides: typing.Iterable[str] = (),
    base: T | None = None,
) -> T:
    """Defaults < YAML file < ``--set`` overrides."""
    cfg = base if base is not None else cls()
    if config_file:
        cfg = cfg.with_yaml(config_file)
    return cfg.with_overrides(overrides)


def check(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond``."""
    if not cond:
        raise ConfigError(message)
