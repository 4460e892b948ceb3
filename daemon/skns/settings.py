"""Typed settings sections and the conversion of TOML values into them.

Each subsystem declares its section as a frozen dataclass deriving from
:class:`Section`; the annotations say what a key accepts, ``validate`` checks
what a type cannot (ranges, relations between keys). The loader in
:mod:`skns.config` turns the :class:`~skns.errors.SettingError` raised here into
a :class:`~skns.errors.ConfigError` that names the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Self

from .errors import SettingError


class HostPort(NamedTuple):
    """A ``host:port`` address; IPv6 hosts are written in brackets: ``[::1]:9125``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{text!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError(f"port {number} is out of range 0..65535")
        return cls(host, number)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def unreadable(exc: OSError) -> str:
    """Why a file named in the config could not be read, as the config errors say it."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return f"cannot read: {exc.strerror or exc}"


def _type_name(tp: Any) -> str:
    if tp is HostPort:
        return "a 'host:port' string"
    if tp is Path:
        return "a path string"
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def convert(tp: Any, value: Any) -> Any:
    """Convert a TOML value to ``tp`` or raise ValueError saying what was expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            try:
                return convert(member, value)
            except ValueError:
                continue
        raise ValueError(f"expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"expected {_type_name(tp)}, got {value!r}")
        item_type = typing.get_args(tp)[0]
        return tuple(convert(item_type, item) for item in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return Path(value).expanduser().absolute()
    elif tp is HostPort:
        if isinstance(value, str):
            return HostPort.parse(value)
    else:  # pragma: no cover - a section declared a type this loader does not know
        raise TypeError(f"unsupported settings type {tp!r}")
    raise ValueError(f"expected {_type_name(tp)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of every settings table. ``table`` is the TOML table it is read from."""

    table: ClassVar[str] = ""

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in table.items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise SettingError(f"{cls.table}.{key}", f"unknown key (known keys: {known})")
            try:
                values[key] = convert(hints[key], raw)
            except ValueError as exc:
                raise SettingError(f"{cls.table}.{key}", str(exc)) from None
        section = cls(**values)
        section.validate()
        return section

    def validate(self) -> None:
        """Check what the types cannot; raise SettingError naming the key."""

    def fail(self, key: str, reason: str) -> typing.NoReturn:
        raise SettingError(f"{self.table}.{key}", reason)

    def require(self, condition: bool, key: str, reason: str) -> None:
        if not condition:
            self.fail(key, reason)

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Path | HostPort):
                return str(value)
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
