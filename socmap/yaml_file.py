"""Option files in YAML: read a mapping, lay command-line values over it, validate it.

One reader for every YAML file a user writes (training configs, scenarios, catalogs, column
maps), so each names the file, the line of a syntax error and the option at fault the same way.
Callers pass their own exception class (``ValueError``, ``ScenarioError``, ``CatalogError``, ...)
so the CLI's error handling stays per command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path, error: type[Exception] = ValueError, what: str = "file") -> Any:
    """The parsed YAML document at ``path`` (None for an empty file).

    Raises
    ------
    error
        If the file is missing, unreadable or not valid YAML; the message names the file, the
        line and column of a syntax error, and says what to fix.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found; check the path")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not a text (UTF-8) file ({exc.reason}); save it as YAML text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}: {what} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}; "
                    "fix the syntax") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def read_mapping(path: str | Path, error: type[Exception] = ValueError, what: str = "file",
                 keys_hint: str = "") -> dict:
    """The YAML mapping at ``path`` ({} for an empty file); ``error`` if it holds anything else."""
    raw = read_yaml(path, error, what)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        hint = f" ({keys_hint})" if keys_hint else ""
        raise error(f"{path}: a {what} must hold a mapping of options{hint}, not a {type(raw).__name__}")
    return raw


def validation_problems(exc: ValidationError, help_hint: str = "") -> str:
    """One readable clause per problem of a pydantic error, each naming its option and value."""
    def problem(e: dict) -> str:
        loc = ".".join(map(str, e["loc"]))
        if e["type"] == "extra_forbidden":
            return f"{loc}: unknown option" + (f" (see {help_hint})" if help_hint else "")
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a check across fields names them itself
            return msg
        given = f" (given: {e['input']!r})" if not isinstance(e.get("input"), dict) else ""
        return f"{loc}: {msg}{given}"

    return "; ".join(problem(e) for e in exc.errors())


def load_model(model: type[M], path: str | Path | None, overrides: dict[str, Any], *,
               error: type[Exception] = ValueError, what: str = "config file", help_hint: str = "") -> M:
    """``model`` from the mapping in ``path`` (optional) with the not-None ``overrides`` on top.

    Overrides that are None are ignored, so a CLI flag that was not given keeps the file's value
    or the default.

    Raises
    ------
    error
        For a missing or malformed file, or values the model rejects (every problem named).
    """
    base = read_mapping(path, error, what) if path is not None else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model(**base)
    except ValidationError as exc:
        where = f" in {path}" if path is not None else ""
        raise error(f"invalid {what}{where}: {validation_problems(exc, help_hint)}") from None
