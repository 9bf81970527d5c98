"""The plain-Python GGUF header reader against the gguf package's own reader, and its reason:
reading a model's header brings no numpy into the operator's process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmos_tui.engine.gguf_header import ArrayValue, GGUFFormatError, read_header
from llmos_tui.paths import DEMO_MODEL


def test_the_header_matches_the_gguf_packages_reader() -> None:
    import gguf

    ours = read_header(str(DEMO_MODEL))
    theirs = gguf.GGUFReader(str(DEMO_MODEL), "r")
    assert [t.name for t in ours.tensors] == [str(t.name) for t in theirs.tensors]
    for mine, ref in zip(ours.tensors, theirs.tensors):
        assert (mine.n_elements, mine.n_bytes, mine.data_offset, mine.type_name) == \
            (int(ref.n_elements), int(ref.n_bytes), int(ref.data_offset), ref.tensor_type.name), mine.name
    assert set(ours.fields) == {k for k in theirs.fields if not k.startswith("GGUF.")}
    for key, value in ours.fields.items():
        field = theirs.get_field(key)
        if isinstance(value, ArrayValue):
            assert value.count == len(field.data), key
            if value.values is not None:  # a short numeric array is read, as the gguf package reads it
                assert list(value.values) == [v.item() if hasattr(v, "item") else v for v in field.contents()], key
        else:
            ref = field.contents()
            assert value == (ref.item() if hasattr(ref, "item") else ref), key


def test_a_truncated_or_foreign_header_is_a_format_error(tmp_path: Path) -> None:
    data = DEMO_MODEL.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:200])
    with pytest.raises(GGUFFormatError, match="ends inside"):
        read_header(str(cut))
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + data[8:])
    with pytest.raises(GGUFFormatError, match="version 1 is not supported"):
        read_header(str(v1))


def test_hostile_lengths_and_counts_are_format_errors_not_allocations(tmp_path: Path) -> None:
    """A header that claims a 2**50-byte string raised MemoryError (Python tried to allocate it);
    counts past the file end stop at its end. Each is one GGUFFormatError."""
    import struct

    def header(n_tensors: int, n_kv: int, kvs: bytes = b"") -> bytes:
        return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + b"\0" * 64

    def key(name: bytes) -> bytes:
        return struct.pack("<Q", len(name)) + name

    cases = {
        "string": header(0, 1, key(b"general.name") + struct.pack("<IQ", 8, 2**50)),
        "counts": header(2**62, 2**62),
        "array": header(0, 1, key(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**55)),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        with pytest.raises(GGUFFormatError):
            read_header(str(path))


def test_reading_model_info_imports_no_numpy() -> None:
    code = ("import sys; from llmos_tui.engine.gguf_info import read_model_info; "
            f"info = read_model_info({str(DEMO_MODEL)!r}); print(info.name, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "llmos demo False"


def _hybrid_gguf(path: Path, kv_heads: list[int] | int) -> Path:
    """A header shaped as a hybrid model's (LFM2, Granite-H, Jamba): attention on some blocks and a
    recurrent block (no KV cache: 0 KV heads) on the others, the KV head count given per layer."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "lfm2")
    w.add_block_count(4)
    w.add_context_length(4096)
    w.add_embedding_length(256)
    w.add_head_count(8)
    w.add_head_count_kv(kv_heads)  # an int, or one value per block
    for i in range(4):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(256, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_hybrid_models_per_layer_kv_heads_are_read_and_counted(tmp_path: Path) -> None:
    """A per-layer array (short and numeric) is read with its values, as the gguf package reads
    it; the KV estimate then counts only the attention blocks' heads, and only of the blocks on the
    GPU (the last ones). Read as one number for every block, it was 4x too large here."""
    import gguf

    from llmos_tui.engine import vram
    from llmos_tui.engine.gguf_info import read_model_info
    from llmos_tui.engine.params import EngineParams

    hybrid = _hybrid_gguf(tmp_path / "hybrid.gguf", [0, 0, 2, 0])
    field = read_header(str(hybrid)).fields["lfm2.attention.head_count_kv"]
    assert isinstance(field, ArrayValue) and field.values == (0, 0, 2, 0)
    ref = gguf.GGUFReader(str(hybrid), "r").get_field("lfm2.attention.head_count_kv")
    assert list(field.values) == [int(v) for v in ref.contents()]
    info = read_model_info(hybrid)
    assert info.kv_heads_per_layer == [0, 0, 2, 0] and info.n_head_kv == 2 and info.n_head == 8
    uniform = read_model_info(_hybrid_gguf(tmp_path / "uniform.gguf", 2))
    assert uniform.kv_heads_per_layer == [] and uniform.n_head_kv == 2
    params = EngineParams(model_path=str(hybrid), n_ctx=4096, n_gpu_layers=-1, type_k="f16", type_v="f16")
    per_head = 4096 * 32 * (2 + 2)  # n_ctx x head size (256 / 8) x (K + V bytes in f16)
    assert vram.estimate(params, info).kv_cache == 2 * per_head  # one attention block of 2 KV heads
    assert vram.estimate(params, uniform).kv_cache == 4 * 2 * per_head
    # n_gpu_layers counts the output too (llama.cpp's i_gpu_start): 3 puts the last two blocks on the
    # GPU, with the attention block; 2 only the last block, which has no KV cache
    assert vram.estimate(params.replace(n_gpu_layers=3), info).kv_cache == 2 * per_head
    assert vram.estimate(params.replace(n_gpu_layers=2), info).kv_cache == 0
    assert vram.estimate(params.replace(n_gpu_layers=3), uniform).kv_cache == 2 * 2 * per_head
