"""Load decision point files, reporting every problem as `file:line: what and how to fix`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import orjson
import yaml
from pydantic import ValidationError

from warden.errors import PolicyError
from warden.policy.point import CompiledPoint
from warden.policy.rules import CompiledRule, RuleCompileError, compile_rule
from warden.policy.schema import DecisionPointSpec
from warden.policy.typecheck import check_rule_types, field_types

SUFFIXES = (".yaml", ".yml")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPoint:
    """A decision point file that cannot serve, and why. `name` is None when the file does not
    even say which point it declares; `spec` is None when it did not validate."""

    name: str | None
    error: PolicyError
    spec: DecisionPointSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.name,
            "file": self.error.file,
            "line": self.error.line,
            "location": self.error.location,
            "message": self.error.message,
        }


@dataclass(frozen=True)
class LoadedPoints:
    """The points that load, and those that do not: one broken file does not stop the others."""

    points: dict[str, CompiledPoint]
    broken: list[BrokenPoint]


def policy_version(spec: DecisionPointSpec) -> str:
    """SHA-256 of the canonical content: comments and formatting do not change the version."""
    content = spec.model_dump(mode="json")
    if not content["review"][
        "display"
    ]:  # display-only and new: files without it keep their version
        del content["review"]["display"]
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def point_files(path: Path) -> list[Path]:
    """The decision point files at `path`: the file itself, or the YAML files of a folder."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise PolicyError(
            "no such file or folder; set WARDEN_CONFIG or pass the folder of decision point files",
            file=str(path),
        )
    return sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())


def load_point(path: Path) -> CompiledPoint:
    """Parse, validate and compile one file. Raises PolicyError naming file and line."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read the file: {exc.strerror}", file=file) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"not valid YAML: {problem}", file=file, line=line) from exc
    if not isinstance(data, dict) or root is None:
        raise PolicyError(
            "a decision point file must be a YAML mapping (point:, owner:, ...)", file=file, line=1
        )
    lines = _LineIndex(root)
    try:
        spec = DecisionPointSpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, lines, file) from exc
    return _compile(spec, path, lines)


def load_points(path: Path) -> dict[str, CompiledPoint]:
    """Load every file; raise the first error. Two files may not declare the same point."""
    points: dict[str, CompiledPoint] = {}
    for file in point_files(path):
        point = load_point(file)
        if point.name in points:
            raise PolicyError(
                f"point '{point.name}' is also declared in {points[point.name].source}; "
                "each decision point needs its own name",
                file=str(file),
                line=1,
            )
        points[point.name] = point
    return points


def load_available(path: Path) -> LoadedPoints:
    """Load every file that loads; report the others (logged as `file:line: problem`) instead
    of raising, so that one broken file does not stop every other point from serving."""
    points: dict[str, CompiledPoint] = {}
    broken: list[BrokenPoint] = []
    for file in point_files(path):
        try:
            point = load_point(file)
        except PolicyError as exc:
            broken.append(BrokenPoint(_declared_name(file), exc))
            continue
        if point.name in points:
            error = PolicyError(
                f"point '{point.name}' is also declared in {points[point.name].source}; "
                "each decision point needs its own name",
                file=str(file),
                line=1,
            )
            broken.append(BrokenPoint(None, error))
            continue
        points[point.name] = point
    for item in broken:
        report_broken(item)
    return LoadedPoints(points, broken)


def report_broken(item: BrokenPoint) -> None:
    """The one log line an operator sees for a point that does not serve."""
    name = f"point '{item.name}'" if item.name else "this file"
    log.error("%s: %s (%s is not served)", item.error.location, item.error.message, name)


def _declared_name(file: Path) -> str | None:
    """The `point:` a file declares, when it can be read at all."""
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    name = data.get("point") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def check_points(
    paths: Iterable[Path], *, models: bool = True
) -> tuple[list[CompiledPoint], list[PolicyError]]:
    """Validate every file and collect all errors, for `warden policy check`: what `serve`
    loads, including each point's model unless `models` is False."""
    good: list[CompiledPoint] = []
    errors: list[PolicyError] = []
    seen: dict[str, CompiledPoint] = {}
    for path in paths:
        try:
            files = point_files(path)
        except PolicyError as exc:
            errors.append(exc)
            continue
        for file in files:
            try:
                point = load_point(file)
                if point.name in seen and seen[point.name].source != point.source:
                    raise PolicyError(
                        f"point '{point.name}' is also declared in {seen[point.name].source}; "
                        "each decision point needs its own name",
                        file=str(file),
                        line=1,
                    )
                if models:
                    check_model(point)
            except PolicyError as exc:
                errors.append(exc)
                continue
            seen[point.name] = point
            good.append(point)
    return good, errors


def check_model(point: CompiledPoint) -> None:
    """Load the point's model as `serve` does; raise PolicyError at the `model:` line if not."""
    from warden.models.loader import ModelLoadError, load_model

    try:
        load_model(point.spec.model, point.base_dir)
    except ModelLoadError as exc:
        raise model_error(point, exc) from exc


def model_error(point: CompiledPoint, exc: Exception) -> PolicyError:
    return PolicyError(f"model: {exc}", file=str(point.source), line=point.model_line)


def compile_spec(spec: DecisionPointSpec, source: Path) -> CompiledPoint:
    """Compile a spec that is not read from a file (e.g. a stored version), as if at `source`."""
    root = yaml.compose("{}", Loader=yaml.SafeLoader)
    assert root is not None
    return _compile(spec, source, _LineIndex(root))


def _compile(spec: DecisionPointSpec, path: Path, lines: _LineIndex) -> CompiledPoint:
    file = str(path)
    try:
        jsonschema.validators.validator_for(spec.input).check_schema(spec.input)
        validator = fastjsonschema.compile(spec.input)
    except (jsonschema.SchemaError, fastjsonschema.JsonSchemaDefinitionException) as exc:
        message = getattr(exc, "message", str(exc))
        raise PolicyError(
            f"input is not a valid JSON Schema: {message}", file=file, line=lines.line(("input",))
        ) from exc
    properties = spec.input.get("properties")
    fields = set(properties) if isinstance(properties, dict) else None
    types = field_types(spec.input)
    reference = spec.monitoring.reference if spec.monitoring else None
    if reference is not None and reference.path and not (path.parent / reference.path).is_file():
        raise PolicyError(
            f"monitoring.reference.path: no file '{reference.path}' next to the point file; "
            "put the reference data there or use `first_n: N`",
            file=file,
            line=lines.line(("monitoring", "reference", "path")),
        )
    for index, name in enumerate(spec.review.display):
        if fields is not None and name not in fields:
            raise PolicyError(
                f"review.display names input field '{name}', which the input schema does not "
                f"declare; declared fields: {', '.join(sorted(fields)) or '(none)'}",
                file=file,
                line=lines.line(("review", "display", index)),
            )
    compiled: list[CompiledRule] = []
    for kind in ("refuse", "review", "auto"):
        for index, rule in enumerate(getattr(spec.rules, kind)):
            try:
                compiled.append(
                    compile_rule(
                        kind,
                        rule.id,
                        rule.when,
                        rule.reason,
                        input_fields=fields,
                        outcomes=spec.outcomes,
                    )
                )
            except RuleCompileError as exc:
                line = lines.line(("rules", kind, index, "when"))
                raise PolicyError(str(exc), file=file, line=line) from exc
            problem = check_rule_types(rule.id, rule.when, types)
            if problem is not None:
                line = lines.line(("rules", kind, index, "when"))
                raise PolicyError(problem, file=file, line=line)
    four_eyes = None
    if spec.review.four_eyes_when:
        try:
            four_eyes = compile_rule(
                "four_eyes",
                "four_eyes_when",
                spec.review.four_eyes_when,
                None,
                input_fields=fields,
                outcomes=spec.outcomes,
            )
        except RuleCompileError as exc:
            raise PolicyError(
                str(exc), file=file, line=lines.line(("review", "four_eyes_when"))
            ) from exc
        problem = check_rule_types("four_eyes_when", spec.review.four_eyes_when, types)
        if problem is not None:
            raise PolicyError(problem, file=file, line=lines.line(("review", "four_eyes_when")))
    return CompiledPoint(
        spec=spec,
        version=policy_version(spec),
        source=path,
        validate_input=validator,
        rules=tuple(compiled),
        four_eyes=four_eyes,
        model_line=lines.line(("model", _model_key(spec))),
    )


def _model_key(spec: DecisionPointSpec) -> str:
    """The `model:` key a load failure is about: the artifact or function it names."""
    model = spec.model
    if model.function or model.path:
        return "function" if model.function else "path"
    return "remote" if getattr(model, "remote", None) is not None else "kind"


def _first_error(exc: ValidationError, lines: _LineIndex, file: str) -> PolicyError:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    where = ".".join(str(part) for part in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        message = f"unknown field '{loc[-1]}'{hint}. Check the spelling or remove it"
    elif kind == "missing":
        message = f"'{where}' is required"
        if loc == ("owner",):
            message += (
                ": name the accountable owner (team or person), e.g. owner: credit-risk@example.com"
            )
    else:
        text = error["msg"].removeprefix("Value error, ")
        message = f"{where}: {text}" if loc else text
        if not loc:  # whole-file checks name their field first, e.g. "failure.on_error is ..."
            loc = tuple(int(p) if p.isdigit() else p for p in text.split(" ", 1)[0].split("."))
    return PolicyError(message, file=file, line=lines.line(loc))


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = DecisionPointSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        args = getattr(annotation, "__args__", None)
        candidates = [annotation, *(args or [])]
        model = next((c for c in candidates if hasattr(c, "model_fields")), None)
        if model is None:
            return []
    return sorted(field.alias or name for name, field in model.model_fields.items())


class _LineIndex:
    """Maps a path of keys/indexes in the YAML document to its 1-based line."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root

    def line(self, loc: tuple[Any, ...]) -> int:
        node = self.root
        best = node.start_mark.line + 1
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node = child
            best = node.start_mark.line + 1
        return best


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                found: yaml.Node = (
                    value if not isinstance(value, yaml.ScalarNode) or value.value else key
                )
                return found
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item: yaml.Node = node.value[part]
        return item
    return None
