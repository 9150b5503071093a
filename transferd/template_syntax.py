"""The syntax of download path templates (`gencove download --download-template`), checked in one place: by
`check-config`, at daemon start and reload, and by the one-shot `transferd download`. Pure."""

from __future__ import annotations

import re
import string

DEFAULT_TEMPLATE = "{client_id}/{gencove_id}/{default_filename}"
TEMPLATE_TOKENS = ("client_id", "gencove_id", "file_type", "file_extension", "default_filename")


def check_template(template: str) -> None:
    """Raises ValueError naming what is wrong: a malformed or unknown token, no token that tells a sample's files
    apart, or a literal `..` segment (token values are made safe when rendered; literals must be safe here)."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"bad template {template!r}: {e}") from None
    for name in names:
        if name not in TEMPLATE_TOKENS:
            raise ValueError(f"unknown token {{{name}}} in {template!r}; known: {', '.join(TEMPLATE_TOKENS)}")
    if not {"default_filename", "file_type", "file_extension"} & set(names):
        raise ValueError(f"template {template!r} must contain {{default_filename}} or {{file_type}}")
    literal = re.sub(r"\{[^{}]*\}", "x", template)
    if any(seg == ".." for seg in literal.replace("\\", "/").split("/")):
        raise ValueError(f"template {template!r} must not contain a '..' path segment")
