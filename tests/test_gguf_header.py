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


def test_reading_model_info_imports_no_numpy() -> None:
    code = ("import sys; from llmos_tui.engine.gguf_info import read_model_info; "
            f"info = read_model_info({str(DEMO_MODEL)!r}); print(info.name, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "llmos demo False"
