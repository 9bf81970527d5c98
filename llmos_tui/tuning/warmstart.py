"""Warm start from the journal: what earlier studies measured, told to a new one first.

- **Exact**: trials of the same model file (name + size), the same llama.cpp build and the same
  machine (CPU cores, GPU name) are told to the optimiser as observations (full weight; half
  weight when they were measured with another bench spec). Their failures are known infeasible.
- **Similar**: the best configurations of *other* models on this machine, or of this model on
  other machines, are a weaker prior. Absolute speeds do not transfer between models, so they
  are not told as values: their best configurations become the study's first points to measure,
  ordered by how close the source is in features (parameter count, quantisation, layer count,
  file size, GPU name and memory, CPU cores).
- **Bad**: configurations the journal marks bad (a change that failed verification) for this
  model are infeasible.

Every prior says where it came from (``origin``), and the faces show it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.gguf_info import ModelInfo
    from llmos_tui.journal.records import ConfigVersion
    from llmos_tui.tuning.objective import Objective
    from llmos_tui.tuning.space import Space

SIMILARITY_FLOOR = 0.35  # below this a source is not a useful prior
MAX_SEEDS = 3  # starting points taken from similar sources


@dataclass(frozen=True)
class Fingerprint:
    model_key: str
    model_path: str
    build: str
    machine: Mapping[str, object]  # cpu_count, gpu_name, vram_total_mib
    features: Mapping[str, object]  # n_params, quantization, n_layer, size_bytes

    def settings(self) -> dict[str, object]:
        return {"features": dict(self.features)}


@dataclass
class Prior:
    config: dict[str, object]
    value: float | None
    ok: bool
    reason: str
    weight: float
    origin: str  # "trl:12 of std:3 (same model, build and machine)"
    kind: str  # exact | similar | bad

    def to_dict(self) -> dict[str, object]:
        return {"config": self.config, "value": self.value, "ok": self.ok, "reason": self.reason,
                "weight": self.weight, "origin": self.origin, "kind": self.kind}


@dataclass
class WarmStart:
    told: list[Prior] = field(default_factory=list)  # exact observations and infeasible ones
    seeds: list[Prior] = field(default_factory=list)  # starting points to measure first

    def summary(self) -> str:
        exact = sum(1 for p in self.told if p.kind == "exact")
        bad = sum(1 for p in self.told if not p.ok)
        parts = []
        if exact:
            studies = sorted({p.origin.split(" of ")[-1].split(" ")[0] for p in self.told if p.kind == "exact"})
            parts.append(f"{exact} trial(s) of the same model, build and machine ({', '.join(studies)})")
        if bad:
            parts.append(f"{bad} known infeasible")
        if self.seeds:
            parts.append(f"{len(self.seeds)} starting point(s) from similar studies: "
                         + "; ".join(p.origin for p in self.seeds))
        return "warm start: " + (", ".join(parts) if parts else "nothing in the journal applies (a cold start)")


def fingerprint(model_info: "ModelInfo", *, build: str, cpu_count: int, gpu: Mapping[str, object] | None) -> Fingerprint:
    from llmos_tui.journal.studies import model_key

    path = os.fspath(getattr(model_info, "path", ""))
    size = int(getattr(model_info, "size_bytes", 0) or 0)
    return Fingerprint(
        model_key=model_key(path, size), model_path=path, build=build,
        machine={"cpu_count": int(cpu_count), "gpu_name": (gpu or {}).get("name") or "",
                 "vram_total_mib": int((gpu or {}).get("vram_total_mib") or 0)},
        features={"n_params": int(getattr(model_info, "n_params", 0) or 0),
                  "quantization": str(getattr(model_info, "quantization", "") or ""),
                  "n_layer": int(getattr(model_info, "n_layer", 0) or 0), "size_bytes": size},
    )


def same_machine(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    return int(a.get("cpu_count") or 0) == int(b.get("cpu_count") or 0) and \
        (a.get("gpu_name") or "") == (b.get("gpu_name") or "")


def _log_gap(a: object, b: object) -> float:
    a, b = float(a or 0), float(b or 0)
    if a <= 0 or b <= 0:
        return 1.0 if a != b else 0.0
    return abs(math.log(a / b))


def similarity(fp: Fingerprint, features: Mapping[str, object], machine: Mapping[str, object]) -> float:
    """1.0 for the same model on the same machine, falling towards 0 as they differ."""
    f = fp.features
    gap = (_log_gap(f.get("n_params"), features.get("n_params")) / math.log(4)
           + _log_gap(f.get("n_layer"), features.get("n_layer")) / math.log(2)
           + _log_gap(f.get("size_bytes"), features.get("size_bytes")) / math.log(4)
           + (0.0 if f.get("quantization") == features.get("quantization") else 0.5)
           + (0.0 if (fp.machine.get("gpu_name") or "") == (machine.get("gpu_name") or "") else 1.5)
           + _log_gap(fp.machine.get("vram_total_mib") or 1, machine.get("vram_total_mib") or 1) / math.log(2)
           + _log_gap(fp.machine.get("cpu_count"), machine.get("cpu_count")) / math.log(2))
    return math.exp(-gap / 2)


def _config_in(space: "Space", params: Mapping[str, object]) -> dict[str, object] | None:
    """The space's dimensions taken from a parameter mapping; None when it is not a point of the space."""
    config = {}
    for dim in space.dimensions:
        if dim.name not in params:
            return None
        value = params[dim.name]
        if value not in dim.values:
            return None
        config[dim.name] = value
    return config if space.allowed(config) is None else None


def _infeasible_config(space: "Space", params: Mapping[str, object]) -> dict[str, object] | None:
    """Like _config_in, but a failure is kept even when the space would allow it (that is the point)."""
    config = {}
    for dim in space.dimensions:
        if dim.name not in params or params[dim.name] not in dim.values:
            return None
        config[dim.name] = params[dim.name]
    return config


def build(history: Iterable[Mapping[str, object]], fp: Fingerprint, space: "Space", objective: "Objective", *,
          spec: Mapping[str, object] | None = None, bad_configs: Iterable["ConfigVersion"] = ()) -> WarmStart:
    """The priors for a study of ``fp`` from the journal's ``tuning_history()`` rows."""
    ws = WarmStart()
    seen_told: set[tuple] = set()
    groups: dict[tuple, dict[str, object]] = {}
    for row in history:
        params = row.get("params") or {}
        metrics = row.get("metrics") or {}
        machine = row.get("machine") or {}
        same_model = row.get("model_key") == fp.model_key
        exact = same_model and row.get("build") == fp.build and same_machine(machine, fp.machine)
        origin_id = f"trl:{row['id']} of std:{row['study_id']}"
        if row.get("outcome") != "ok":
            # a failure of this model (head size, context) holds on any build; elsewhere it is not ours
            if same_model and (exact or row.get("outcome") == "refused"):
                config = _infeasible_config(space, params)
                if config is not None and _key(config) not in seen_told:
                    seen_told.add(_key(config))
                    ws.told.append(Prior(config, None, False, row.get("reason") or row.get("outcome") or "failed",
                                         1.0, f"{origin_id} ({row.get('outcome')}: same model)", "bad"))
            continue
        value = objective.value(metrics)
        if value is None:
            continue
        if exact:
            config = _config_in(space, params)
            if config is None:
                continue
            same_spec = spec is None or all((row.get("settings") or {}).get("spec", {}).get(k) == v
                                            for k, v in spec.items())
            weight = 1.0 if same_spec else 0.5
            ws.told.append(Prior(config, value, True, "", weight,
                                 f"{origin_id} (same model, build and machine"
                                 f"{'' if same_spec else ', another bench spec'})", "exact"))
            continue
        key = (row.get("model_key"), row.get("build"), machine.get("cpu_count"), machine.get("gpu_name"))
        group = groups.setdefault(key, {"rows": [], "machine": machine,
                                        "features": ((row.get("settings") or {}).get("features") or {})})
        group["rows"].append((value, params, origin_id, row))
    # similar sources: their best configuration, mapped into this space, as a starting point
    scored = []
    for key, group in groups.items():
        sim = similarity(fp, group["features"], group["machine"])
        if sim < SIMILARITY_FLOOR:
            continue
        rows = sorted(group["rows"], key=lambda r: r[0], reverse=objective.maximize)
        for value, params, origin_id, row in rows:
            config = _config_in(space, params)
            if config is not None:
                what = "same model, another machine or build" if key[0] == fp.model_key else \
                    f"model {key[0]}"
                scored.append((sim, Prior(config, None, True, "", sim,
                                          f"{origin_id} ({what}, similarity {sim:.2f})", "similar")))
                break
    scored.sort(key=lambda s: s[0], reverse=True)
    told_keys = {_key(p.config) for p in ws.told}
    for _sim, prior in scored:
        if len(ws.seeds) >= MAX_SEEDS:
            break
        if _key(prior.config) not in told_keys and all(_key(prior.config) != _key(s.config) for s in ws.seeds):
            ws.seeds.append(prior)
    for cfg in bad_configs:
        if getattr(cfg, "standing", "") != "bad" or os.path.abspath(getattr(cfg, "model_path", "")) != \
                os.path.abspath(fp.model_path):
            continue
        config = _infeasible_config(space, getattr(cfg, "params", {}) or {})
        if config is not None and _key(config) not in seen_told:
            seen_told.add(_key(config))
            ws.told.append(Prior(config, None, False, f"cfg:{cfg.id} is marked bad ({cfg.reason})", 1.0,
                                 f"cfg:{cfg.id} (marked bad in the journal)", "bad"))
    return ws


def _key(config: Mapping[str, object]) -> tuple:
    return tuple(sorted(config.items()))
