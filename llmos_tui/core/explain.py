"""The model explains a finding: a prompt built from the journal, trimmed to fit the context.

Every face uses the same three steps:

    refusal(operator)                      -> why not now (the engine is not healthy), or None
    build_prompt(journal, fnd, n_ctx=...)  -> the messages, the evidence kept and left out
    ask(supervisor, prompt, on_piece=...)  -> a streaming Reply

The evidence comes from the journal, never from screen text: the finding and each field of its
evidence, the actions taken on it (with their state history and the settings they changed),
the configuration active now, the engine events around the finding's time, and the last
actions on the engine. Each item has a relevance score; when everything does not fit the
context window (minus the reply's tokens) the least relevant items are left out first and a
long item is cut; the finding itself always stays. Tokens are counted as UTF-8 bytes, an
upper bound for byte-level tokenizers, so the prompt fits whatever model runs (the engine's
own prompt-token count is reported after the reply).

The reply is the model's words, not a measurement: faces show it marked as such, beside the
evidence it was given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from llmos_tui.core.operator import Operator
    from llmos_tui.engine.supervisor import Reply
    from llmos_tui.journal.store import Journal

from llmos_tui.errors import LlmosError

SYSTEM_PROMPT = (
    "You are the assistant inside llmos-tui, an operator's cockpit for a local LLM server. "
    "Explain the finding below to the operator in plain words: what it means, the likely cause, "
    "and what to check or do next. Use only the evidence given and say when it is not enough. Be brief."
)
REPLY_TOKENS = 256
TEMPLATE_OVERHEAD_TOKENS = 48  # the chat template's role markers and special tokens, generously
ITEM_MAX_BYTES = 600  # one evidence item is cut to this before the budget is even considered
EVENT_WINDOW_S = 15 * 60
EVENT_KINDS = ("crashed", "load_failed", "loaded", "restarting", "unloaded", "error", "oom", "kill_switch",
               "xid", "throttle", "undo", "repair")


class ExplainRefused(LlmosError):
    """The model is not asked now; the message says why."""


@dataclass
class Evidence:
    key: str  # where it came from: "finding", "evidence.temp", "act:4", "cfg:7", "evt:12"
    text: str
    score: float  # relevance, 0-1: the least relevant are left out first
    order: int = 0  # position in the prompt (the finding first, then its evidence, ...)
    required: bool = False

    @property
    def tokens(self) -> int:
        return count_tokens(self.text) + 3  # "- " before it, a newline after


@dataclass
class ExplainPrompt:
    finding_id: int
    title: str
    severity: str
    messages: list[dict[str, str]]
    kept: list[Evidence]
    dropped: list[Evidence] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)  # keys of items shortened to fit
    n_ctx: int = 0
    budget_tokens: int = 0
    prompt_tokens: int = 0  # the estimate (an upper bound)
    reply_tokens: int = REPLY_TOKENS

    def evidence_text(self) -> str:
        return "\n".join(f"- {e.text}" for e in self.kept)

    def note(self) -> str:
        parts = [f"{len(self.kept)} evidence items"]
        if self.dropped:
            parts.append(f"{len(self.dropped)} left out to fit n_ctx={self.n_ctx} "
                         f"({', '.join(e.key for e in self.dropped[:4])}{'…' if len(self.dropped) > 4 else ''})")
        if self.cut:
            parts.append(f"{len(self.cut)} shortened")
        parts.append(f"prompt ≤ {self.prompt_tokens} tokens of {self.n_ctx}")
        return ", ".join(parts)


def count_tokens(text: str) -> int:
    """An upper bound on the tokens of ``text`` for byte-level tokenizers: its UTF-8 bytes."""
    return len(text.encode("utf-8"))


# ---- when not to ask ------------------------------------------------------------------------
def refusal(operator: "Operator") -> str | None:
    """Why the model must not be asked now, or None. Only a healthy, idle engine explains."""
    supervisor = getattr(operator, "supervisor", None)
    if supervisor is None:
        return "no engine in this session"
    state = getattr(supervisor.state, "value", str(supervisor.state))
    if state == "generating":
        return "the engine is busy with another reply; try again when it finishes"
    if state in ("crashed", "failed"):
        why = supervisor.last_error or state
        return f"the engine is {state} ({why}); an unhealthy engine is not asked to explain — restart it first"
    if state in ("loading", "restarting"):
        return f"the engine is {state}; try again when it is ready"
    if state != "ready":
        return f"the engine is {state}, not ready"
    changes = getattr(operator, "changes", None)
    if changes is not None and getattr(changes, "holder", None):
        return f"a configuration change is in progress ({changes.holder})"
    doctor = getattr(operator, "doctor", None)
    if doctor is not None:
        if getattr(doctor, "busy", False):
            return "a repair is in progress; try again when it ends"
        canary = getattr(doctor, "last_canary", None)
        load_ts = getattr(doctor, "last_load_ts", 0.0) or 0.0
        if canary is not None and not canary.ok and canary.ts >= load_ts:
            return f"the last canary failed ({canary.reason}); the engine is not healthy"
    return None


# ---- the evidence -----------------------------------------------------------------------------
def gather(journal: "Journal", finding_id: int, *, now: float | None = None) -> tuple[dict[str, object], list[Evidence]]:
    """The finding (a journal row) and every evidence item for it, scored."""
    finding = journal.get_finding(int(finding_id))
    ts = float(finding["ts"])
    title = str(finding["title"])
    title_words = {w.strip(".,:;()").lower() for w in title.replace("_", " ").split() if len(w) > 2}
    items: list[Evidence] = [Evidence(
        "finding",
        f"finding fnd:{finding['id']}: [{finding['severity']}] {title} (detector {finding['detector']}, "
        f"recorded {_clock(ts)})",
        1.0, 0, required=True)]

    evidence = finding.get("evidence")
    if isinstance(evidence, dict):
        for i, (key, value) in enumerate(evidence.items()):
            words = set(str(key).replace("_", " ").lower().split())
            score = 0.9 + (0.05 if words & title_words else 0.0) - 0.002 * i
            items.append(Evidence(f"evidence.{key}", f"evidence {key}: {_compact(value)}", score, 10 + i))
    elif evidence not in (None, "", {}):
        items.append(Evidence("evidence", f"evidence: {_compact(evidence)}", 0.9, 10))

    detail = journal.show(f"fnd:{finding['id']}")
    own_actions = list(detail.get("actions") or [])
    for i, action_id in enumerate(own_actions):
        try:
            action = journal.show(action_id)
        except LlmosError:
            continue
        items.append(Evidence(action_id, _action_text(action), 0.85 - 0.01 * i, 100 + i))

    active = journal.active_config()
    if active is not None:
        items.append(Evidence(f"cfg:{active.id}", f"configuration active now cfg:{active.id} "
                              f"({active.standing}, source {active.source}): {active.summary()}", 0.8, 200))

    events = journal.events(since=ts - EVENT_WINDOW_S, limit=200)
    near = [e for e in events if abs(float(e["ts"]) - ts) <= EVENT_WINDOW_S and
            (e["kind"] in EVENT_KINDS or any(w in e["kind"] for w in title_words))]
    for e in near[:20]:
        distance = abs(float(e["ts"]) - ts)
        score = 0.7 * (1.0 - distance / (EVENT_WINDOW_S * 1.5))
        items.append(Evidence(f"evt:{e['id']}", f"event evt:{e['id']} {e['kind']} at {_clock(e['ts'])} "
                              f"({_ago(float(e['ts']) - ts)} the finding): {_compact(e.get('data'))}",
                              score, 300 + int(float(e["ts"]) - ts + EVENT_WINDOW_S)))

    for i, entry in enumerate(journal.timeline(kinds="action", limit=8)):
        if entry.id in own_actions:
            continue
        try:
            action = journal.show(entry.id)
        except LlmosError:
            continue
        items.append(Evidence(entry.id, "recent " + _action_text(action), 0.5 - 0.03 * i, 400 + i))
    return finding, items


def build_prompt(journal: "Journal", finding_id: int, *, n_ctx: int, reply_tokens: int = REPLY_TOKENS,
                 system_prompt: str = SYSTEM_PROMPT) -> ExplainPrompt:
    """The messages for the engine: the system prompt, then the finding and the most relevant
    evidence that fits ``n_ctx`` with ``reply_tokens`` left for the answer."""
    finding, items = gather(journal, finding_id)
    n_ctx = int(n_ctx or 0)
    reply_tokens = max(16, min(int(reply_tokens), max(16, n_ctx // 3)))
    header = (f"Finding fnd:{finding['id']} from the journal, and the evidence recorded with it "
              f"(the most relevant that fit):\n")
    footer = "\nExplain this finding to the operator."
    fixed = count_tokens(system_prompt) + count_tokens(header) + count_tokens(footer) + TEMPLATE_OVERHEAD_TOKENS
    budget = n_ctx - reply_tokens - fixed
    if budget < 32:
        raise ExplainRefused(f"the context window (n_ctx={n_ctx}) is too small to explain a finding "
                             f"(needs at least {fixed + reply_tokens + 32} tokens)")
    kept: list[Evidence] = []
    dropped: list[Evidence] = []
    cut: list[str] = []
    used = 0
    for item in sorted(items, key=lambda e: (not e.required, -e.score, e.order)):
        if count_tokens(item.text) > ITEM_MAX_BYTES:
            item.text = _cut(item.text, ITEM_MAX_BYTES)
            cut.append(item.key)
        if used + item.tokens > budget:
            room = budget - used - 3
            if item.required or room >= 48:  # relevant enough to be here: shortened, not left out
                item.text = _cut(item.text, max(16, room))
                cut.append(item.key)
            else:
                dropped.append(item)
                continue
        kept.append(item)
        used += item.tokens
    kept.sort(key=lambda e: e.order)
    body = "\n".join(f"- {e.text}" for e in kept)
    messages = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": header + body + footer}]
    estimate = sum(count_tokens(m["content"]) for m in messages) + TEMPLATE_OVERHEAD_TOKENS
    return ExplainPrompt(int(finding["id"]), str(finding["title"]), str(finding["severity"]), messages, kept,
                         dropped, cut, n_ctx, budget, estimate, reply_tokens)


def ask(operator: "Operator", prompt: ExplainPrompt, *, on_piece: Callable[[str], None] | None = None,
        temperature: float = 0.3) -> "Reply":
    """Send the prompt to the engine (after the health check); returns the streaming Reply.
    Not part of the conversation: the chat's history and the journal's chats stay as they were."""
    why = refusal(operator)
    if why:
        raise ExplainRefused(why)
    return operator.supervisor.chat(prompt.messages, on_piece=on_piece, max_tokens=prompt.reply_tokens,
                                    temperature=temperature)


def engine_n_ctx(operator: "Operator") -> int:
    stats = operator.supervisor.stats()
    return int(stats.get("n_ctx") or 0)


# ---- text helpers ----------------------------------------------------------------------------------
def _action_text(action: dict[str, object]) -> str:
    text = f"action {action['id']} {action.get('kind')} ({action.get('proposed_by')}, now {action.get('state')})"
    params = action.get("params")
    if params:
        text += f" params {_compact(params)}"
    changes = action.get("changes")
    if changes:
        text += " changed " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in changes.items())
    history = action.get("history") or []
    if history:
        text += "; " + "; ".join(f"{h.get('state')}" + (f": {h['note']}" if h.get("note") else "") for h in history[-4:])
    return text


def _compact(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) > 8:
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(value):  # a series: its shape, and the newest values
            return (f"{len(value)} values, min {min(numbers):g}, max {max(numbers):g}, "
                    f"last {', '.join(f'{v:g}' for v in numbers[-6:])}")
        return _compact(value[-8:]) + f" (last 8 of {len(value)})"
    try:
        return json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        return str(value)


def _cut(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes - 3)].decode("utf-8", "ignore") + "…"


def _clock(ts: object) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


def _ago(delta: float) -> str:
    seconds = abs(int(delta))
    word = "after" if delta >= 0 else "before"
    return f"{seconds // 60} min {seconds % 60} s {word}" if seconds >= 60 else f"{seconds} s {word}"
