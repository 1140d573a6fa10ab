"""The traceability list: every quantitative infrastructure target sentence of the source
documents, each tracked by catalog targets or marked out of scope with a reason.

The list is data (qilu/data/traceability.toml, quoting the documents); :func:`problems` checks
it against the catalog without I/O: an entry that is neither tracked nor out of scope, an
unknown target, a threshold, due date or comparator that disagrees with the target tracking it,
and a catalog target no sentence sets are each one problem.

The comparator is what the sentence's words mean: 超过 and 突破 (more than) are ``>``;
达到, 以上, 不少于, 全覆盖 and a bare figure of an indicator table (reach) are ``>=``. When two
sentences set the same figure with different words, the target follows one of them and the other
entry says why in ``comparator_differs``.
"""

from __future__ import annotations

import functools
import math
import tomllib
from datetime import date
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qilu.catalog import Catalog, Goal
from qilu.errors import ConfigError


class Entry(BaseModel):
    """One sentence of a source document that sets an infrastructure target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    document: str
    article: str
    quote: str = Field(min_length=1)
    threshold: str  # as written
    value: float  # the threshold as a number, in the target's unit (a ratio as a fraction)
    due: date | None = None
    # what the words mean: ">" for 超过/突破 (more than), ">=" for 达到/以上/不少于 (reach)
    comparator: Literal[">", ">="] | None = None
    # why the tracking target's comparator is not this sentence's (another sentence decides)
    comparator_differs: str = ""
    targets: tuple[str, ...] = ()
    out_of_scope: str = ""

    @model_validator(mode="after")
    def _one_verdict(self) -> Entry:
        if self.targets and self.out_of_scope:
            raise ValueError("an entry is either tracked (targets) or out of scope, not both")
        if self.targets and self.comparator is None:
            raise ValueError("a tracked entry says which comparator its words mean")
        return self

    @property
    def where(self) -> str:
        return f"{self.document} {self.article}: {self.quote[:40]}"


class Traceability(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: tuple[Entry, ...]

    def tracked(self) -> set[str]:
        return {t for e in self.entries for t in e.targets}


@functools.cache
def load_traceability() -> Traceability:
    text = resources.files("qilu.data").joinpath("traceability.toml").read_text("utf-8")
    try:
        return Traceability(entries=tomllib.loads(text)["entry"])
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError("traceability." + ".".join(map(str, err["loc"])), err["msg"]) from exc


def _agrees(entry: Entry, goal: Goal) -> list[str]:
    out = []
    if entry.due != goal.due:
        out.append(f"{entry.where}: due {entry.due} but target {goal.id} is due {goal.due}")
    if not math.isclose(entry.value, goal.threshold, rel_tol=1e-9):
        out.append(
            f"{entry.where}: threshold {entry.value:g} but target {goal.id} has {goal.threshold:g}"
        )
    if entry.comparator != goal.comparator and not entry.comparator_differs.strip():
        out.append(
            f"{entry.where}: the words mean {entry.comparator} {entry.threshold} but target "
            f"{goal.id} uses {goal.comparator}"
        )
    return out


def problems(trace: Traceability, catalog: Catalog) -> list[str]:
    """Everything that breaks the rule "each target sentence is tracked or out of scope, and
    each catalog target is traced to a sentence" (empty when the list and catalog agree)."""
    goals: dict[str, Goal] = {t.id: t for t in (*catalog.targets, *catalog.reported)}
    out: list[str] = []
    for e in trace.entries:
        if e.document not in catalog.documents:
            out.append(f"{e.where}: unknown document {e.document!r}")
        if not e.targets and not e.out_of_scope.strip():
            out.append(f"{e.where}: neither in the catalog nor out of scope with a reason")
        for tid in e.targets:
            goal = goals.get(tid)
            if goal is None:
                out.append(f"{e.where}: unknown target {tid!r}")
            else:
                out.extend(_agrees(e, goal))
    out.extend(
        f"target {tid} is traced to no sentence of the source documents"
        for tid in sorted(goals.keys() - trace.tracked())
    )
    return out
