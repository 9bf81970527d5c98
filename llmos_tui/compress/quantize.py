"""Quantise a GGUF model with llama.cpp's own quantizer (``llama_model_quantize``), safely.

- The quantizer runs in a child process: an assert or a crash in it ends the child, not the
  operator's session; the caller gets a ``QuantizeError`` with llama.cpp's last lines.
- It writes to ``OUT.part`` next to the output and links the finished file into place, so an
  existing file is never overwritten (checked first, and again atomically at the end) and a
  failed run (a full disk, a crash) leaves no half-written model behind.
- Free disk space is checked first against an estimate from the source's tensor types.
- Progress comes from llama.cpp's own per-tensor log lines (``[  12/  38] blk.1.attn_q.weight``);
  when they do not come, from the output file growing against the estimate.

Run as ``python -m llmos_tui.compress.quantize SRC DST FTYPE NTHREAD ALLOW_REQUANTIZE`` it is
the child itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from llmos_tui.errors import LlmosError

if TYPE_CHECKING:
    from llmos_tui.journal import Journal, JournalPort, JournalWriter

# llama.cpp's enum llama_ftype (llama.h), by the names operators type. Checked against the
# binding's LLAMA_FTYPE_MOSTLY_* constants in the tests.
FTYPES: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9,
    "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15,
    "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30, "bf16": 32,
}
# bits per weight and block width of each target's main type (ggml block sizes)
_MAIN: dict[str, tuple[float, int]] = {
    "f32": (32.0, 1), "f16": (16.0, 1), "bf16": (16.0, 1), "q8_0": (8.5, 32), "q4_0": (4.5, 32),
    "q4_1": (5.0, 32), "q5_0": (5.5, 32), "q5_1": (6.0, 32), "q2_k": (2.625, 256), "q3_k_s": (3.4375, 256),
    "q3_k_m": (3.4375, 256), "q3_k_l": (3.4375, 256), "q4_k_s": (4.5, 256), "q4_k_m": (4.5, 256),
    "q5_k_s": (5.5, 256), "q5_k_m": (5.5, 256), "q6_k": (6.5625, 256), "iq4_nl": (4.5, 32), "iq4_xs": (4.25, 256),
}
# bits per weight of source tensor types (the file being quantised)
_SOURCE_BPW = {"F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K": 5.5, "Q5_0": 5.5,
               "Q5_1": 6.0, "Q4_K": 4.5, "Q4_0": 4.5, "Q4_1": 5.0, "Q3_K": 3.4375, "Q2_K": 2.625}
FLOAT_SOURCES = ("F32", "F16", "BF16")
_PROGRESS = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\]\s+(\S+)")
SPACE_MARGIN = 1.05  # estimate * margin + 1 MiB must be free


class QuantizeError(LlmosError):
    """The quantisation was refused or failed; the message is one line for the operator."""


@dataclass
class Estimate:
    bytes: int  # what the output should take on disk (an upper estimate)
    n_tensors: int
    source_types: dict[str, int]  # tensor type -> count in the source
    floating_source: bool  # every weight matrix is F32/F16/BF16 (no requantisation)


@dataclass
class QuantizeResult:
    source: str
    output: str
    qtype: str
    size_bytes: int
    source_bytes: int
    seconds: float
    n_tensors: int
    estimate_bytes: int
    log_tail: list[str] = field(default_factory=list)
    journal_id: int | None = None  # mdl:N when journaled

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def normalise_qtype(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in FTYPES:
        raise QuantizeError(f"unknown quantisation type {name!r} (known: {', '.join(FTYPES)})")
    return key


def default_output(source: str | os.PathLike[str], qtype: str) -> Path:
    """``model-F16.gguf`` -> ``model-Q8_0.gguf`` (same folder); otherwise ``model-Q8_0.gguf``."""
    src = Path(source)
    stem = re.sub(r"[-_.](f32|f16|bf16|q\d(_k)?(_[sml0-9])?)$", "", src.stem, flags=re.IGNORECASE)
    return src.with_name(f"{stem}-{qtype.upper()}.gguf")


def estimate(source: str | os.PathLike[str], qtype: str) -> Estimate:
    """Upper estimate of the output size from the source's tensors (header size + each tensor
    at the bits per weight it will get; a tensor whose rows do not fit the target's block falls
    back to at most Q8_0 in llama.cpp, and is counted so)."""
    import gguf  # the gguf package reads headers and tensor infos without loading weights

    qtype = normalise_qtype(qtype)
    try:
        reader = gguf.GGUFReader(os.fspath(source))
    except Exception as exc:  # noqa: BLE001 - a damaged file is one line, not a traceback
        raise QuantizeError(f"cannot read the tensors of {source}: {exc}") from None
    main_bpw, block = _MAIN[qtype]
    total = 0.0
    types: dict[str, int] = {}
    floating = True
    header = min((t.data_offset for t in reader.tensors), default=0)
    for t in reader.tensors:
        tname = t.tensor_type.name
        types[tname] = types.get(tname, 0) + 1
        n = int(t.n_elements)
        shape = [int(x) for x in t.shape]
        src_bpw = _SOURCE_BPW.get(tname, t.n_bytes * 8.0 / max(n, 1))
        if len(shape) < 2 or shape[1] == 1:
            bpw = 32.0 if tname == "F32" else src_bpw  # norms and biases stay as they are (f32)
        else:
            if tname not in FLOAT_SOURCES:
                floating = False
            bpw = main_bpw
            if shape[0] % block:
                bpw = max(bpw, 8.5) if main_bpw < 16 else bpw  # llama.cpp's fallback types
            elif qtype not in ("q8_0", "f16", "bf16", "f32") and (
                t.name in ("token_embd.weight", "output.weight")
                or (qtype.endswith("_m") or qtype == "q3_k_l") and (".attn_v." in t.name or ".ffn_down." in t.name)
            ):
                # Q6_K for the embedding/output (and V/down in the _M mixes); Q8_0 where Q6_K's
                # 256-wide blocks do not fit the rows
                bpw = max(bpw, 6.5625 if shape[0] % 256 == 0 else 8.5)
        total += n * bpw / 8.0 + 32  # + alignment padding
    return Estimate(int(header + total), len(reader.tensors), types, floating)


def free_bytes(folder: str | os.PathLike[str]) -> int:
    return int(shutil.disk_usage(os.fspath(folder)).free)


def quantize(
    source: str | os.PathLike[str],
    qtype: str,
    output: str | os.PathLike[str] | None = None,
    *,
    nthread: int = 0,
    allow_requantize: bool = False,
    check_space: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    timeout: float = 3600.0,
    python: str = sys.executable,
) -> QuantizeResult:
    """Quantise ``source`` to ``qtype``; refuse an existing output, a missing source, too
    little disk. ``progress(done, total, tensor_name)`` is called from a reader thread."""
    from llmos_tui.engine.gguf_info import check_model_path
    from llmos_tui.errors import ModelError

    qtype = normalise_qtype(qtype)
    try:
        src = check_model_path(source).resolve()
    except ModelError as exc:
        raise QuantizeError(str(exc)) from None
    out = Path(output).expanduser() if output else default_output(src, qtype)
    out = out.absolute()
    if out.exists():
        raise QuantizeError(f"refusing to overwrite {out}: it exists (choose another --out or remove it)")
    if out.resolve() == src:
        raise QuantizeError("the output must not be the source file")
    if not out.parent.is_dir():
        raise QuantizeError(f"output folder does not exist: {out.parent}")
    if not os.access(out.parent, os.W_OK):
        raise QuantizeError(f"output folder is not writable: {out.parent}")
    est = estimate(src, qtype)
    if not est.floating_source and not allow_requantize:
        kinds = ", ".join(f"{k}×{v}" for k, v in sorted(est.source_types.items()))
        raise QuantizeError(f"{src.name} is already quantised ({kinds}); requantising loses quality twice — "
                            f"pass --allow-requantize to do it anyway")
    if check_space:
        need = int(est.bytes * SPACE_MARGIN) + (1 << 20)
        free = free_bytes(out.parent)
        if free < need:
            from llmos_tui.engine.gguf_info import human_bytes

            raise QuantizeError(f"not enough free disk in {out.parent}: {human_bytes(free)} free, "
                                f"the {qtype} file needs about {human_bytes(need)}")
    part = out.with_name(out.name + ".part")
    if part.exists():
        raise QuantizeError(f"{part} exists (another quantisation running, or a leftover): remove it first")
    cmd = [python, "-m", "llmos_tui.compress.quantize", str(src), str(part), str(FTYPES[qtype]),
           str(int(nthread)), "1" if allow_requantize else "0"]
    started = time.perf_counter()
    tail: deque[str] = deque(maxlen=30)
    done_tensors = [0]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)

    def read_log() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            tail.append(line)
            m = _PROGRESS.match(line)
            if m:
                done_tensors[0] = int(m.group(1))
                if progress is not None:
                    progress(int(m.group(1)), int(m.group(2)), m.group(3))

    reader = threading.Thread(target=read_log, name="quantize-log", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        last_size = -1
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(5)
                raise QuantizeError(f"quantisation ran past {timeout:.0f} s and was stopped")
            if progress is not None and done_tensors[0] == 0:  # no log lines (yet): the file growing
                try:
                    size = part.stat().st_size
                except OSError:
                    size = 0
                if size != last_size:
                    last_size = size
                    progress(min(size, est.bytes), est.bytes, "bytes")
            time.sleep(0.05)
        reader.join(5)
        code = proc.returncode
        if code != 0:
            why = _reason(list(tail))
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise QuantizeError(f"llama.cpp's quantizer failed ({how}){': ' + why if why else ''}")
        if not part.exists():
            raise QuantizeError("llama.cpp's quantizer reported success but wrote no file")
        try:
            os.link(part, out)  # fails if the output appeared meanwhile: never overwrite
        except FileExistsError:
            raise QuantizeError(f"refusing to overwrite {out}: it appeared while quantising") from None
        except OSError:  # a filesystem without hard links: rename, after one more look
            if out.exists():
                raise QuantizeError(f"refusing to overwrite {out}: it appeared while quantising") from None
            os.rename(part, out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        try:
            part.unlink()
        except FileNotFoundError:
            pass
    return QuantizeResult(str(src), str(out), qtype, out.stat().st_size, src.stat().st_size,
                          time.perf_counter() - started, est.n_tensors, est.bytes, list(tail)[-8:])


def _reason(lines: list[str]) -> str:
    for line in reversed(lines):
        low = line.lower()
        if any(w in low for w in ("error", "failed", "exception", "no space", "assert", "cannot", "unable")):
            return line.strip()[:240]
    return lines[-1].strip()[:240] if lines else ""


def journal_result(journal: "JournalPort | Journal | JournalWriter | None", result: QuantizeResult) -> int | None:
    """Record the new file with its parent through the journal port (a Journal, a JournalWriter or
    a port over either); returns mdl:N's N, or None without a journal."""
    from llmos_tui.journal.port import JournalPort

    details = {"seconds": round(result.seconds, 3), "n_tensors": result.n_tensors,
               "source_bytes": result.source_bytes, "estimate_bytes": result.estimate_bytes,
               "tool": "llama_model_quantize"}

    def write(j: "Journal") -> int:
        return j.record_model_file(result.output, parent_path=result.source, quantization=result.qtype,
                                   origin="quantize", size_bytes=result.size_bytes, details=details).id

    model_id = JournalPort.of(journal, "quantize").call(write, timeout=30)
    result.journal_id = model_id
    return model_id


def _child(argv: list[str]) -> int:
    src, dst, ftype, nthread, allow = argv
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(nthread)
    params.allow_requantize = allow == "1"
    # llama.cpp logs each tensor to stderr, which the parent reads for progress
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        sys.stderr.write(f"llmos-quantize: error: llama_model_quantize returned {rc}\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
