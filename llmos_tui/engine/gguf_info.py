"""Read what an operator wants to know about a GGUF file from its header, without loading weights.

Also the first line of defence for bad input: a missing path, a file that is not GGUF,
and a truncated file each become a one-line ModelError before llama.cpp ever sees them.
"""

from __future__ import annotations

import collections
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmos_tui.errors import ModelError
from llmos_tui.jsontypes import Json, JsonDict
from llmos_tui.textsafe import sanitize

if TYPE_CHECKING:
    from llmos_tui.engine.gguf_header import GGUFHeader

GGUF_MAGIC = b"GGUF"


@dataclass
class ModelInfo:
    path: str
    name: str
    architecture: str
    size_bytes: int
    quantization: str
    context_length: int | None
    n_params: int
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    n_head_kv: int | None = None
    head_dim_k: int | None = None
    head_dim_v: int | None = None
    vocab_size: int | None = None
    has_chat_template: bool = False
    description: str = ""
    extra: JsonDict = field(default_factory=dict)
    n_expert: int | None = None  # <arch>.expert_count: a mixture-of-experts model when > 0
    n_expert_used: int | None = None
    expert_layer_bytes: list[int] = field(default_factory=list)  # bytes of expert tensors, per block
    # a hybrid model's KV heads per block when the header gives them per layer (0: a recurrent
    # block, no KV cache); empty: every block has n_head_kv (then n_head_kv is the largest of them)
    kv_heads_per_layer: list[int] = field(default_factory=list)

    @property
    def is_moe(self) -> bool:
        return bool(self.n_expert) and any(self.expert_layer_bytes)

    @property
    def n_expert_layers(self) -> int:
        """The blocks that hold experts: n_cpu_moe beyond the last of them moves nothing more."""
        last = [i for i, b in enumerate(self.expert_layer_bytes) if b]
        return last[-1] + 1 if last else 0

    @property
    def is_demo(self) -> bool:
        return self.name == "llmos demo"

    def to_dict(self) -> JsonDict:
        return asdict(self)

    def summary(self) -> str:
        ctx = f"ctx {self.context_length}" if self.context_length else "ctx ?"
        return f"{self.name} · {human_bytes(self.size_bytes)} · {self.quantization} · {self.architecture} · {ctx}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def check_model_path(path: str | os.PathLike[str]) -> Path:
    """Raise ModelError unless path is an existing, readable file that starts with the GGUF magic."""
    p = Path(path).expanduser()
    if not str(path):
        raise ModelError("no model path given")
    if not p.exists():
        raise ModelError(f"model not found: {p}")
    if p.is_dir():
        raise ModelError(f"model path is a folder, not a GGUF file: {p}")
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model {p}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"not a GGUF file (bad magic {magic!r}): {p}")
    return p


def _field_value(header: "GGUFHeader", key: str) -> Json:
    """A scalar or string metadata value; None when missing or an array (skipped, not read)."""
    value = header.fields.get(key)
    return value if isinstance(value, (str, int, float, bool)) else None


def _int(value: Json) -> int | None:
    """A metadata value that must be a count: an int, else unknown."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _per_layer(header: "GGUFHeader", key: str) -> list[int]:
    """A count the header gives per layer (a short array of non-negative integers), else []."""
    from llmos_tui.engine.gguf_header import ArrayValue

    value = header.fields.get(key)
    if not isinstance(value, ArrayValue) or not value.values:
        return []
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values):
        return []
    return [int(v) for v in value.values]


# the tensors llama.cpp's --n-cpu-moe moves (engine/loading.py EXPERT_TENSOR_RE), with their block
_EXPERT_TENSOR = re.compile(r"blk\.(\d+)\..*ffn_(up|down|gate|gate_up)_(ch|)exps")


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Parse the GGUF header (metadata and tensor table) of path; never reads tensor data.

    Read in plain Python (engine/gguf_header.py): the gguf package's reader would bring numpy
    into the operator's process for a few dozen numbers."""
    from llmos_tui.engine.gguf_header import FILE_TYPES, ArrayValue, GGUFFormatError, read_header

    p = check_model_path(path)
    size = p.stat().st_size
    try:
        header = read_header(str(p))
    except (GGUFFormatError, OSError, struct.error) as exc:
        raise ModelError(f"damaged or truncated GGUF ({type(exc).__name__}: {exc}): {p}") from None

    data_end = 0
    n_params = 0
    type_counts: collections.Counter[str] = collections.Counter()
    expert_bytes: collections.Counter[int] = collections.Counter()
    for t in header.tensors:
        m = _EXPERT_TENSOR.match(t.name)
        if m:
            expert_bytes[int(m.group(1))] += t.n_bytes
        data_end = max(data_end, t.data_offset + t.n_bytes)
        n_params += t.n_elements
        if len(t.shape) >= 2:
            type_counts[t.type_name] += t.n_elements
    if data_end > size:
        raise ModelError(f"truncated GGUF: tensor data needs {data_end} bytes, file has {size}: {p}")

    arch = _field_value(header, "general.architecture") or "unknown"

    def arch_key(suffix: str) -> Json:
        return _field_value(header, f"{arch}.{suffix}")

    file_type = _field_value(header, "general.file_type")
    quant = None
    if isinstance(file_type, int) and file_type in FILE_TYPES:
        quant = FILE_TYPES[file_type].removeprefix("MOSTLY_").removeprefix("ALL_")
    if quant is None:
        quant = type_counts.most_common(1)[0][0] if type_counts else "unknown"

    n_embd = _int(arch_key("embedding_length"))
    heads_per_layer = _per_layer(header, f"{arch}.attention.head_count")
    kv_per_layer = _per_layer(header, f"{arch}.attention.head_count_kv")
    kv_count = _int(arch_key("attention.head_count_kv"))
    n_head = _int(arch_key("attention.head_count")) or max(heads_per_layer, default=0) or None
    n_head_kv = kv_count or max(kv_per_layer, default=0) or n_head
    if not kv_per_layer and heads_per_layer and not kv_count:
        kv_per_layer = heads_per_layer  # no KV count given: as many KV heads as heads, per layer
    head_k = _int(arch_key("attention.key_length"))
    head_v = _int(arch_key("attention.value_length"))
    if n_head and n_embd is not None:
        head_k = head_k or n_embd // n_head
        head_v = head_v or n_embd // n_head
    tokens = header.fields.get("tokenizer.ggml.tokens")
    name = _field_value(header, "general.name") or p.stem
    return ModelInfo(
        path=str(p),
        name=sanitize(str(name)),  # shown in every face: a header's escapes never reach a terminal
        architecture=sanitize(str(arch)),
        size_bytes=size,
        quantization=sanitize(str(quant)),
        context_length=_int(arch_key("context_length")),
        n_params=n_params,
        n_layer=_int(arch_key("block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        vocab_size=tokens.count if isinstance(tokens, ArrayValue) else None,
        has_chat_template="tokenizer.chat_template" in header.fields,
        description=sanitize(str(_field_value(header, "general.description") or "")),
        n_expert=_int(arch_key("expert_count")),
        n_expert_used=_int(arch_key("expert_used_count")),
        expert_layer_bytes=[expert_bytes.get(i, 0) for i in range(max(expert_bytes, default=-1) + 1)],
        kv_heads_per_layer=kv_per_layer,
    )
