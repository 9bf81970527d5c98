#!/usr/bin/env python3
"""`llmos-tui serve` against llama-cpp-python's own OpenAI server, side by side, then faults under load.

Part 1 — throughput and latency. Both servers run the same model with the same settings
(context, threads, n_batch/n_ubatch, no flash attention, one weight-repacking decision for both
(llama_cpp.server gets it through a small launcher: it has no switch, and its default repacking
crashes on AMX CPUs), every sampler field spelled out alike; our daemon's queue wait as long as
the client's timeout, as llama_cpp.server waits; llama_cpp.server with
``--interrupt_requests False``: by default a new request cuts the reply streaming, which
no client of ours would accept); the same client load (1, 4 and 16
concurrent streaming clients, each sending ``--requests`` requests) goes to one, then the other,
alternating the order every round (A B, B A, ...). Per round and load: generation tokens per
second over the round's wall time (tokens counted by one tokenizer on the text each client
received, so the two servers' chunking does not matter) and every request's time to first token
(client side). Ratios are ours ÷ theirs: the median of the paired per-round rates per load, and
the p99 of all TTFTs. Targets: every rate ratio ≥ 0.95, TTFT p99 ratio ≤ 1.0. Last line of the
part, exactly::

    serve_ratio_1=R serve_ratio_4=R serve_ratio_16=R ttft_p99_ratio=T

Part 2 — faults under load: 8 clients stream from our daemon while the engine is killed
(SIGKILL) ``--kills`` times, each after the doctor brought it back. Every request must end with a
reply or a readable error within its timeout. Last line, exactly::

    requests=N ok=K errored=E hung=H restarts=R

Targets: hung=0, restarts=kills, and requests after the last restart answered. The script prints
each target as met or NOT MET and exits 1 when one is not met.

    python scripts/bench_serve.py [--model bench|demo|PATH] [--rounds 3] [--requests 2] [--kills 5]

Needs llama-cpp-python's server extra (fastapi, sse-starlette, pydantic-settings,
starlette-context) for part 1; ``--skip-peer`` runs part 2 alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# Every sampling setting spelled out: the two servers' defaults differ (llama_cpp.server's
# repeat_penalty is 1.1, the engine's create_completion 1.0), so both get the same greedy sampler
# and, on the same prompt, should produce the same tokens.
SAMPLING = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": 1234}
LOADS = (1, 4, 16)
PROMPTS = ["What is VRAM?", "How does the KV cache grow?", "Why is prompt processing fast?",
           "What does quantisation trade?", "When does a model not fit?", "What is a token?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_path(choice: str) -> Path:
    if choice == "demo":
        return ROOT / "llmos_tui" / "data" / "demo.gguf"
    if choice == "bench":
        spec = importlib.util.spec_from_file_location("make_bench_model", ROOT / "scripts" / "make_bench_model.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return Path(module.ensure_bench_model())
    return Path(choice).expanduser()


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_healthy(server: Server, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited ({server.proc.returncode}); see {server.log}:\n"
                             + server.log.read_text()[-2000:])
        try:
            r = httpx.get(server.url + "/v1/models", timeout=2)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{server.name} did not answer within {timeout:.0f} s; see {server.log}")


def start_ours(model: Path, args: argparse.Namespace, home: Path) -> Server:
    port = free_port()
    (home / "config").mkdir(parents=True, exist_ok=True)
    # the fault part kills the engine more often than the default start limit (3 in 120 s) allows
    # llama_cpp.server lets a request wait for the model as long as it takes; ours refuses one that
    # waited [serve] wait_s (60 s) with a 503. On a slow box 16 clients wait longer than that: the
    # same load must be answered alike, so our wait is the client's own timeout here.
    (home / "config" / "config.toml").write_text("[doctor]\nstart_limit_burst = 50\nbackoff_s = 0.2\n"
                                                 f"[serve]\nwait_s = {max(60.0, args.timeout):g}\n")
    log = home / "serve.log"
    env = {**os.environ, "LLMOS_TUI_HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "llmos_tui.cli", "serve", "--listen", f"127.0.0.1:{port}", "--model", str(model),
           "--n-ctx", str(args.n_ctx), "--n-threads", str(args.threads), "--n-threads-batch", str(args.threads),
           "--n-batch", str(args.n_batch), "--n-ubatch", str(args.n_batch), "--flash-attn", "off",
           "--repack", args.repack, "--queue-size", "64"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env)
    return Server("llmos-tui serve", f"http://127.0.0.1:{port}", proc, log)


# llama_cpp.server has no switch for llama.cpp's weight repacking (``use_extra_bufts``, on by
# default): this launcher sets it as our engine does (``--repack``), through the same C default
# the engine's worker overrides (engine/loading.py), then runs the server's own main.
PEER_LAUNCHER = """
import runpy, sys
import llama_cpp.llama_cpp as C
repack = sys.argv.pop(1) == "on"
original = C.llama_model_default_params
def defaults():
    params = original()
    if hasattr(params, "use_extra_bufts"):
        params.use_extra_bufts = repack
    return params
C.llama_model_default_params = defaults
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def repack_setting() -> str:
    """One repack decision for both servers: ours resolves ``auto`` this way (off on AMX CPUs,
    whose repacked kernels crash llama.cpp at the first batched decode: llama.cpp#20824)."""
    sys.path.insert(0, str(ROOT))
    from llmos_tui.engine.params import resolve_repack

    return "on" if resolve_repack("auto")[0] else "off"


def start_theirs(model: Path, args: argparse.Namespace, home: Path) -> Server:
    port = free_port()
    log = home / "llama_cpp_server.log"
    cmd = [sys.executable, "-c", PEER_LAUNCHER, args.repack, "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(args.n_ctx), "--n_threads", str(args.threads),
           "--n_threads_batch", str(args.threads), "--n_batch", str(args.n_batch), "--n_ubatch", str(args.n_batch),
           "--n_gpu_layers", "-1", "--flash_attn", "False", "--verbose", "False",
           # its default lets each new request interrupt the one streaming: every reply is answered here
           "--interrupt_requests", "False"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    return Server("llama_cpp.server", f"http://127.0.0.1:{port}", proc, log)


# ---- the client load ---------------------------------------------------------------------------
@dataclass
class Result:
    ok: bool
    text: str = ""
    ttft: float | None = None
    error: str = ""
    hung: bool = False


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, timeout: float) -> Result:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, **SAMPLING}
    started = time.perf_counter()
    text, ttft = [], None
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    await r.aread()
                    return Result(False, error=f"HTTP {r.status_code}: {r.text[:120]}")
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:].strip()
                    if data == "[DONE]":
                        return Result(True, "".join(text), ttft)
                    event = json.loads(data)
                    if "error" in event:
                        return Result(False, "".join(text), ttft, error=str(event["error"].get("message", ""))[:120])
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if ttft is None:
                                ttft = time.perf_counter() - started
                            text.append(piece)
        return Result(False, "".join(text), ttft, error="the stream ended without [DONE]")
    except TimeoutError:
        return Result(False, "".join(text), ttft, error="timeout", hung=True)
    except httpx.HTTPError as exc:
        return Result(False, "".join(text), ttft, error=f"{type(exc).__name__}: {exc}")


async def run_load(url: str, clients: int, per_client: int, max_tokens: int, timeout: float) -> tuple[float, list[Result]]:
    results: list[Result] = []
    limits = httpx.Limits(max_connections=clients + 4)

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        for k in range(per_client):
            prompt = PROMPTS[(index + k) % len(PROMPTS)]
            results.append(await one_request(client, url, prompt, max_tokens, timeout))

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(i, client) for i in range(clients)))
        wall = time.perf_counter() - started
    return wall, results


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def part_one(ours: Server, theirs: Server, model: Path, args: argparse.Namespace) -> bool:
    from llama_cpp import Llama

    vocab = Llama(str(model), vocab_only=True, verbose=False)

    def tokens(results: list[Result]) -> int:
        return sum(len(vocab.tokenize(r.text.encode(), add_bos=False, special=False)) for r in results if r.ok)

    rates: dict[tuple[str, int], list[float]] = {}
    ttfts: dict[str, list[float]] = {ours.name: [], theirs.name: []}
    errors: dict[str, int] = {ours.name: 0, theirs.name: 0}
    for load in LOADS:  # warm both once (first requests pay for caches and imports)
        for server in (ours, theirs):
            asyncio.run(run_load(server.url, 1, 1, 8, args.timeout))
        for rnd in range(args.rounds):
            order = (ours, theirs) if rnd % 2 == 0 else (theirs, ours)
            for server in order:
                wall, results = asyncio.run(run_load(server.url, load, args.requests, args.max_tokens, args.timeout))
                rate = tokens(results) / wall
                rates.setdefault((server.name, load), []).append(rate)
                ttfts[server.name].extend(r.ttft for r in results if r.ttft is not None)
                errors[server.name] += sum(1 for r in results if not r.ok)
                print(f"  load {load:2d} round {rnd + 1}: {server.name:17s} {rate:8.1f} tok/s  "
                      f"TTFT p50 {statistics.median([r.ttft for r in results if r.ttft] or [0]) * 1000:7.1f} ms  "
                      f"errors {sum(1 for r in results if not r.ok)}", flush=True)
    ratios = {}
    for load in LOADS:
        paired = [a / b for a, b in zip(rates[(ours.name, load)], rates[(theirs.name, load)]) if b > 0]
        ratios[load] = statistics.median(paired) if paired else 0.0
    ttft_ratio = p99(ttfts[ours.name]) / p99(ttfts[theirs.name]) if ttfts[theirs.name] and ttfts[ours.name] else float("inf")
    for name in (ours.name, theirs.name):
        print(f"{name}: TTFT p50 {statistics.median(ttfts[name]) * 1000:.1f} ms, p99 {p99(ttfts[name]) * 1000:.1f} ms, "
              f"errors {errors[name]}")
    met = True
    for load in LOADS:
        ok = ratios[load] >= 0.95
        met &= ok
        print(f"target: throughput at {load} client(s) >= 0.95 of llama_cpp.server: {ratios[load]:.3f} "
              f"{'met' if ok else 'NOT MET'}")
    ok = ttft_ratio <= 1.0
    met &= ok
    print(f"target: TTFT p99 no worse than llama_cpp.server: ratio {ttft_ratio:.3f} {'met' if ok else 'NOT MET'}")
    ok = errors[ours.name] == 0
    met &= ok
    print(f"target: no errors from llmos-tui serve: {errors[ours.name]} {'met' if ok else 'NOT MET'}")
    print(f"serve_ratio_1={ratios[1]:.3f} serve_ratio_4={ratios[4]:.3f} serve_ratio_16={ratios[16]:.3f} "
          f"ttft_p99_ratio={ttft_ratio:.3f}", flush=True)
    return met


def engine_pid(daemon_pid: int) -> int | None:
    import psutil

    try:
        for child in psutil.Process(daemon_pid).children():
            if "llmos_tui.engine.worker" in " ".join(child.cmdline()):
                return child.pid
    except psutil.Error:
        return None
    return None


def part_two(ours: Server, args: argparse.Namespace) -> bool:
    results: list[Result] = []
    stop = asyncio.Event()
    restarts = 0

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        k = 0
        while not stop.is_set():
            results.append(await one_request(client, ours.url, PROMPTS[(index + k) % len(PROMPTS)],
                                             args.max_tokens, args.timeout))
            k += 1

    async def killer() -> None:
        nonlocal restarts
        for _ in range(args.kills):
            await asyncio.sleep(1.0)
            pid = engine_pid(ours.proc.pid)
            if pid is None:
                continue
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # back when a new engine answers
                await asyncio.sleep(0.2)
                new = engine_pid(ours.proc.pid)
                if new is not None and new != pid:
                    try:
                        async with httpx.AsyncClient(timeout=5) as c:
                            if (await c.get(ours.url + "/health")).status_code == 200:
                                restarts += 1
                                break
                    except httpx.HTTPError:
                        pass
        await asyncio.sleep(2.0)  # requests after the last restart
        stop.set()

    async def main() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(args.timeout), limits=httpx.Limits(max_connections=12)) as c:
            await asyncio.gather(killer(), *(client_loop(i, c) for i in range(8)))

    asyncio.run(main())
    ok = sum(1 for r in results if r.ok)
    hung = sum(1 for r in results if r.hung)
    errored = len(results) - ok - hung
    reasons: dict[str, int] = {}
    for r in results:
        if not r.ok:
            reasons[r.error[:60]] = reasons.get(r.error[:60], 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {n:3d} x {reason}")
    last_ok = results[-8:] and all(r.ok for r in results[-8:])
    met = True
    for text, good in ((f"hung = 0: {hung}", hung == 0), (f"restarts = {args.kills}: {restarts}", restarts == args.kills),
                       ("the last 8 requests answered", bool(last_ok))):
        met &= good
        print(f"target: {text} {'met' if good else 'NOT MET'}")
    print(f"requests={len(results)} ok={ok} errored={errored} hung={hung} restarts={restarts}", flush=True)
    return met


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bench", help="bench (the synthetic ~270 M model), demo, or a GGUF path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2, help="requests per client per round")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-batch", type=int, default=512, help="n_batch and n_ubatch of both servers")
    ap.add_argument("--repack", choices=("auto", "on", "off"), default="auto",
                    help="weight repacking for both servers (auto: as the engine resolves it here)")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=120.0, help="a request that takes longer is hung")
    ap.add_argument("--skip-peer", action="store_true", help="faults under load only (no llama_cpp.server)")
    args = ap.parse_args()
    for name, value in (("--rounds", args.rounds), ("--requests", args.requests), ("--max-tokens", args.max_tokens),
                        ("--threads", args.threads), ("--n-ctx", args.n_ctx), ("--n-batch", args.n_batch)):
        if value < 1:
            ap.error(f"{name} must be at least 1, got {value}")
    if args.kills < 0 or args.timeout <= 0:
        ap.error("--kills must be >= 0 and --timeout > 0")
    if args.repack == "auto":
        args.repack = repack_setting()
    model = model_path(args.model)
    if not model.is_file():
        ap.error(f"no model at {model}")
    print(f"model {model} ({model.stat().st_size / 1e6:.1f} MB), n_ctx {args.n_ctx}, threads {args.threads}, "
          f"n_batch/n_ubatch {args.n_batch}, repack {args.repack}, flash attention off, "
          f"max_tokens {args.max_tokens}, {args.rounds} rounds x {args.requests} requests per client", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        home = Path(tmp)
        ours = start_ours(model, args, home)
        theirs = None
        try:
            wait_healthy(ours)
            met = True
            if not args.skip_peer:
                if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("sse_starlette") is None:
                    print("llama_cpp.server needs llama-cpp-python's server extra (fastapi, sse-starlette, "
                          "pydantic-settings, starlette-context); use --skip-peer to run the fault part alone")
                    return 2
                theirs = start_theirs(model, args, home)
                wait_healthy(theirs)
                print("part 1: throughput and latency, llmos-tui serve vs llama_cpp.server (alternated)", flush=True)
                met &= part_one(ours, theirs, model, args)
                theirs.stop()
                theirs = None
            print(f"part 2: {args.kills} kill -9 of the engine while 8 clients stream", flush=True)
            met &= part_two(ours, args)
        finally:
            if theirs is not None:
                theirs.stop()
            ours.stop()
    print("all targets met" if met else "some targets NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
