"""Load scenario files, with errors that name the file, the step and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cowctx.scenario.schema import Scenario


class ScenarioError(Exception):
    """A scenario file that cannot be used; the message names file, step and field."""


def _describe_loc(loc: tuple[Any, ...], steps: list[Any] | None) -> str:
    parts: list[str] = []
    rest = list(loc)
    if len(rest) >= 2 and rest[0] == "steps" and isinstance(rest[1], int):
        i = rest[1]
        op = None
        if steps is not None and i < len(steps) and isinstance(steps[i], dict):
            op = steps[i].get("op")
        parts.append(f"step {i}" + (f" ({op})" if op else ""))
        rest = rest[2:]
        # the discriminated union inserts the op name as a path element
        if rest and isinstance(rest[0], str) and op is not None and rest[0] == op:
            rest = rest[1:]
    if rest:
        parts.append("field '" + ".".join(str(p) for p in rest) + "'")
    return ": ".join(parts)


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate already-decoded YAML/JSON data as a scenario."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping, not {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        steps = data.get("steps") if isinstance(data.get("steps"), list) else None
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            loc = tuple(err["loc"])
            if msg.startswith("field '") and loc and not isinstance(loc[-1], int):
                loc = loc[:-1]  # the message names the field more precisely
            where = _describe_loc(loc, steps)
            lines.append(f"{source}: {where + ': ' if where else ''}{msg}")
        raise ScenarioError("\n".join(lines)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file (YAML, or JSON, which is YAML)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{path}: not UTF-8: byte {exc.start} is {exc.object[exc.start]:#04x} ({exc.reason})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}: not valid YAML{where}: {exc}") from None
    return parse_scenario(data, str(path))
