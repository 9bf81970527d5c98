"""The engine child process: llama-cpp-python runs here, never in the operator's process.

A CUDA out-of-memory or a GGML assert aborts the whole process; living in a child means it
takes down only this worker, and the supervisor in the parent sees the exit code or signal.

Protocol (see protocol.py): JSON commands, one per line, on stdin; JSON events, one per
line, on a private copy of the original stdout. File descriptor 1 is pointed at stderr
before llama.cpp is imported, so that nothing llama.cpp prints can corrupt the event
stream; stderr carries llama.cpp's log lines, which the supervisor keeps.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable

from llmos_tui.engine import protocol as P
from llmos_tui.jsontypes import JsonDict

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import ChatFormatter

    from llmos_tui.engine.loading import BuftOverrides

_out_fd = -1
FLUSH_INTERVAL_S = 0.004  # slower models (most real ones) get every piece at once
_out_lock = threading.Lock()


def emit(event: JsonDict) -> None:
    data = (json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    with _out_lock:
        view = memoryview(data)
        while view:
            n = os.write(_out_fd, view)
            view = view[n:]


def log(line: str) -> None:
    sys.stderr.write(f"llmos-worker: {line}\n")
    sys.stderr.flush()


def response_grammar(fmt: JsonDict) -> object:
    """llama.cpp's grammar for an API request's ``response_format``: a JSON object for
    ``json_object``, an instance of the schema where one is given (llama-cpp-python's converter,
    the same as llama-server's)."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    schema = fmt.get("schema")
    if schema is None:
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if not isinstance(schema, dict):
        raise ValueError("the JSON schema must be an object")
    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # noqa: BLE001 - the converter raises whatever it meets
        raise ValueError(f"this JSON schema cannot be turned into a grammar ({type(exc).__name__}: {exc})") from None


def fold_for_strict_templates(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation as the strict chat templates take it (Gemma's, Mistral's and Llama 2's raise on
    a system turn or on two turns of one role in a row): the system prompts folded into the first
    user turn (llama.cpp's polyfill for templates without a system role), consecutive turns of one
    role joined. Unchanged when there is nothing to fold."""
    system = [m["content"] for m in messages if m.get("role") == "system" and m.get("content")]
    out: list[dict[str, str]] = []
    for m in messages:
        if m.get("role") == "system":
            continue
        if out and out[-1]["role"] == m.get("role"):
            out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n\n{m.get('content', '')}"}
        else:
            out.append(dict(m))
    if system:
        text = "\n\n".join(system)
        first = next((i for i, m in enumerate(out) if m.get("role") == "user"), None)
        if first is None:
            out.insert(0, {"role": "user", "content": text})
        else:
            out[first] = {**out[first], "content": f"{text}\n\n{out[first]['content']}"}
    return out


class Worker:
    def __init__(self) -> None:
        self.llm: Llama | None = None
        self.params: JsonDict = {}
        self.cancel = threading.Event()
        self.commands: queue.Queue[JsonDict | None] = queue.Queue()
        self.slow_ms = 0.0  # injected per-token delay (fault "slow")
        self.stall = threading.Event()  # injected: decode stops for good (fault "stall")
        self.formatter: ChatFormatter | None = None
        self.strict_template = False  # the template raised on a system turn or on two turns of one role: fold first
        self.cancelled_ids: set[int] = set()
        self.current_id: int | None = None
        self.repack: tuple[bool, str] = (True, "")  # may llama.cpp repack the weights, and why
        self.overrides: BuftOverrides | None = None  # llama.cpp keeps a pointer to it: lives with the model

    # ---- stdin reader: cancel and faults act at once, the rest waits its turn ----
    def read_commands(self) -> None:
        for raw in sys.stdin.buffer:
            try:
                cmd = json.loads(raw)
            except ValueError:
                emit({"ev": P.EV_ERROR, "message": f"bad command line: {raw[:80]!r}"})
                continue
            op = cmd.get("op")
            if op == P.OP_CANCEL:
                # remembered by id: a cancel that overtakes its queued request still counts
                rid = cmd.get("id")
                if rid is not None:
                    self.cancelled_ids.add(rid)
                if rid is None or rid == self.current_id:
                    self.cancel.set()
            elif op == P.OP_FAULT and cmd.get("kind") in ("slow", "abort", "exit", "stall"):
                self.fault(cmd)  # immediate, even mid-reply
            else:
                self.commands.put(cmd)
        self.commands.put(None)  # parent closed stdin: shut down

    def run(self) -> None:
        threading.Thread(target=self.read_commands, name="stdin", daemon=True).start()
        emit({"ev": P.EV_HELLO, "pid": os.getpid()})
        while True:
            cmd = self.commands.get()
            if cmd is None or cmd.get("op") == P.OP_SHUTDOWN:
                break
            op = cmd.get("op")
            try:
                if op == P.OP_LOAD:
                    self.load(cmd["params"])
                elif op == P.OP_CHAT:
                    self.chat(cmd)
                elif op == P.OP_RESET:
                    self.reset()
                elif op == P.OP_FAULT:
                    self.fault(cmd)
                elif op == P.OP_BENCH:
                    self.bench(cmd)
                elif op == P.OP_SET_THREADS:
                    self.set_threads(cmd)
                else:
                    emit({"ev": P.EV_ERROR, "id": cmd.get("id"), "message": f"unknown op {op!r}"})
            except Exception as exc:  # an error answers the request; the worker lives on
                emit({"ev": P.EV_ERROR, "id": cmd.get("id"), "message": f"{type(exc).__name__}: {exc}"})
        self.unload()
        emit({"ev": P.EV_BYE})

    # ---- model ----------------------------------------------------------------
    def load(self, params: JsonDict) -> None:
        import llama_cpp
        import llama_cpp.llama_cpp as C

        self.unload()
        t0 = time.perf_counter()
        last = [0.0]

        @C.llama_progress_callback
        def on_progress(progress: float, _user: object) -> bool:
            if progress - last[0] >= 0.05 or progress >= 1.0:
                last[0] = progress
                emit({"ev": P.EV_PROGRESS, "progress": round(float(progress), 3)})
            return True

        from llmos_tui.engine.loading import expert_overrides, llama_defaults
        from llmos_tui.engine.params import resolve_repack

        self.repack = resolve_repack(params.get("repack", "auto"))
        n_cpu_moe = int(params.get("n_cpu_moe") or 0)
        try:
            refusal = expert_offload_refusal(params["model_path"], n_cpu_moe)
            if refusal:
                raise ValueError(refusal)
            self.overrides = expert_overrides(n_cpu_moe)
            with llama_defaults(flash_attn=params["flash_attn"], repack=self.repack[0], progress=on_progress,
                                overrides=self.overrides):
                self.llm = llama_cpp.Llama(
                    model_path=params["model_path"],
                    n_gpu_layers=params["n_gpu_layers"],
                    n_ctx=params["n_ctx"],
                    n_batch=params["n_batch"],
                    n_ubatch=params["n_ubatch"],
                    n_threads=params["n_threads"],
                    n_threads_batch=params["n_threads_batch"],
                    flash_attn=params["flash_attn"] == "on",
                    type_k=P.cache_type_id(params["type_k"]),
                    type_v=P.cache_type_id(params["type_v"]),
                    seed=params["seed"],
                    use_mmap=params["use_mmap"],
                    verbose=True,  # llama.cpp's log lines go to stderr, which the supervisor keeps
                )
        except Exception as exc:
            emit({"ev": P.EV_LOAD_FAILED, "message": str(exc) or type(exc).__name__})
            return
        self.params = params
        load_ms = (time.perf_counter() - t0) * 1000
        self.load_ms = load_ms
        emit({"ev": P.EV_LOADED, "load_ms": load_ms, "runtime": self.runtime_facts()})

    def runtime_facts(self) -> JsonDict:
        import llama_cpp.llama_cpp as C

        llm = self.llm
        model = llm.model
        return {
            "n_ctx": int(C.llama_n_ctx(llm.ctx)),
            "n_layer": int(C.llama_model_n_layer(model)),
            "n_params": int(C.llama_model_n_params(model)),
            "model_size": int(C.llama_model_size(model)),
            "desc": _c_string(C.llama_model_desc, model),
            "n_ctx_train": int(C.llama_model_n_ctx_train(model)),
            "gpu_offload": bool(C.llama_supports_gpu_offload()),
            "chat_format": getattr(llm, "chat_format", None),
            "repack": self.repack[0],
            "repack_why": self.repack[1],
            "n_cpu_moe": int(self.params.get("n_cpu_moe") or 0),
            "expert_overrides": len(self.overrides.patterns) if self.overrides else 0,
            "memory": self.memory_reading(),
        }

    def memory_reading(self) -> JsonDict | None:
        """The load's real peak memory beside the header's estimate (engine/memfit.py): VRAM from
        NVML when layers are on a GPU, else this process's peak RSS. Never fails a load."""
        import resource

        import llama_cpp.llama_cpp as C

        try:
            from llmos_tui.engine import memfit
            from llmos_tui.engine.gguf_info import read_model_info
            from llmos_tui.engine.params import EngineParams

            params = EngineParams.from_mapping(self.params)
            device = memfit.device_of(params, bool(C.llama_supports_gpu_offload()))
            if device == "gpu":
                peak = _VramPeak(os.getpid()).peak
                measured = peak / (1024 * 1024) if peak else None
            else:
                measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            return memfit.reading(params, read_model_info(params.model_path), device, measured, "load")
        except Exception as exc:  # noqa: BLE001 - a missing figure, never a failed load
            log(f"memory reading skipped: {type(exc).__name__}: {exc}")
            return None

    def format_prompt(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
        """Apply the model's chat template ourselves: create_chat_completion takes no
        stopping criteria, and those give us per-token timing and instant cancel."""
        llm = self.llm
        if self.formatter is None:
            import jinja2
            from llama_cpp import llama_chat_format as F

            template = llm.metadata.get("tokenizer.chat_template")
            if template:
                eos_id, bos_id = llm.token_eos(), llm.token_bos()
                try:
                    self.formatter = F.Jinja2ChatFormatter(
                        template=template,
                        eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
                        bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
                        stop_token_ids=[eos_id],
                    )
                except jinja2.TemplateError as exc:  # as llama-server: ChatML, and say so
                    log(f"the model's chat template does not parse ({exc}): falling back to ChatML, "
                        "which may not be the format this model was trained on")
                    self.formatter = F.format_chatml
            else:  # no template in the GGUF: ChatML is what most instruct models expect
                self.formatter = F.format_chatml
        if self.strict_template:
            messages = fold_for_strict_templates(messages)
        try:
            result = self.formatter(messages=messages)
        except Exception as exc:  # noqa: BLE001 - a template's raise_exception, or a render error
            plain = fold_for_strict_templates(messages)
            if plain == messages:
                raise ValueError(f"messages: the model's chat template refused the conversation: {exc}") from exc
            try:  # as llama.cpp's templates polyfill: the system prompt folded into the first user turn
                result = self.formatter(messages=plain)
            except Exception as again:  # noqa: BLE001
                raise ValueError(f"messages: the model's chat template refused the conversation: {again}") from again
            self.strict_template = True  # from now on folded before rendering, without a failed render first
            log(f"chat template refused the conversation ({exc}): from now on the system prompt goes into "
                "the first user turn and turns of one role in a row are joined")
        # as llama-server: the model's own special tokens (BOS where its vocabulary asks for one), unless the
        # template wrote the BOS itself. Trusting the formatter's added_special left out the BOS of every
        # model whose template has no bos_token but whose vocabulary adds one (the demo model is one)
        bos_id = llm.token_bos()
        bos_text = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        has_bos = bool(bos_text) and result.prompt.startswith(bos_text)
        tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not has_bos, special=True)
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return tokens, stop

    def fit_context(self, messages: list[dict[str, str]], tokens: list[int], stop: list[str],
                    max_tokens: object) -> tuple[list[int], list[str], int]:
        """A conversation longer than the context, as llama-cli and LM Studio's rolling window treat it:
        the oldest turns (after the system prompt) are left out until the prompt fits with room for a
        reply (``max_tokens``, at most a quarter of the context). The newest message always stays; if it
        alone does not fit, the caller's context error follows. Returns the tokens, stops and how many
        messages were left out (the conversation itself keeps them)."""
        import llama_cpp.llama_cpp as C

        n_ctx = int(C.llama_n_ctx(self.llm.ctx))
        room = min(int(max_tokens) if isinstance(max_tokens, int) and max_tokens > 0 else 256, n_ctx // 4)
        kept, dropped = list(messages), 0
        head = 1 if kept and kept[0].get("role") == "system" else 0
        while len(tokens) > n_ctx - room and len(kept) - head > 1:
            del kept[head]
            dropped += 1
            if len(kept) - head > 1 and kept[head].get("role") == "assistant":  # its reply goes with it
                del kept[head]
                dropped += 1
            tokens, stop = self.format_prompt(kept)
        if dropped:
            log(f"chat: {dropped} earlier messages left out to fit the {n_ctx}-token context")
        return tokens, stop, dropped

    def set_threads(self, cmd: JsonDict) -> None:
        """Change generation / prompt threads without a reload (queued: applies to the next request)."""
        import llama_cpp.llama_cpp as C

        if self.llm is None:
            emit({"ev": P.EV_ERROR, "id": cmd.get("id"), "message": "no model loaded"})
            return
        n, nb = int(cmd["n_threads"]), int(cmd["n_threads_batch"])
        if n < 1 or nb < 1:
            emit({"ev": P.EV_ERROR, "id": cmd.get("id"), "message": f"thread counts must be >= 1, got {n}/{nb}"})
            return
        C.llama_set_n_threads(self.llm.ctx, n, nb)
        self.llm.n_threads, self.llm.n_threads_batch = n, nb
        emit({"ev": P.EV_THREADS_SET, "id": cmd.get("id"), "n_threads": int(C.llama_n_threads(self.llm.ctx)),
              "n_threads_batch": int(C.llama_n_threads_batch(self.llm.ctx))})

    def unload(self) -> None:
        self.formatter = None
        self.strict_template = False
        if self.llm is not None:
            self.llm.close()
            self.llm = None
        self.overrides = None

    def reset(self) -> None:
        if self.llm is not None:
            self.llm.reset()
            self.llm._ctx.kv_cache_clear()
        emit({"ev": P.EV_RESET_DONE})

    # ---- chat -------------------------------------------------------------------
    def chat(self, cmd: JsonDict) -> None:
        import llama_cpp.llama_cpp as C

        rid = cmd["id"]
        if self.llm is None:
            emit({"ev": P.EV_ERROR, "id": rid, "message": "no model loaded"})
            return
        llm = self.llm
        self.current_id = rid
        self.cancel.clear()
        if rid in self.cancelled_ids:
            self.cancel.set()
        sampling = dict(cmd.get("sampling") or {})
        raw = bool(sampling.pop("raw_prompt", False))  # /v1/completions: the text as written, no chat template
        fit = bool(sampling.pop("fit_context", False))  # the cockpit's chat: drop the oldest turns to fit
        bias = sampling.pop("logit_bias", None)
        if bias:
            n_vocab = llm.n_vocab()
            outside = [t for t in bias if not 0 <= int(t) < n_vocab]
            if outside:  # llama-cpp-python would index past the logits
                emit({"ev": P.EV_ERROR, "id": rid,
                      "message": f"logit_bias: token id {outside[0]} is not in this model's vocabulary (0..{n_vocab - 1})"})
                return
            sampling["logit_bias"] = {int(t): float(b) for t, b in bias.items()}
        fmt = sampling.pop("response_format", None)
        if fmt is not None:
            try:
                sampling["grammar"] = response_grammar(fmt)
            except Exception as exc:  # noqa: BLE001 - a schema the converter cannot take: the request's fault
                emit({"ev": P.EV_ERROR, "id": rid, "message": f"response_format: {exc}"})
                return
        first_token_at: list[float] = []
        n_sampled = 0
        last_emit = [time.perf_counter()]  # when the parent last heard of this request's progress

        def on_token(_ids: object, _logits: object) -> bool:
            nonlocal n_sampled
            if self.stall.is_set():
                threading.Event().wait()  # the injected stall: no token ever again, cancel ignored
            n_sampled += 1
            now = time.perf_counter()
            if not first_token_at:
                first_token_at.append(now)
            if now - last_emit[0] >= P.PROGRESS_EVERY_S:
                # the stream may hold text back (partial UTF-8, a possible stop string): tell the
                # parent that tokens still come, so its watchdog does not mistake it for a hang
                last_emit[0] = now
                emit({"ev": P.EV_GEN_PROGRESS, "id": rid, "n": n_sampled})
            if self.slow_ms:
                time.sleep(self.slow_ms / 1000)
            return self.cancel.is_set()

        import llama_cpp

        C.llama_perf_context_reset(llm.ctx)
        t0 = time.perf_counter()
        finish = None
        tokens: list[int] = []
        dropped = 0
        try:
            if raw:  # as llama-server: the model's special tokens (its BOS), special tokens in the text parsed
                tokens, stop = llm.tokenize(cmd["messages"][0]["content"].encode("utf-8"), add_bos=True, special=True), []
            else:
                tokens, stop = self.format_prompt(cmd["messages"])
            if fit and not raw:
                tokens, stop, dropped = self.fit_context(cmd["messages"], tokens, stop, sampling.get("max_tokens"))
            emit({"ev": P.EV_PREFILL, "id": rid, "prompt_tokens": len(tokens)})
            stream = llm.create_completion(
                prompt=tokens,
                stream=True,
                stop=stop,
                stopping_criteria=llama_cpp.StoppingCriteriaList([on_token]),
                **sampling,
            )
            pending: list[str] = []
            last_flush = 0.0
            for chunk in stream:
                choice = chunk["choices"][0]
                text = choice.get("text")
                if text:
                    # Coalesce pieces that come faster than anyone can read them: every wakeup
                    # of the parent steals a core from llama.cpp's threads on a small box.
                    pending.append(text)
                    now = time.perf_counter()
                    if now - last_flush >= FLUSH_INTERVAL_S:
                        emit({"ev": P.EV_TOKEN, "id": rid, "text": "".join(pending), "n": n_sampled})
                        pending.clear()
                        last_flush = last_emit[0] = now
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            if pending:
                emit({"ev": P.EV_TOKEN, "id": rid, "text": "".join(pending), "n": n_sampled})
        except ValueError as exc:  # e.g. the prompt does not fit the context window
            emit({"ev": P.EV_ERROR, "id": rid, "message": str(exc)})
            return
        t_end = time.perf_counter()
        self.cancelled_ids.discard(rid)
        perf = C.llama_perf_context(llm.ctx)
        cancelled = self.cancel.is_set()
        ttft_ms = (first_token_at[0] - t0) * 1000 if first_token_at else None
        metrics = {
            "prompt_tokens": len(tokens),
            "prompt_eval_tokens": int(perf.n_p_eval),  # the rest came from the prefix cache
            "gen_tokens": int(perf.n_eval),
            "sampled_tokens": n_sampled,
            "prompt_ms": float(perf.t_p_eval_ms),
            "gen_ms": float(perf.t_eval_ms),
            "prompt_tps": _rate(perf.n_p_eval, perf.t_p_eval_ms),
            "gen_tps": _rate(perf.n_eval, perf.t_eval_ms),
            "ttft_ms": ttft_ms,
            "wall_ms": (t_end - t0) * 1000,
            "ctx_used": int(llm.n_tokens),
            "n_ctx": int(C.llama_n_ctx(llm.ctx)),
        }
        if dropped:
            metrics["dropped_messages"] = dropped
        emit(
            {
                "ev": P.EV_DONE,
                "id": rid,
                "status": "cancelled" if cancelled else "done",
                "finish_reason": "cancelled" if cancelled else (finish or "stop"),
                "metrics": metrics,
            }
        )

    # ---- bench: the tuner's trial, llama-bench style -------------------------------
    def bench(self, cmd: JsonDict) -> None:
        """Warm up, then per rep: clear the KV cache, fill ``depth`` tokens of context (untimed),
        process ``n_prompt`` tokens in n_batch chunks, generate ``n_gen`` tokens one decode at a
        time; every phase ends in llama_synchronize so the clock sees the work, not its queueing.
        Random tokens, no sampling (as llama-bench). Generation runs at depth + n_prompt."""
        import random
        import resource

        import llama_cpp
        import llama_cpp.llama_cpp as C

        rid = cmd.get("id")
        if self.llm is None:
            emit({"ev": P.EV_ERROR, "id": rid, "message": "no model loaded"})
            return
        n_prompt = max(0, int(cmd.get("n_prompt", 512)))
        n_gen = max(0, int(cmd.get("n_gen", 128)))
        depth = max(0, int(cmd.get("depth", 0)))
        reps = max(1, int(cmd.get("reps", 3)))
        warmup = bool(cmd.get("warmup", True))
        llm = self.llm
        ctx = llm.ctx
        n_ctx = int(C.llama_n_ctx(ctx))
        if depth + n_prompt + n_gen > n_ctx:
            emit({"ev": P.EV_ERROR, "id": rid, "message": f"bench needs {depth + n_prompt + n_gen} tokens of "
                  f"context (depth {depth} + prompt {n_prompt} + gen {n_gen}); the context holds {n_ctx}"})
            return
        self.current_id = rid
        self.cancel.clear()
        if rid in self.cancelled_ids:
            self.cancel.set()
        n_vocab = int(C.llama_vocab_n_tokens(C.llama_model_get_vocab(llm.model)))
        n_batch = int(C.llama_n_batch(ctx))
        mem = C.llama_get_memory(ctx)
        rng = random.Random(int(cmd.get("seed", 1234)))
        vram = _VramPeak(os.getpid()) if C.llama_supports_gpu_offload() and self.params.get("n_gpu_layers") else None

        def tokens(n: int) -> list[int]:
            return [rng.randrange(n_vocab) for _ in range(n)]

        def decode(toks: list[int]) -> None:
            for i in range(0, len(toks), n_batch):
                chunk = toks[i:i + n_batch]
                arr = (C.llama_token * len(chunk))(*chunk)
                rc = C.llama_decode(ctx, C.llama_batch_get_one(arr, len(chunk)))
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc}")
            C.llama_synchronize(ctx)

        def clear() -> None:
            C.llama_memory_clear(mem, True)

        rows: list[JsonDict] = []
        cancelled = False
        try:
            if warmup:
                clear()
                if n_prompt:
                    decode(tokens(min(n_prompt, n_batch)))
                if n_gen:
                    decode(tokens(1))
                if vram:
                    vram.sample()
            for rep in range(reps):
                if self.cancel.is_set():
                    cancelled = True
                    break
                clear()
                if depth:
                    decode(tokens(depth))
                C.llama_perf_context_reset(ctx)
                t0 = time.perf_counter()
                if n_prompt:
                    decode(tokens(n_prompt))
                t1 = time.perf_counter()
                if vram:
                    vram.sample()
                t_first = None
                for _ in range(n_gen):
                    if self.cancel.is_set():
                        cancelled = True
                        break
                    decode(tokens(1))
                    if t_first is None:
                        t_first = time.perf_counter()
                t2 = time.perf_counter()
                if cancelled:
                    break
                if vram:
                    vram.sample()
                perf = C.llama_perf_context(ctx)
                pp_ms, tg_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
                rows.append({
                    "rep": rep,
                    "pp_tok_s": _rate(n_prompt, pp_ms),
                    "tg_tok_s": _rate(n_gen, tg_ms),
                    "ttft_ms": (t_first - t0) * 1000 if t_first is not None else None,
                    "pp_ms": pp_ms,
                    "tg_ms": tg_ms,
                    # llama.cpp's own counters, for comparison with the wall clock above
                    "llama_pp_tok_s": _rate(int(perf.n_p_eval), float(perf.t_p_eval_ms)),
                    "llama_tg_tok_s": _rate(int(perf.n_eval), float(perf.t_eval_ms)),
                })
        finally:
            # the high-level Llama keeps its own token history: make it agree with the empty cache
            clear()
            llm.reset()
            self.cancelled_ids.discard(rid)
        peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the child's peak, load included
        result = {
            "n_prompt": n_prompt, "n_gen": n_gen, "depth": depth, "reps": len(rows), "warmup": warmup,
            "rows": rows,
            "pp_tok_s": _mean([r["pp_tok_s"] for r in rows]),
            "tg_tok_s": _mean([r["tg_tok_s"] for r in rows]),
            "ttft_ms": _mean([r["ttft_ms"] for r in rows]),
            "peak_rss_mb": peak_rss_kb / 1024.0,
            "peak_vram_mb": vram.peak / (1024 * 1024) if vram and vram.peak is not None else None,
            "load_ms": getattr(self, "load_ms", None),
            "n_ctx": n_ctx,
            "n_batch": n_batch,
            "n_ubatch": int(C.llama_n_ubatch(ctx)),
            "n_threads": int(C.llama_n_threads(ctx)),
            "n_threads_batch": int(C.llama_n_threads_batch(ctx)),
            "llama_cpp_version": getattr(llama_cpp, "__version__", ""),
            "system_info": C.llama_print_system_info().decode("utf-8", "replace").strip(),
        }
        emit({"ev": P.EV_BENCH, "id": rid, "status": "cancelled" if cancelled else "done", "result": result})

    # ---- faults, for tests and demos (llmos-tui inject) --------------------------
    def fault(self, cmd: JsonDict) -> None:
        kind = cmd.get("kind")
        if kind == "abort":
            log("GGML_ASSERT(injected) failed: fault injected by llmos-tui")
            os.abort()
        elif kind == "oom":
            for line in P.OOM_LOG_LINES:
                log(line)
            os.abort()
        elif kind == "exit":
            os._exit(int(cmd.get("code", 3)))
        elif kind == "slow":
            self.slow_ms = float(cmd.get("ms", 50))
            log(f"fault: slow generation, {self.slow_ms:.0f} ms per token")
        elif kind == "hang":
            log("fault: hanging the command loop")
            threading.Event().wait()
        elif kind == "stall":
            log("fault: stalling decode (no token from now on; the process stays up)")
            self.stall.set()
        else:
            emit({"ev": P.EV_ERROR, "message": f"unknown fault {kind!r}"})


def expert_offload_refusal(model_path: str, n_cpu_moe: int) -> str | None:
    """Why ``n_cpu_moe`` cannot apply to this model (from its header), or None: a dense model has
    no experts to move, and there are no more expert blocks than the model has."""
    if n_cpu_moe <= 0:
        return None
    from llmos_tui.engine.gguf_info import read_model_info

    info = read_model_info(model_path)
    if not info.is_moe:
        return f"n_cpu_moe={n_cpu_moe}: {info.name} is not a mixture-of-experts model (no expert tensors)"
    if n_cpu_moe > int(info.n_layer or 0):
        return f"n_cpu_moe={n_cpu_moe} exceeds the model's {info.n_layer} layers"
    return None


def _rate(n: int, ms: float) -> float | None:
    return (n * 1000.0 / ms) if n and ms > 0 else None


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


class _VramPeak:
    """This process's GPU memory from NVML, sampled between bench phases (None without NVML)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak: int | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no NVML: no VRAM figure, never a failed bench
            self._nvml = None
            self._handles = []
        self.sample()

    def sample(self) -> None:
        if self._nvml is None:
            return
        used = 0
        try:
            for handle in self._handles:
                for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == self.pid and proc.usedGpuMemory:
                        used += int(proc.usedGpuMemory)
        except Exception:  # noqa: BLE001
            return
        self.peak = max(self.peak or 0, used)


def _c_string(fn: Callable[..., object], model: object) -> str:
    import ctypes

    buf = ctypes.create_string_buffer(256)
    fn(model, buf, ctypes.sizeof(buf))
    return buf.value.decode("utf-8", "replace")


def main() -> None:
    global _out_fd
    _out_fd = os.dup(1)
    os.dup2(2, 1)  # whatever writes to stdout from here on lands in the log, not the protocol
    sys.stdout = sys.stderr
    Worker().run()


if __name__ == "__main__":
    main()
