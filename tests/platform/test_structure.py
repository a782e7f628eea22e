"""The platform's own structure: job and upload statuses and kinds are enum members, never
bare string literals (a typo in a literal is a silent bug: ``job.status == "don"`` is simply
never true)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cipherseg.platform.models import JobKind, JobStatus, UploadStatus

PLATFORM = Path(__file__).resolve().parents[2] / "src" / "cipherseg" / "platform"
STATUS_VALUES = {s.value for s in JobStatus} | {s.value for s in UploadStatus}
KIND_VALUES = {k.value for k in JobKind}
#: Campaign statuses are another vocabulary (a campaign can be "failed" too); they live in
#: the campaign store and are not job or upload statuses.
NOT_JOBS = {"campaigns/status.py"}
#: The functions that take a job kind, and its position among their arguments.
KIND_ARGUMENT = {"enqueue": 1, "job_scope": 0}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def _field_of(name: str | None) -> set[str] | None:
    if name == "status":
        return STATUS_VALUES
    if name == "kind":
        return KIND_VALUES
    return None


def bare_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of each job/upload status or kind written as a bare string."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[set[str] | None, ast.AST]] = []
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for a in sides:
                for b in sides:
                    if a is not b:
                        pairs.append((_field_of(_name(a)), b))
        elif isinstance(node, ast.keyword) and node.arg == "kinds":
            pairs.append((KIND_VALUES, node.value))
        elif isinstance(node, ast.keyword) and node.arg is not None:
            pairs.append((_field_of(node.arg), node.value))
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith("KINDS") for t in node.targets):
            pairs.append((KIND_VALUES, node.value))
        elif isinstance(node, ast.Call) and _name(node.func) in KIND_ARGUMENT \
                and len(node.args) > KIND_ARGUMENT[str(_name(node.func))]:
            pairs.append((KIND_VALUES, node.args[KIND_ARGUMENT[str(_name(node.func))]]))
        elif isinstance(node, ast.Call) and _name(node.func) == "in_" \
                and isinstance(node.func, ast.Attribute) and node.args:
            pairs.append((_field_of(_name(node.func.value)), node.args[0]))
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if k is not None and _strings(k) in (["status"], ["kind"]) and v is not None:
                    pairs.append((_field_of(_strings(k)[0]), v))
        for values, other in pairs:
            if values is None:
                continue
            found += [(getattr(other, "lineno", 0), s) for s in _strings(other) if s in values]
    return sorted(found)


def test_the_detector_finds_bare_literals() -> None:
    src = ('job.status == "done"\nJob.kind.in_(["joint", "x"])\nfinish(f, 1, status="failed")\n'
           'enqueue(s, "segmentation", owner=o)\nok = job.status == JobStatus.DONE\n'
           'r = {"status": "imported"}\nRELEASABLE_KINDS = ("joint",)\nf(kinds=("campaign",))\n')
    assert bare_literals(src) == [(1, "done"), (2, "joint"), (3, "failed"),
                                  (4, "segmentation"), (6, "imported"), (7, "joint"),
                                  (8, "campaign")]


@pytest.mark.parametrize("path", sorted(p for p in PLATFORM.rglob("*.py")
                                        if "migrations" not in p.parts),
                         ids=lambda p: str(p.relative_to(PLATFORM)))
def test_job_statuses_and_kinds_are_enum_members(path: Path) -> None:
    if str(path.relative_to(PLATFORM)) in NOT_JOBS:
        pytest.skip("campaign statuses, not job statuses")
    found = bare_literals(path.read_text())
    assert not found, (f"{path.name}: use JobStatus/JobKind/UploadStatus "
                       f"(cipherseg.platform.models) instead of {found}")


def test_stored_values_are_unchanged() -> None:
    """The database and the templates hold these strings: renaming one is a migration."""
    assert [k.value for k in JobKind] == ["import", "segmentation", "joint", "joint_node",
                                          "vertical_node", "campaign"]
    assert [s.value for s in JobStatus] == ["awaiting", "requested", "declined", "queued",
                                               "running", "done", "failed"]
    assert [s.value for s in UploadStatus] == ["queued", "validating", "importing",
                                               "imported", "rejected", "failed"]


def test_every_job_kind_has_a_name_for_messages() -> None:
    from cipherseg.platform.routes.common import JOB_NOUNS

    assert set(JOB_NOUNS) == set(JobKind)
