"""Templates: Jinja2 in its sandbox, rendered per channel. Rendering is checked when a
template is saved (against its `example` data) and when a notification is accepted (against
its own data), so a template error is a 422 at the door, never a failed delivery later."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from notifications.errors import TemplateError as DomainTemplateError

# Fields a channel variant may have; `text` is the one every channel can send.
FIELDS = ("subject", "title", "text", "html")

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_html_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


def render_variant(variant: dict[str, str], data: dict[str, Any]) -> dict[str, str]:
    """Render one channel's fields (HTML autoescaped); raises the domain TemplateError."""
    out = {}
    for field, source in variant.items():
        env = _html_env if field == "html" else _env
        try:
            out[field] = env.from_string(source).render(**data)
        except TemplateError as exc:
            raise DomainTemplateError(f"{field}: {exc.message or exc}") from None
        except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise DomainTemplateError(f"{field}: {type(exc).__name__}: {exc}") from None
    return out


def render_all(variants: dict[str, dict[str, str]], data: dict[str, Any]) -> dict[str, Any]:
    """Every channel's variant rendered; the first failure names its channel."""
    rendered = {}
    for channel, variant in variants.items():
        try:
            rendered[channel] = render_variant(variant, data)
        except DomainTemplateError as exc:
            raise DomainTemplateError(f"{channel}.{exc.detail}") from None
    return rendered


def context(data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """What a template sees: the notification's data, and `user` (its id and addresses)."""
    return {**data, "user": user}
