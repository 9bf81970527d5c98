"""Find GGUF files where people keep them, and describe each from its header alone."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from llmos_tui.engine.gguf_info import GGUF_MAGIC, ModelInfo, read_model_info
from llmos_tui.errors import ModelError
from llmos_tui.paths import DEMO_MODEL


@dataclass
class Found:
    path: Path
    source: str  # where it was found: demo, hf-hub, lm-studio, llama.cpp, ollama, ~/models, extra
    label: str  # a friendly name (an Ollama tag, a hub repo) or the file name
    info: ModelInfo | None = None
    error: str | None = None


def search_roots(home: Path | None = None, env: dict[str, str] | None = None) -> list[tuple[str, Path]]:
    env = dict(os.environ if env is None else env)
    home = home or Path.home()
    hf_home = Path(env.get("HF_HOME", home / ".cache" / "huggingface"))
    roots: list[tuple[str, Path]] = [
        ("hf-hub", Path(env.get("HF_HUB_CACHE", hf_home / "hub"))),
        ("lm-studio", home / ".lmstudio" / "models"),
        ("lm-studio", home / ".cache" / "lm-studio" / "models"),
        ("llama.cpp", Path(env.get("LLAMA_CACHE", home / ".cache" / "llama.cpp"))),
        ("ollama", Path(env.get("OLLAMA_MODELS", home / ".ollama" / "models"))),
        ("ollama", Path("/usr/share/ollama/.ollama/models")),
        ("~/models", home / "models"),
    ]
    for extra in filter(None, env.get("LLMOS_TUI_MODEL_DIRS", "").split(os.pathsep)):
        roots.append(("extra", Path(extra).expanduser()))
    return roots


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _walk_gguf(root: Path, max_depth: int = 6) -> Iterator[Path]:
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if len(Path(dirpath).parts) - base_depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "blobs"]
        for name in filenames:
            if name.lower().endswith(".gguf"):
                yield Path(dirpath) / name


def _hf_label(path: Path) -> str:
    for part in path.parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/") + "/" + path.name
    return path.name


def _ollama_models(root: Path) -> Iterator[tuple[Path, str]]:
    """Ollama keeps weights as content-addressed blobs; its manifests name them."""
    manifests = root / "manifests"
    named: dict[Path, str] = {}
    if manifests.is_dir():
        for manifest in manifests.rglob("*"):
            if not manifest.is_file():
                continue
            try:
                layers = json.loads(manifest.read_text()).get("layers", [])
            except (OSError, ValueError):
                continue
            for layer in layers:
                if layer.get("mediaType") == "application/vnd.ollama.image.model":
                    blob = root / "blobs" / layer.get("digest", "").replace(":", "-")
                    rel = manifest.relative_to(manifests).parts
                    named[blob] = f"{rel[-2]}:{rel[-1]}" if len(rel) >= 2 else manifest.name
    for blob, label in sorted(named.items()):
        if blob.is_file() and _is_gguf(blob):
            yield blob, label


def discover(roots: Iterable[tuple[str, Path]] | None = None, *, include_demo: bool = True,
             read_headers: bool = True) -> list[Found]:
    found: list[Found] = []
    seen: set[Path] = set()

    def add(path: Path, source: str, label: str) -> None:
        try:
            real = path.resolve()
        except OSError:
            return
        if real in seen:
            return
        seen.add(real)
        item = Found(path, source, label)
        if read_headers:
            try:
                item.info = read_model_info(path)
            except ModelError as exc:
                item.error = str(exc)
        found.append(item)

    if include_demo and DEMO_MODEL.exists():
        add(DEMO_MODEL, "demo", "llmos demo (embedded)")
    for source, root in roots if roots is not None else search_roots():
        if not root.is_dir():
            continue
        if source == "ollama":
            for blob, label in _ollama_models(root):
                add(blob, source, label)
            continue
        for path in sorted(_walk_gguf(root)):
            add(path, source, _hf_label(path) if source == "hf-hub" else path.name)
    return found
