"""The machinery every config class shares: explicit-field tracking, validation, env loading, layering.

Every config class records which fields were given explicitly, so that values
can be layered field by field: explicit argument > config object > environment
> default (:meth:`_Config.resolve`). ``from_env()`` reads the class's variables
with environs and reports every invalid one at once.
"""

from __future__ import annotations

import dataclasses
import os
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple, Type, TypeVar

from environs import Env, EnvError

from ..exceptions import ConfigError, UnknownOptionError
from ..observability.redaction import MASK, Redactor, is_secret_key, redact


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


#: Marks a field that was not given; replaced by the default in ``__post_init__``.
UNSET: Any = _Unset()

ConfigT = TypeVar("ConfigT", bound="_Config")


# -- the config base ---------------------------------------------------------


_FIELD_NAMES: Dict[type, FrozenSet[str]] = {}


def _field_names(cls: Type["_Config"]) -> FrozenSet[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


class _Config:
    """Shared machinery of the config dataclasses: validation, explicit fields, env, layering.

    Each subclass is a ``@dataclasses.dataclass(frozen=True, repr=False)`` whose fields
    are declared with :func:`_field`, so type checkers see the real constructor.
    """

    __dataclass_fields__: ClassVar[Dict[str, "dataclasses.Field[Any]"]]
    #: field name -> validator(value) -> normalised value (raises ValueError)
    _VALIDATORS: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    #: field name -> (ENV_VAR, environs parser name)
    _ENV: ClassVar[Mapping[str, Tuple[str, str]]] = {}
    #: fields whose values are secrets: masked in repr()
    _SECRETS: ClassVar[Tuple[str, ...]] = ()
    _explicit: FrozenSet[str]

    def __new__(cls: Type[ConfigT], *args: Any, **kwargs: Any) -> ConfigT:
        # Here rather than in __init__, so the dataclass keeps its generated, typed __init__.
        unknown = sorted(set(kwargs) - _field_names(cls))
        if unknown:
            raise UnknownOptionError(
                f"{cls.__name__} got unknown option(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_field_names(cls)))})"
            )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        explicit = set()
        errors: Dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is UNSET:
                factory = f.metadata.get("factory")
                object.__setattr__(self, f.name, factory() if factory else f.metadata.get("default"))
                continue
            explicit.add(f.name)
            check = self._VALIDATORS.get(f.name)
            if check is not None:
                try:
                    object.__setattr__(self, f.name, check(value))
                except ValueError as exc:
                    errors[f.name] = f"{f.name} {exc}"
        object.__setattr__(self, "_explicit", frozenset(explicit))
        if not errors:
            try:
                self._validate()
            except ValueError as exc:
                errors["__all__"] = str(exc)
        if errors:
            raise ConfigError(
                f"invalid {type(self).__name__}: " + "; ".join(errors.values()), errors
            )

    def _validate(self) -> None:
        """Cross-field checks; raise ValueError."""

    def is_set(self, name: str) -> bool:
        """True if *name* was given explicitly (as an argument or from the environment)."""
        return name in self._explicit

    @property
    def explicit_fields(self) -> FrozenSet[str]:
        return self._explicit

    def explicit_items(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._explicit}

    def redactor(self, into: Optional[Redactor] = None) -> Redactor:
        """*into* (a new :class:`~syncworkers.observability.redaction.Redactor` when None), told
        the secrets of this config beyond those the redaction rule finds by itself."""
        return into if into is not None else Redactor()

    def __repr__(self) -> str:
        redactor = self.redactor()
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._SECRETS and value:
                value = MASK
            elif isinstance(value, (str, MappingProxyType)):
                # Secret headers (default_headers), credentials and secret segments of URLs are masked.
                value = redactor.redact(dict(value) if isinstance(value, MappingProxyType) else value)
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__

    @classmethod
    def _read_env(cls, names: Optional[Iterable[str]] = None) -> Tuple[Dict[str, Any], Dict[str, str]]:
        """Read this class's variables: (values by field, errors by variable)."""
        wanted = None if names is None else set(names)
        env = Env(eager=False)
        values: Dict[str, Any] = {}
        for field_name, (var, parser) in cls._ENV.items():
            if (wanted is not None and field_name not in wanted) or var not in os.environ:
                continue
            values[field_name] = getattr(env, parser)(var, None)
        errors: Dict[str, str] = {}
        try:
            env.seal()
        except EnvError as exc:
            for var, msgs in (getattr(exc, "error_messages", {}) or {}).items():
                errors[var] = f"{var}={_quoted(var)}: {'; '.join(map(str, msgs))}"
        by_var = {var: name for name, (var, _) in cls._ENV.items()}
        bad_fields = {by_var.get(var) for var in errors}
        return {k: v for k, v in values.items() if v is not None and k not in bad_fields}, errors

    @classmethod
    def _from_values(cls: Type[ConfigT], values: Dict[str, Any], env_errors: Optional[Dict[str, str]] = None,
                     env_fields: Iterable[str] = ()) -> ConfigT:
        """Build from *values*; errors in env-derived fields name their variable.

        Every problem (unparseable variables in *env_errors* and invalid values)
        is raised together in one ConfigError.
        """
        errors = dict(env_errors or {})
        from_env = set(env_fields)
        config: Optional[ConfigT] = None
        try:
            config = cls(**values)
        except UnknownOptionError:
            raise
        except ConfigError as exc:
            for key, message in exc.errors.items():
                if key in from_env:
                    var = cls._ENV[key][0]
                    errors[var] = f"{var}={_quoted(var)}: {message}"
                else:
                    errors[key] = message
        if errors or config is None:
            raise ConfigError(f"invalid {cls.__name__} settings: " + "; ".join(errors.values()),
                              errors)
        return config

    @classmethod
    def from_env(cls: Type[ConfigT], **overrides: Any) -> ConfigT:
        """Build from the environment; *overrides* win over the variables."""
        values, errors = cls._read_env()
        env_fields = set(values) - set(overrides)
        values.update(overrides)
        return cls._from_values(values, errors, env_fields)

    @classmethod
    def resolve(cls: Type[ConfigT], *layers: Any, env: bool = True, **explicit: Any) -> ConfigT:
        """Merge field by field: *explicit* (non-None) > each layer in order > environment > default.

        A layer is a config instance (only its explicit fields count), a dict, or None.
        """
        names = _field_names(cls)
        unknown = set(explicit) - names
        sources = [{k: v for k, v in explicit.items() if v is not None}]
        for layer in layers:
            if isinstance(layer, _Config):
                # Only the fields this class shares with the layer's class.
                sources.append({k: v for k, v in layer.explicit_items().items() if k in names})
            elif layer is not None:
                sources.append(dict(layer))
                unknown |= set(layer) - names
        if unknown:
            raise UnknownOptionError(f"{cls.__name__} got unknown option(s): {', '.join(sorted(unknown))} "
                                     f"(known: {', '.join(sorted(names))})")
        env_values: Dict[str, Any] = {}
        env_errors: Dict[str, str] = {}
        if env:
            env_values, env_errors = cls._read_env()
            overridden = {cls._ENV[k][0] for s in sources for k in s if k in cls._ENV}
            env_errors = {var: msg for var, msg in env_errors.items() if var not in overridden}
        merged = dict(env_values)
        for source in reversed(sources):
            merged.update(source)
        env_fields = {k for k in env_values if all(k not in s for s in sources)}
        return cls._from_values(merged, env_errors, env_fields)


def with_other_errors(exc: ConfigError, *builders: Callable[[], Any]) -> ConfigError:
    """*exc* together with the ConfigErrors of *builders*, so one error names every bad setting.

    A worker reads several config classes; without this the first bad class would hide the
    others' bad variables. Builders that succeed add nothing.
    """
    errors = dict(exc.errors)
    for build in builders:
        try:
            build()
        except ConfigError as other:
            errors.update(other.errors)
    if errors == exc.errors:
        return exc
    return ConfigError("invalid settings: " + "; ".join(dict.fromkeys(errors.values())), errors)


def _quoted(var: str) -> str:
    if is_secret_key(var):
        return repr(MASK)
    return repr(redact(os.environ.get(var, "")))


def _field(default: Any = None, factory: Optional[Callable[[], Any]] = None) -> Any:
    """A field that starts UNSET; *default* (or ``factory()``) fills it in."""
    return dataclasses.field(default=UNSET, metadata={"default": default, "factory": factory})


