"""What the tuner may try: the search space, built from the model and the machine, never a fixed list.

A ``Space`` is a list of dimensions (integers as an ordered list of allowed values, categories as
names) plus the rules of what llama.cpp accepts: n_ubatch <= n_batch, a quantised V cache needs
flash attention, the offload fits the free VRAM, and whatever a failed trial taught us
(``learn_infeasible``: "type_k=q8_0 refused" makes every configuration with that K type
infeasible). ``Space.from_configs`` makes a replayed space where exactly the given configurations
are allowed (the benchmark replays recorded surfaces this way).

Pure Python: no scikit-optimize here (``study`` encodes the space for it).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from llmos_tui.engine.logreasons import OOM_MARKS

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.gguf_info import ModelInfo
    from llmos_tui.engine.params import EngineParams

CACHE_TYPES = ("f16", "q8_0", "q4_0")
UNQUANTISED = ("f16", "f32", "bf16")
BATCHES = (64, 128, 256, 512, 1024, 2048)
UBATCHES = (32, 64, 128, 256, 512, 1024)
INT_DIMS = ("n_gpu_layers", "n_cpu_moe", "n_batch", "n_ubatch", "n_threads", "n_threads_batch")
MIB = 1024 * 1024


@dataclass
class Dimension:
    name: str
    kind: str  # "int" | "cat"
    values: list[Any]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "values": list(self.values)}

    def index(self, value: object) -> int | None:
        try:
            return self.values.index(value)
        except ValueError:
            return None

    def distance(self, a: object, b: object) -> float:
        """0 for the same value; ordinal steps for integers (their values are log-spaced), 1 for a
        different category."""
        if a == b:
            return 0.0
        if self.kind == "cat":
            return 1.0
        ia, ib = self.index(a), self.index(b)
        if ia is None or ib is None:
            try:
                return abs(math.log2(max(1, int(a))) - math.log2(max(1, int(b))))
            except (TypeError, ValueError):
                return 1.0
        return abs(ia - ib) / max(1, len(self.values) - 1) * 2.0


def thread_values(cpu_count: int) -> list[int]:
    """1..cpu_count, a few values: all of them on small machines, a log-spaced handful on big ones."""
    n = max(1, int(cpu_count))
    if n <= 4:
        return list(range(1, n + 1))
    vals = {1, n, n // 2, max(1, n - 1), max(1, (3 * n) // 4)}
    p = 2
    while p < n:
        vals.add(p)
        p *= 2
    return sorted(vals)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def plain(config: Mapping[str, object]) -> dict[str, object]:
    """Numpy scalars to Python values (skopt hands back np.int64 / np.str_)."""
    out = {}
    for k, v in config.items():
        v = _plain(v)
        out[str(k)] = str(v) if isinstance(v, str) else v
    return out


def _key(config: Mapping[str, object], names: Iterable[str]) -> tuple:
    return tuple(_plain(config.get(n)) for n in names)


_TYPE_PATTERNS = [
    # our own refusals and llama.cpp's words
    (re.compile(r"\btype_([kv])\s*[=:]\s*([a-z0-9_]+)", re.I), None),
    (re.compile(r"\b([kv]) cache type ([a-z0-9_]+)", re.I), None),
    (re.compile(r"\bcache_type_([kv])\s*[=:]?\s*([a-z0-9_]+)", re.I), None),
]


# bytes per element of a KV cache type (llama.cpp's ggml block sizes): the memory order of the types
_CACHE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.0625, "q5_1": 0.75, "q5_0": 0.6875,
                "q4_1": 0.625, "iq4_nl": 0.5625, "q4_0": 0.5625}
# a memory failure: llama.cpp's and the drivers' words (engine.logreasons.OOM_MARKS, as the doctor
# reads them), our own budget refusals, and a recorded outcome "oom"
_OUR_MEMORY_WORDS = re.compile(r"over the (?:\w+ )?budget|does not fit|\boom\b", re.I)
_GPU_WORDS = re.compile(r"cuda|vram|\bgpu|\bdevice|vulkan|metal|rocm|\bhip\b", re.I)
_HOST_WORDS = re.compile(r"\brss\b|\bhost\b|\bcpu\b|bad_alloc|\bram\b", re.I)
MEMORY_RULE = "memory>="  # a learned rule: every configuration using at least this one's memory


def memory_failure(config: Mapping[str, object], reason: str) -> str | None:
    """"gpu" or "host" when the reason says the configuration ran out of memory (or over a memory
    budget) there; None for any other failure. Without a word for where: the GPU when layers were
    offloaded, else the host."""
    text = reason or ""
    if not (any(mark in text.lower() for mark in OOM_MARKS) or _OUR_MEMORY_WORDS.search(text)):
        return None
    if _GPU_WORDS.search(text):
        return "gpu"
    if _HOST_WORDS.search(text):
        return "host"
    try:
        return "gpu" if int(config.get("n_gpu_layers") or 0) != 0 else "host"  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "host"


def _memory_order(name: str, value: object, where: str) -> float | None:
    """Where ``value`` of knob ``name`` stands in memory use on ``where`` (larger: more); None for a
    knob whose memory order is not known (two values then compare only when equal)."""
    try:
        if name in ("n_ubatch", "n_batch", "n_ctx"):
            return float(value)  # type: ignore[arg-type]
        if name == "n_gpu_layers":  # -1: every layer
            layers = math.inf if int(value) < 0 else float(value)  # type: ignore[call-overload]
            return layers if where == "gpu" else -layers
        if name == "n_cpu_moe":  # expert layers kept in host memory
            return -float(value) if where == "gpu" else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if name in ("type_k", "type_v"):
        return _CACHE_BYTES.get(str(value).lower())
    if name == "flash_attn":  # flash attention never materialises the attention matrix
        return {"on": 0.0, "off": 1.0}.get(str(value).lower())
    return None


FREE_OF_MEMORY = ("n_threads", "n_threads_batch")  # knobs that do not move memory use


def uses_at_least(config: Mapping[str, object], failed: Mapping[str, object], where: str) -> bool:
    """True when ``config`` needs at least the memory that ``failed`` needed on ``where``: on every
    knob of known memory order at least as much, every other knob (threads aside) the same. Memory
    use is monotone in each of these knobs, so a configuration that ran out of memory rules out all
    of these without running them."""
    for name, bad in failed.items():
        if name in FREE_OF_MEMORY or name not in config:
            continue
        value = config[name]
        if value == bad:
            continue
        a, b = _memory_order(name, value, where), _memory_order(name, bad, where)
        if a is None or b is None or a < b:
            return False
    return True


def rule_from_reason(config: Mapping[str, object], reason: str) -> dict[str, object]:
    """The most general rule a failure supports: a cache type the model refuses is refused in every
    configuration; a quantised V cache without flash attention likewise; a configuration that ran out
    of memory rules out every one that needs at least its memory (``uses_at_least``); otherwise the
    exact config."""
    text = reason or ""
    low = text.lower()
    if "quantized v cache" in low or "quantised v cache" in low or ("v cache" in low and "flash" in low):
        tv = config.get("type_v")
        if tv is not None and tv not in UNQUANTISED and config.get("flash_attn") is not None:
            return {"type_v": tv, "flash_attn": config.get("flash_attn")}
    for pattern, _ in _TYPE_PATTERNS:
        m = pattern.search(text)
        if m:
            which, value = m.group(1).lower(), m.group(2).lower()
            name = f"type_{which}"
            if value in CACHE_TYPES or value == str(config.get(name, "")).lower():
                if "refus" in low or "not supported" in low or "does not divide" in low or "cannot" in low \
                        or "failed" in low or "unsupported" in low or "invalid" in low or "requires" in low:
                    rule = {name: value}
                    # llama.cpp checks the head size against the block size only with flash attention
                    if "does not divide" in low and config.get("flash_attn") is not None:
                        rule["flash_attn"] = config.get("flash_attn")
                    return rule
    where = memory_failure(config, text)
    if where is not None:
        return {MEMORY_RULE: dict(config), "where": where}
    return dict(config)


@dataclass
class Space:
    dimensions: list[Dimension]
    fixed: dict[str, object] = field(default_factory=dict)
    rules: list[dict[str, object]] = field(default_factory=list)  # learned: a config matching all items is out
    reasons: list[str] = field(default_factory=list)  # one per rule
    allowed_set: list[dict[str, object]] | None = None  # a replayed space: exactly these
    limits: dict[str, object] = field(default_factory=dict)  # model and GPU facts for the VRAM check
    _allowed_keys: set | None = field(default=None, repr=False, compare=False)

    # ---- basics -----------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def dimension(self, name: str) -> Dimension | None:
        for d in self.dimensions:
            if d.name == name:
                return d
        return None

    def _keys(self) -> set | None:
        if self.allowed_set is None:
            return None
        if self._allowed_keys is None:
            self._allowed_keys = {_key(c, self.names) for c in self.allowed_set}
        return self._allowed_keys

    # ---- what may run -----------------------------------------------------
    def allowed(self, config: Mapping[str, object]) -> str | None:
        """None when the configuration may be tried, else one line saying why not."""
        config = plain(config)
        for d in self.dimensions:
            if d.name not in config:
                return f"{d.name} is missing"
            if config[d.name] not in d.values:
                return f"{d.name}={config[d.name]} is not in the space ({', '.join(map(str, d.values))})"
        for rule, why in zip(self.rules, self.reasons):
            if MEMORY_RULE in rule:
                failed = rule[MEMORY_RULE]
                if isinstance(failed, Mapping) and uses_at_least(config, failed, str(rule.get("where") or "gpu")):
                    shown = " ".join(f"{k}={v}" for k, v in failed.items() if k not in FREE_OF_MEMORY)
                    return f"known infeasible (needs at least the memory of {shown}): {why}" if why else \
                        f"known infeasible (needs at least the memory of {shown})"
                continue
            if all(config.get(k) == v for k, v in rule.items()):
                what = " ".join(f"{k}={v}" for k, v in rule.items())
                return f"known infeasible ({what}): {why}" if why else f"known infeasible ({what})"
        # llama.cpp's static rules hold in a replayed space too: a real study never proposes these
        b, ub = config.get("n_batch"), config.get("n_ubatch")
        if b is not None and ub is not None and ub > b:
            return f"n_ubatch ({ub}) must not exceed n_batch ({b})"
        tv, fa = config.get("type_v"), config.get("flash_attn")
        if tv is not None and tv not in UNQUANTISED and fa == "off":
            return f"type_v={tv} (a quantised V cache) needs flash attention"
        keys = self._keys()
        if keys is not None:
            if _key(config, self.names) not in keys:
                return "no such configuration in the recorded surface"
            return None
        return self._vram_refusal(config)

    def _vram_refusal(self, config: Mapping[str, object]) -> str | None:
        info = self.limits.get("model")
        free = self.limits.get("vram_free_mib")
        if not info or free is None or "n_gpu_layers" not in config:
            return None
        from types import SimpleNamespace

        from llmos_tui.engine import vram

        p = SimpleNamespace(n_gpu_layers=config["n_gpu_layers"], n_ctx=self.limits.get("n_ctx") or 0,
                            type_k=config.get("type_k", "f16"), type_v=config.get("type_v", "f16"),
                            n_ubatch=config.get("n_ubatch", 512), n_batch=config.get("n_batch", 512),
                            flash_attn=config.get("flash_attn", "on"),
                            n_cpu_moe=int(config.get("n_cpu_moe", self.fixed.get("n_cpu_moe", 0)) or 0))
        if int(config["n_gpu_layers"]) == 0:
            return None
        return vram.refusal(p, SimpleNamespace(**info), int(free * MIB))

    def learn_infeasible(self, config: Mapping[str, object], reason: str, *, memory_cone: bool = True) -> None:
        """Never propose this configuration again, nor any other that the reason covers.
        ``memory_cone=False``: a memory failure rules out only its own configuration (a failure from
        another study, whose context size and free memory may not have been this one's)."""
        rule = rule_from_reason(plain(config), reason)
        if MEMORY_RULE in rule and not memory_cone:
            rule = plain(config)
        if rule not in self.rules:
            self.rules.append(rule)
            self.reasons.append((reason or "")[:300])

    def configs(self) -> Iterator[dict[str, object]]:
        """Every allowed configuration (grid order)."""
        if self.allowed_set is not None:
            for c in self.allowed_set:
                if self.allowed(c) is None:
                    yield dict(c)
            return
        names = self.names
        for combo in itertools.product(*(d.values for d in self.dimensions)):
            c = dict(zip(names, combo))
            if self.allowed(c) is None:
                yield c

    def size(self) -> int:
        return sum(1 for _ in self.configs())

    def distance(self, a: Mapping[str, object], b: Mapping[str, object]) -> float:
        return sum(d.distance(a.get(d.name), b.get(d.name)) for d in self.dimensions)

    def nearest(self, config: Mapping[str, object], exclude: Iterable[Mapping[str, object]] = ()) -> dict[str, object] | None:
        """The allowed configuration closest to ``config`` (itself when allowed), None when none is."""
        config = plain(config)
        skip = {_key(c, self.names) for c in exclude}
        if self.allowed(config) is None and _key(config, self.names) not in skip:
            return {n: config[n] for n in self.names}
        best, best_d = None, math.inf
        for c in self.configs():
            if _key(c, self.names) in skip:
                continue
            d = self.distance(config, c)
            if d < best_d:
                best, best_d = c, d
        return best

    # ---- parameters ----------------------------------------------------------
    def defaults(self, params: "EngineParams") -> dict[str, object]:
        """The point of the space closest to ``params`` (EngineParams); the most offloaded layers that fit."""
        want: dict[str, object] = {}
        for d in self.dimensions:
            value = getattr(params, d.name, None)
            if d.name == "flash_attn":
                value = "off" if value == "off" else "on"  # llama.cpp's auto enables it where it can
            if d.name == "n_gpu_layers":
                value = max(d.values)
            if d.kind == "int" and value not in d.values and isinstance(value, int):
                value = min(d.values, key=lambda v: (abs(math.log2(max(1, v)) - math.log2(max(1, value))), -v))
            want[d.name] = value
        if "n_gpu_layers" in want:  # the largest offload that fits with everything else as given
            dim = self.dimension("n_gpu_layers")
            moe = self.dimension("n_cpu_moe")
            # a MoE model moves experts to the CPU before it gives up whole layers (as the doctor does)
            moves = [m for m in moe.values if m >= (want.get("n_cpu_moe") or 0)] if moe else [None]
            for v in sorted(dim.values, reverse=True):
                for m in sorted(moves, key=lambda x: x or 0):
                    trial = dict(want, n_gpu_layers=v) if m is None else dict(want, n_gpu_layers=v, n_cpu_moe=m)
                    if self.allowed(trial) is None:
                        return trial
        return self.nearest(want) or want

    def to_params(self, config: Mapping[str, object], base: "EngineParams") -> "EngineParams":
        """``base`` (EngineParams) with the configuration's values (and the space's fixed ones)."""
        changes = {k: v for k, v in self.fixed.items() if k in base.field_names()}
        for k, v in plain(config).items():
            if k in base.field_names():
                changes[k] = v
        return base.replace(**changes)

    # ---- persistence -------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return {
            "dimensions": [d.to_dict() for d in self.dimensions],
            "fixed": dict(self.fixed),
            "rules": [dict(r) for r in self.rules],
            "reasons": list(self.reasons),
            "allowed_set": [dict(c) for c in self.allowed_set] if self.allowed_set is not None else None,
            "limits": dict(self.limits),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "Space":
        dims = [Dimension(d["name"], d["kind"], list(d["values"])) for d in data["dimensions"]]
        return cls(dims, dict(data.get("fixed") or {}), [dict(r) for r in data.get("rules") or []],
                   list(data.get("reasons") or []),
                   [dict(c) for c in data["allowed_set"]] if data.get("allowed_set") is not None else None,
                   dict(data.get("limits") or {}))

    @classmethod
    def from_configs(cls, configs: Iterable[Mapping[str, object]]) -> "Space":
        """A space of exactly these configurations (a replayed, recorded surface)."""
        rows = [plain(c) for c in configs]
        if not rows:
            raise ValueError("a space needs at least one configuration")
        names = list(rows[0])
        dims = []
        for n in names:
            vals = sorted({r[n] for r in rows}, key=lambda v: (str(type(v)), v))
            kind = "int" if all(isinstance(v, int) and not isinstance(v, bool) for v in vals) else "cat"
            dims.append(Dimension(n, kind, vals))
        seen, unique = set(), []
        for r in rows:
            k = _key(r, names)
            if k not in seen:
                seen.add(k)
                unique.append(r)
        return cls(dims, allowed_set=unique)


def _gpu_layer_values(n_layer: int, fits: Callable[[int], bool]) -> list[int]:
    """0, a few counts up to all (n_layer + 1 with the output layer), all of them fitting."""
    top = n_layer + 1
    candidates = sorted({0, top, top // 2, (3 * top) // 4, top // 4, max(0, top - 1)} | set(range(0, top + 1, 8)))
    ok = [v for v in candidates if v == 0 or fits(v)]
    return ok or [0]


def expert_layer_values(n_expert_layers: int) -> list[int]:
    """0 … all expert blocks on the CPU: every count up to 8 blocks, else a handful (quarters, ends)."""
    top = max(0, int(n_expert_layers))
    if top <= 8:
        return list(range(top + 1))
    return sorted({0, 1, top // 4, top // 2, (3 * top) // 4, top - 1, top})


def build_space(model_info: "ModelInfo | None", *, cpu_count: int, gpu: Mapping[str, object] | None = None, n_ctx: int,
                fixed: Mapping[str, object] | None = None) -> Space:
    """The space for this model on this machine. ``n_ctx`` is the operator's requirement, not a knob.

    ``gpu``: ``{"name", "vram_total_mib", "vram_free_mib"}`` or None (then no offload dimension).
    ``fixed``: values that are not searched (e.g. ``{"n_ctx": 4096}``, ``{"n_threads": 8}``).
    """
    fixed = dict(fixed or {})
    fixed.setdefault("n_ctx", n_ctx)
    dims: list[Dimension] = []
    limits: dict[str, object] = {"n_ctx": n_ctx, "cpu_count": int(cpu_count)}
    info_d: dict[str, object] | None = None
    if model_info is not None:
        fields = ("size_bytes", "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim_k", "head_dim_v",
                  "vocab_size", "context_length", "expert_layer_bytes", "kv_heads_per_layer")
        info_d = {f: getattr(model_info, f, None) for f in fields}
    if gpu and "n_gpu_layers" not in fixed and info_d and info_d.get("n_layer"):
        limits["model"] = info_d
        limits["vram_free_mib"] = gpu.get("vram_free_mib")
        limits["gpu"] = dict(gpu)
        from types import SimpleNamespace

        from llmos_tui.engine import vram

        free = gpu.get("vram_free_mib")
        # a mixture-of-experts model (the header names expert tensors): experts on the CPU is a knob,
        # and a layer count fits when it fits with every expert moved
        moe_values = expert_layer_values(model_info.n_expert_layers) if model_info is not None \
            and model_info.is_moe and "n_cpu_moe" not in fixed else []
        most_moved = max(moe_values, default=int(fixed.get("n_cpu_moe", 0) or 0))

        def fits(layers: int) -> bool:
            if free is None:
                return True
            p = SimpleNamespace(n_gpu_layers=layers, n_ctx=n_ctx, type_k="q4_0", type_v="q4_0", n_ubatch=32,
                                n_batch=64, flash_attn="on", n_cpu_moe=most_moved)
            return vram.refusal(p, SimpleNamespace(**info_d), int(free * MIB)) is None

        dims.append(Dimension("n_gpu_layers", "int", _gpu_layer_values(int(info_d["n_layer"]), fits)))
        if len(moe_values) > 1:
            dims.append(Dimension("n_cpu_moe", "int", moe_values))
    elif "n_gpu_layers" not in fixed:
        fixed["n_gpu_layers"] = 0
    cap = n_ctx if n_ctx and n_ctx > 0 else 4096
    batches = [b for b in BATCHES if b <= max(cap, BATCHES[0])]
    ubatches = [u for u in UBATCHES if u <= max(batches)]
    threads = thread_values(cpu_count)
    # cache types the model's header rules out (block size against head size) are never tried:
    # what the header knows is not learned by a failed load
    from llmos_tui.engine.kvcache import allowed_cache_types

    types_k = [t for t in CACHE_TYPES if t in allowed_cache_types(model_info, "K")]
    types_v = [t for t in CACHE_TYPES if t in allowed_cache_types(model_info, "V")]
    want = [
        Dimension("n_batch", "int", batches),
        Dimension("n_ubatch", "int", ubatches),
        Dimension("n_threads", "int", threads),
        Dimension("n_threads_batch", "int", list(threads)),
        Dimension("flash_attn", "cat", ["on", "off"]),
        Dimension("type_k", "cat", types_k),
        Dimension("type_v", "cat", types_v),
    ]
    for d in want:  # one value left: not a dimension, a fixed value
        if len(d.values) == 1 and d.name not in fixed:
            fixed[d.name] = d.values[0]
    dims += [d for d in want if d.name not in fixed]
    space = Space(dims, fixed, limits=limits)
    return space


__all__ = ["Dimension", "Space", "build_space", "expert_layer_values", "plain", "rule_from_reason", "memory_failure",
           "uses_at_least", "MEMORY_RULE",
           "thread_values"]
