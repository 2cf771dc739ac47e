"""Decision effects: what an executed action does, as a small registry.

Every effect declares two things besides its name:

* ``local``: it writes only the orchestration DB. The executor then performs it inside the very
  transaction that records ``succeeded``, so the effect and its record commit together. Other
  effects run with no orchestration transaction open, and success is recorded afterwards.
* ``dry_run_safe``: its :meth:`Effect.simulate` only reads, so a dry run may call it to predict
  the outcome (does the task exist? is the tag already there?). A dry run of an effect that is not
  dry-run safe validates the payload and records the simulation without consulting any target.
  A dry run never calls :meth:`Effect.perform`.

Effects that write the Tasks DB switch to the ``orch_tasks_writer`` role with ``SET LOCAL ROLE``
inside their own transaction (see ``sql/tasks/0002_writer_role.sql``), so that role's narrow
grants apply even when the pipeline's login is a superuser. Each built-in is idempotent at its
target (a deterministic task id, a set-like tag), so a retry after an unrecorded success is safe,
and each can tell the rescuer whether a stale claim's effect happened (:meth:`Effect.probe`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from orchestration_pipeline.errors import ExecutionError
from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.redaction import REDACTED, redacted_copy

TASKS_WRITER_ROLE = "orch_tasks_writer"
TASK_STATUSES = ("todo", "in_progress", "blocked", "done", "failed", "cancelled")
ALERT_SEVERITIES = ("info", "warning", "error", "critical")


class EffectFailed(RuntimeError):
    """The effect ran and did not achieve its result; recorded as ``failed`` (retryable)."""


@dataclass(frozen=True)
class ActionRun:
    """One attempt at an action, as an effect sees it."""

    execution_id: int | None  # None in a dry run
    policy_id: str
    effect: str
    target_ref: str | None
    payload: Mapping[str, Any]
    action_hash: str
    attempt: int


@dataclass(frozen=True)
class ProbeResult:
    """Whether a stale claim's effect happened: True, False, or None when the effect cannot tell."""

    done: bool | None
    detail: dict[str, Any]


@dataclass
class EffectContext:
    """Connections an effect may use: the orchestration DB (in the success transaction, for local
    effects) and a factory of writable Tasks DB connections."""

    orch_conn: psycopg.Connection
    tasks_connection: Callable[[], AbstractContextManager[psycopg.Connection]] | None = None

    def tasks(self) -> AbstractContextManager[psycopg.Connection]:
        """A Tasks DB connection; an error naming the fix when none was configured."""
        if self.tasks_connection is None:
            raise ExecutionError(
                "this effect uses the Tasks DB but no Tasks DB connection was given — pass "
                "tasks_connection=lambda: connection(TASKS_DATABASE_URL)"
            )
        return self.tasks_connection()


class Effect(ABC):
    """One kind of action. Subclasses set ``name``, ``local`` and ``dry_run_safe``."""

    name: str
    local: bool = False
    dry_run_safe: bool = False

    @abstractmethod
    def validate(self, target_ref: str | None, payload: Mapping[str, Any]) -> None:
        """Raise :class:`ExecutionError` naming the fix when the action is malformed."""

    @abstractmethod
    def perform(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        """Do it; return a small JSON-able result. Raise to report failure."""

    def simulate(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        """Predict the outcome by reading only (called in dry runs when ``dry_run_safe``)."""
        return {}

    def probe(self, ctx: EffectContext, run: ActionRun) -> ProbeResult:
        """Did this attempt's effect happen? The default cannot tell."""
        return ProbeResult(None, {"probe": "this effect cannot tell whether it ran"})


def _target_redacted(run: ActionRun) -> bool:
    """The stored target had a secret redacted: a probe cannot look the target up."""
    return REDACTED in (run.target_ref or "")


def _stored_match(stored: str, found: Iterable[str]) -> bool | None:
    """Whether the value the stored payload held is among those found in the Tasks DB.

    The rescuer's probes see the stored payload, whose text may have been redacted (a title
    holding ``token=…``); then they cannot tell (None), even when a value that redacts alike is
    there (an older ``api_key=…`` tag says nothing of a newer one). The claim is then marked
    failed, and the retry, which holds the original action, finds the effect done or does it:
    both Tasks DB effects are idempotent.
    """
    if REDACTED in stored:
        return None
    return stored in found


def _strict_keys(payload: Mapping[str, Any], allowed: set[str], effect: str) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ExecutionError(
            f"{effect}: unknown payload field(s) {', '.join(unknown)} — allowed: {', '.join(sorted(allowed))}"
        )


def _text(payload: Mapping[str, Any], key: str, effect: str, *, required: bool = True) -> str | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ExecutionError(f"{effect}: payload.{key} must be a non-empty string")
    return value


def _as_tasks_writer(conn: psycopg.Connection) -> None:
    """Inside the caller's Tasks DB transaction, act with orch_tasks_writer's grants only."""
    try:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(TASKS_WRITER_ROLE)))
    except psycopg.errors.InsufficientPrivilege:
        raise EffectFailed(
            f"cannot SET ROLE {TASKS_WRITER_ROLE} — GRANT {TASKS_WRITER_ROLE} TO the pipeline's Tasks DB login"
        ) from None
    except psycopg.errors.UndefinedObject:
        raise EffectFailed(
            f"role {TASKS_WRITER_ROLE} does not exist — run 'orchestration-pipeline db migrate --target tasks'"
        ) from None


def _tasks_write(ctx: EffectContext, work: Callable[[psycopg.Connection], dict[str, Any]]) -> dict[str, Any]:
    with ctx.tasks() as conn:
        try:
            with conn.transaction():
                _as_tasks_writer(conn)
                return work(conn)
        except psycopg.errors.ReadOnlySqlTransaction:
            raise EffectFailed(
                "the Tasks DB connection is read-only — effects need TasksDatabase(read_only=False) or a "
                "plain connection"
            ) from None


def _tasks_read(ctx: EffectContext, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    with ctx.tasks() as conn:
        row = conn.execute(query, params).fetchone()
        end_read(conn)
    return row


class CreateTask(Effect):
    """Insert a task into the Tasks DB. ``target_ref`` is the new task id; without one it is
    derived from the action hash, so the same action always means the same task."""

    name = "create_task"
    dry_run_safe = True
    _fields = {"title", "status", "priority", "tags"}

    def validate(self, target_ref: str | None, payload: Mapping[str, Any]) -> None:
        _strict_keys(payload, self._fields, self.name)
        _text(payload, "title", self.name)
        if target_ref is not None and not target_ref.strip():
            raise ExecutionError(
                "create_task: target_ref (the task id) must not be blank — omit it to derive one"
            )
        status = payload.get("status", "todo")
        if status not in TASK_STATUSES:
            raise ExecutionError(f"create_task: status {status!r} is not one of {', '.join(TASK_STATUSES)}")
        priority = payload.get("priority", 3)
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 5:
            raise ExecutionError("create_task: priority must be an integer from 0 to 5")
        tags = payload.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ExecutionError("create_task: tags must be a list of non-empty strings")

    @staticmethod
    def task_id(run: ActionRun) -> str:
        """The id of the task this action creates."""
        return run.target_ref or f"dec-{run.action_hash[:20]}"

    def perform(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        task_id, p = self.task_id(run), run.payload

        def work(conn: psycopg.Connection) -> dict[str, Any]:
            inserted = conn.execute(
                """INSERT INTO tasks (task_id, title, status, priority, tags)
                   VALUES (%s, %s, %s, %s, %s::jsonb) ON CONFLICT (task_id) DO NOTHING RETURNING task_id""",
                (
                    task_id,
                    p["title"],
                    p.get("status", "todo"),
                    p.get("priority", 3),
                    Jsonb(p.get("tags", [])),
                ),
            ).fetchone()
            if inserted:
                return {"task_id": task_id, "created": True}
            existing = conn.execute("SELECT title FROM tasks WHERE task_id = %s", (task_id,)).fetchone()
            if existing and existing[0] == p["title"]:
                return {"task_id": task_id, "created": False, "already_present": True}
            raise EffectFailed(
                f"task {task_id} already exists with another title — choose another target_ref"
            )

        return _tasks_write(ctx, work)

    def simulate(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        task_id = self.task_id(run)
        row = _tasks_read(ctx, "SELECT title FROM tasks WHERE task_id = %s", (task_id,))
        return {"task_id": task_id, "exists": row is not None, "would_create": row is None}

    def probe(self, ctx: EffectContext, run: ActionRun) -> ProbeResult:
        if _target_redacted(run):
            return ProbeResult(None, {"probe": "the stored task id was redacted; cannot look it up"})
        task_id = self.task_id(run)
        row = _tasks_read(ctx, "SELECT title FROM tasks WHERE task_id = %s", (task_id,))
        if row is None:
            return ProbeResult(False, {"task_id": task_id, "task_present": False})
        done = _stored_match(run.payload["title"], [row[0]])
        return ProbeResult(done, {"task_id": task_id, "task_present": True})


class LabelTask(Effect):
    """Add a tag to a Tasks DB task (``target_ref`` is the task id); a present tag is success."""

    name = "label"
    dry_run_safe = True

    def validate(self, target_ref: str | None, payload: Mapping[str, Any]) -> None:
        _strict_keys(payload, {"tag"}, self.name)
        _text(payload, "tag", self.name)
        if not target_ref or not target_ref.strip():
            raise ExecutionError("label: target_ref must be the task id to tag")

    def perform(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        tag, task_id = run.payload["tag"], run.target_ref

        def work(conn: psycopg.Connection) -> dict[str, Any]:
            added = conn.execute(
                """UPDATE tasks SET tags = tags || to_jsonb(%s::text), updated_at = now()
                   WHERE task_id = %s AND NOT tags ? %s RETURNING task_id""",
                (tag, task_id, tag),
            ).fetchone()
            if added:
                return {"task_id": task_id, "tag": tag, "added": True}
            if conn.execute("SELECT 1 FROM tasks WHERE task_id = %s", (task_id,)).fetchone():
                return {"task_id": task_id, "tag": tag, "added": False, "already_present": True}
            raise EffectFailed(
                f"task {task_id} not found in the Tasks DB — create it first or fix target_ref"
            )

        return _tasks_write(ctx, work)

    def _tags(self, ctx: EffectContext, run: ActionRun) -> list[str] | None:
        """The task's tags, or None when there is no such task."""
        row = _tasks_read(ctx, "SELECT tags FROM tasks WHERE task_id = %s", (run.target_ref,))
        return None if row is None else [t for t in row[0] if isinstance(t, str)]

    def simulate(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        tags = self._tags(ctx, run)  # a dry run has the original payload: compared as it is
        return {
            "task_id": run.target_ref,
            "task_exists": tags is not None,
            "tag_present": tags is not None and run.payload["tag"] in tags,
        }

    def probe(self, ctx: EffectContext, run: ActionRun) -> ProbeResult:
        if _target_redacted(run):
            return ProbeResult(None, {"probe": "the stored task id was redacted; cannot look it up"})
        tags = self._tags(ctx, run)
        tagged = _stored_match(run.payload["tag"], tags or [])
        return ProbeResult(tagged, {"task_exists": tags is not None, "tag_present": tagged})


class Notify(Effect):
    """Write an alert into the orchestration DB's ``alerts`` table (``target_ref``: the subject).

    The alert is stored, so secrets in its message and details are redacted (:func:`redacted_copy`).
    """

    name = "notify"
    local = True
    dry_run_safe = True

    def validate(self, target_ref: str | None, payload: Mapping[str, Any]) -> None:
        _strict_keys(payload, {"message", "severity", "details"}, self.name)
        _text(payload, "message", self.name)
        severity = payload.get("severity", "warning")
        if severity not in ALERT_SEVERITIES:
            raise ExecutionError(f"notify: severity {severity!r} is not one of {', '.join(ALERT_SEVERITIES)}")
        if not isinstance(payload.get("details", {}), Mapping):
            raise ExecutionError("notify: payload.details must be an object")

    def _alert(self, run: ActionRun) -> dict[str, Any]:
        """The alert as it is written: secrets redacted."""
        return redacted_copy(
            {
                "source": f"policy:{run.policy_id}",
                "severity": run.payload.get("severity", "warning"),
                "subject": run.target_ref or run.policy_id,
                "message": run.payload["message"],
            }
        )

    def perform(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        alert = self._alert(run)
        row = ctx.orch_conn.execute(
            """INSERT INTO alerts (source, severity, subject, message, details, execution_id)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING alert_id""",
            (
                alert["source"],
                alert["severity"],
                alert["subject"],
                alert["message"],
                Jsonb(redacted_copy(dict(run.payload.get("details", {})))),
                run.execution_id,
            ),
        ).fetchone()
        return {"alert_id": row[0]}

    def simulate(self, ctx: EffectContext, run: ActionRun) -> dict[str, Any]:
        return {"would_alert": self._alert(run)}

    def probe(self, ctx: EffectContext, run: ActionRun) -> ProbeResult:
        # The alert commits with the success record, so a still-pending claim never has one.
        found = ctx.orch_conn.execute(
            "SELECT alert_id FROM alerts WHERE execution_id = %s", (run.execution_id,)
        ).fetchone()
        end_read(ctx.orch_conn)
        return ProbeResult(found is not None, {"alert_id": found[0] if found else None})


class EffectRegistry:
    """Effects by name."""

    def __init__(self, effects: Iterable[Effect] = ()):
        self._effects: dict[str, Effect] = {}
        for effect in effects:
            self.register(effect)

    def register(self, effect: Effect) -> None:
        """Add an effect; its name must be new and it must declare ``dry_run_safe``."""
        if not getattr(effect, "name", None):
            raise ExecutionError(f"{type(effect).__name__} has no name — set the class attribute `name`")
        if not isinstance(effect.dry_run_safe, bool) or not isinstance(effect.local, bool):
            raise ExecutionError(f"effect {effect.name}: declare dry_run_safe and local as booleans")
        if effect.name in self._effects:
            raise ExecutionError(f"effect {effect.name} is already registered — pick another name")
        self._effects[effect.name] = effect

    def get(self, name: str) -> Effect:
        """The effect called ``name``; an error listing the known ones otherwise."""
        try:
            return self._effects[name]
        except KeyError:
            raise ExecutionError(
                f"unknown effect {name!r} — use one of {', '.join(sorted(self._effects)) or '(none registered)'}"
            ) from None

    def names(self) -> list[str]:
        """Registered effect names, sorted."""
        return sorted(self._effects)


def default_effects() -> EffectRegistry:
    """The built-in effects: create_task, label and notify."""
    return EffectRegistry([CreateTask(), LabelTask(), Notify()])
