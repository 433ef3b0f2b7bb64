"""The session options of ``rpctape record|replay|wrap``, derived from the options model.

:func:`session_options` adds one typer option per field of
:class:`~proxy.core.options.Settings` to a command: its flag, help text and help panel come
from the model. Options that cannot apply to the command's doors are hidden from its help and
refused with the reason when given (:meth:`~proxy.core.options.Settings.resolve`). Typer only
collects the words; the model reads and checks them, so a value means the same whatever the
door.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from ..core.options import SPECS, Door, Kind, Spec

F = TypeVar("F", bound=Callable[..., Any])

PANELS = {
    "recording": "Recording",
    "limits": "Limits",
    "rules": "Rules and faults",
    "replay": "Replay",
    "clients": "Clients",
    "checks": "Checks",
}


def _param_name(name: str, spec: Spec) -> str:
    """The typer parameter's name (``--no-redact`` collects ``no_redact``)."""
    return f"no_{name}" if spec.kind is Kind.FLAG_OFF else name


def _parameter(
    name: str, spec: Spec, visible: bool, defaults: Mapping[str, Any]
) -> inspect.Parameter:
    shown: bool | str = False
    if name in defaults:
        shown = str(defaults[name])
    elif spec.kind is Kind.VALUE:
        from ..core.options import Settings

        model_default = Settings.__dataclass_fields__[name].default
        if model_default is not None:
            shown = _shown_default(model_default)
    info = typer.Option(
        spec.flag,
        help=spec.help,
        hidden=not visible,
        rich_help_panel=PANELS.get(spec.group, "Options"),
        show_default=shown,
        metavar=None if spec.kind in (Kind.FLAG, Kind.FLAG_OFF) else spec.metavar,
    )
    annotation: Any
    default: Any
    if spec.kind in (Kind.FLAG, Kind.FLAG_OFF):
        annotation, default = Annotated[bool, info], False
    elif spec.kind is Kind.LIST:
        annotation, default = Annotated[list[str] | None, info], None
    else:
        annotation, default = Annotated[str | None, info], None
    return inspect.Parameter(
        _param_name(name, spec), inspect.Parameter.KEYWORD_ONLY, default=default,
        annotation=annotation,
    )  # fmt: skip


def _shown_default(value: Any) -> str:
    from ..core.matching import Preset

    if value == Preset.CODEX.aspects:
        return "codex"
    return str(value)


def session_options(*doors: Door, defaults: Mapping[str, Any] | None = None) -> Callable[[F], F]:
    """Give a command every option of the model: those that apply to one of ``doors`` in its
    help, the others hidden (and refused with the reason). The command receives them as its
    ``given`` keyword argument (what :meth:`Settings.resolve` takes); ``defaults`` are the
    door's own defaults, shown in the help."""
    shown_defaults = dict(defaults or {})

    def decorate(func: F) -> F:
        hints = typing.get_type_hints(func, include_extras=True)  # annotations are strings
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(func).parameters.values()
            if p.name != "given"
        ]
        model = [
            _parameter(name, spec, any(spec.needs <= d.can for d in doors), shown_defaults)
            for name, spec in SPECS.items()
        ]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for name, spec in SPECS.items():
                value = kwargs.pop(_param_name(name, spec))
                if spec.kind is Kind.FLAG_OFF:
                    value = not value
                given[name] = value
            return func(given=given, **kwargs)

        params = own + model
        del command.__wrapped__  # typer must read the new signature, not the function's
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate
