"""A GGUF header reader in plain Python: the metadata and the tensor table, never the weights.

The ``gguf`` package's reader maps the file with numpy, and numpy alone is about 15 MB of the
operator's process (the cockpit reads every model's header, and a cockpit that watches for
hours must stay small). The header is a simple format (GGUF v2/v3): magic, version, tensor and
key-value counts, typed key-value pairs, then per tensor its name, shape, type and offset; the
data starts at the next multiple of ``general.alignment``. Arrays are skipped over (their
length kept), except short numeric ones (at most ``SMALL_ARRAY`` values): a hybrid model's
per-layer head counts (``<arch>.attention.head_count_kv``: 0 on a recurrent layer) are one.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

# GGML tensor type -> (name, elements per block, bytes per block) (gguf.constants.GGML_QUANT_SIZES)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
# general.file_type -> name (gguf.constants.LlamaFileType)
FILE_TYPES: dict[int, str] = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K",
    19: "MOSTLY_IQ2_XXS", 20: "MOSTLY_IQ2_XS", 21: "MOSTLY_Q2_K_S", 22: "MOSTLY_IQ3_XS", 23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S", 25: "MOSTLY_IQ4_NL", 26: "MOSTLY_IQ3_S", 27: "MOSTLY_IQ3_M", 28: "MOSTLY_IQ2_S",
    29: "MOSTLY_IQ2_M", 30: "MOSTLY_IQ4_XS", 31: "MOSTLY_IQ1_M", 32: "MOSTLY_BF16", 36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0", 38: "MOSTLY_MXFP4_MOE", 39: "MOSTLY_NVFP4", 40: "MOSTLY_Q1_0", 1024: "GUESSED",
}
# metadata value type -> struct format (8: string, 9: array are read apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(ValueError):
    """The header is not readable GGUF (truncated, an unknown type, an unsupported version)."""


SMALL_ARRAY = 4096  # numeric arrays up to this length are read (per-layer values); longer ones skipped


@dataclass(frozen=True)
class ArrayValue:
    """A metadata array: its element type and length; the values of a short numeric one."""

    type: int
    count: int
    values: tuple | None = None  # numeric arrays of at most SMALL_ARRAY elements; None: skipped


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_name: str
    n_elements: int
    n_bytes: int
    data_offset: int  # from the start of the file


@dataclass
class GGUFHeader:
    version: int
    fields: dict[str, object]  # key -> int, float, bool, str or ArrayValue
    tensors: list[TensorInfo]


class _Reader:
    def __init__(self, fh: BinaryIO, order: str) -> None:
        self.fh, self.order = fh, order
        self.size = os.fstat(fh.fileno()).st_size  # a length past it is damage, never an allocation

    def take(self, fmt: str) -> object:
        size = struct.calcsize(self.order + fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise GGUFFormatError("the file ends inside its header")
        return struct.unpack(self.order + fmt, data)[0]

    def string(self) -> str:
        n = int(self.take("Q"))  # type: ignore[arg-type]
        if n > self.size - self.fh.tell():
            raise GGUFFormatError(f"the file ends inside a string of its header (it claims {n} bytes, "
                                  f"{self.size - self.fh.tell()} are left)")
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFFormatError("the file ends inside a string of its header")
        return data.decode("utf-8", "replace")

    def skip_string(self) -> None:
        n = int(self.take("Q"))  # type: ignore[arg-type]
        self.fh.seek(n, 1)

    def value(self, vtype: int) -> object:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = int(self.take("I")), int(self.take("Q"))  # type: ignore[arg-type]
            if etype == _STRING:
                for _ in range(count):
                    self.skip_string()
            elif etype in _SCALARS and count <= SMALL_ARRAY:
                fmt = self.order + str(count) + _SCALARS[etype]
                data = self.fh.read(struct.calcsize(fmt))
                if len(data) != struct.calcsize(fmt):
                    raise GGUFFormatError("the file ends inside an array of its header")
                return ArrayValue(etype, count, struct.unpack(fmt, data))
            elif etype in _SCALARS:
                self.fh.seek(struct.calcsize(self.order + _SCALARS[etype]) * count, 1)
            else:
                raise GGUFFormatError(f"unsupported array element type {etype}")
            return ArrayValue(etype, count)
        raise GGUFFormatError(f"unknown metadata value type {vtype}")


def read_header(path: str) -> GGUFHeader:
    """Read the header of the GGUF file at ``path``; GGUFFormatError when it cannot be read."""
    with open(path, "rb", buffering=1 << 16) as fh:
        if fh.read(4) != b"GGUF":
            raise GGUFFormatError("bad magic")
        raw = fh.read(4)
        if len(raw) != 4:
            raise GGUFFormatError("the file ends inside its header")
        order = "<"
        version = struct.unpack("<I", raw)[0]
        if version & 0xFFFF == 0:  # written on a big-endian machine
            order, version = ">", struct.unpack(">I", raw)[0]
        if version not in (2, 3):
            raise GGUFFormatError(f"GGUF version {version} is not supported (2 and 3 are)")
        r = _Reader(fh, order)
        n_tensors, n_kv = int(r.take("Q")), int(r.take("Q"))  # type: ignore[arg-type]
        fields: dict[str, object] = {}
        for _ in range(n_kv):
            key = r.string()
            fields[key] = r.value(int(r.take("I")))  # type: ignore[arg-type]
        raw_tensors = []
        for _ in range(n_tensors):
            name = r.string()
            dims = tuple(int(r.take("Q")) for _ in range(int(r.take("I"))))  # type: ignore[arg-type]
            ttype, offset = int(r.take("I")), int(r.take("Q"))  # type: ignore[arg-type]
            raw_tensors.append((name, dims, ttype, offset))
        alignment = fields.get("general.alignment", 32)
        alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
        start = fh.tell()
        data_start = start + (-start % alignment)
    tensors = []
    for name, dims, ttype, offset in raw_tensors:
        if ttype not in GGML_TYPES:
            raise GGUFFormatError(f"tensor {name} has an unknown type {ttype}")
        type_name, block, block_bytes = GGML_TYPES[ttype]
        n = 1
        for d in dims:
            n *= d
        tensors.append(TensorInfo(name, dims, type_name, n, n * block_bytes // block, data_start + offset))
    return GGUFHeader(version, fields, tensors)
