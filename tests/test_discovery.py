"""`llmos-tui models`: GGUF files found where people keep them, described from their headers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from llmos_tui.engine.discovery import discover, search_roots
from llmos_tui.engine.gguf_info import read_model_info
from llmos_tui.paths import DEMO_MODEL
from tests.conftest import cli_env


def fake_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    # Hugging Face hub cache: snapshots link to blobs
    snap = home / ".cache/huggingface/hub/models--acme--tiny-GGUF/snapshots/abc123"
    blobs = home / ".cache/huggingface/hub/models--acme--tiny-GGUF/blobs"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    shutil.copy(DEMO_MODEL, blobs / "deadbeef")
    (snap / "tiny-f16.gguf").symlink_to(blobs / "deadbeef")
    # LM Studio
    lms = home / ".lmstudio/models/acme/tiny"
    lms.mkdir(parents=True)
    shutil.copy(DEMO_MODEL, lms / "tiny-lms.gguf")
    # Ollama: a manifest names a content-addressed blob
    ollama = home / ".ollama/models"
    (ollama / "blobs").mkdir(parents=True)
    shutil.copy(DEMO_MODEL, ollama / "blobs/sha256-1111")
    manifest = ollama / "manifests/registry.ollama.ai/library/tiny/latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:1111"}]}))
    # ~/models with a broken file next to a good one
    models = home / "models"
    models.mkdir()
    shutil.copy(DEMO_MODEL, models / "mine.gguf")
    (models / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 10)
    return home


def test_discovers_every_usual_place(tmp_path: Path) -> None:
    home = fake_home(tmp_path)
    found = discover(search_roots(home=home, env={}), include_demo=False)
    by_label = {f.label: f for f in found}
    assert "acme/tiny-GGUF/tiny-f16.gguf" in by_label
    assert by_label["acme/tiny-GGUF/tiny-f16.gguf"].source == "hf-hub"
    assert by_label["tiny-lms.gguf"].source == "lm-studio"
    assert by_label["tiny:latest"].source == "ollama"
    assert by_label["mine.gguf"].info.architecture == "llama"
    assert by_label["broken.gguf"].error and by_label["broken.gguf"].info is None
    # every copy is the demo model: its header facts, as the gguf package (not our reader) reads them
    truth = header_truth(DEMO_MODEL)
    described = [f for f in found if f.info]
    assert len(described) == 4
    for f in described:
        assert (f.info.architecture, f.info.context_length, f.info.n_layer) == truth[:3], f.label
        assert f.info.quantization == truth[3], f.label


def header_truth(path: Path) -> tuple[str, int, int, str]:
    """(architecture, context length, block count, quantisation name) read by gguf.GGUFReader."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()
    file_type = int(reader.fields["general.file_type"].contents())
    names = {0: "F32", 1: "F16", 7: "Q8_0", 15: "Q4_K_M", 2: "Q4_0"}
    return (arch, int(reader.fields[f"{arch}.context_length"].contents()),
            int(reader.fields[f"{arch}.block_count"].contents()), names.get(file_type, str(file_type)))


def test_header_facts_of_the_demo_model() -> None:
    info = read_model_info(DEMO_MODEL)
    assert (info.architecture, info.context_length, info.n_layer, info.quantization) == header_truth(DEMO_MODEL)
    assert info.is_demo and info.has_chat_template
    assert info.n_params > 100_000 and info.n_layer and info.n_head_kv and info.head_dim_k
    assert info.size_bytes == DEMO_MODEL.stat().st_size


def test_models_command_lists_a_folder(tmp_path: Path) -> None:
    home = fake_home(tmp_path)
    env = cli_env() | {"HOME": str(home), "HF_HOME": str(home / ".cache/huggingface")}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "models", "--json"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    sources = {r["source"] for r in rows}
    assert {"demo", "hf-hub", "lm-studio", "ollama", "~/models"} <= sources
    table = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "models"], capture_output=True, text=True,
                           env=env, timeout=60).stdout
    arch, ctx, _, quant = header_truth(DEMO_MODEL)
    assert "tiny:latest" in table and quant in table and str(ctx) in table
