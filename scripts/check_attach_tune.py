"""A tuning study started by an attached face runs in the daemon, and its events reach the face.

    PYTHONPATH=. python scripts/check_attach_tune.py

A bad option is refused before anything runs; a 2-trial study (no verification) starts in the
daemon, the face sees study/trial/done events, and the daemon's engine is ready again after.
Exits 1 when a step does not happen (a manual check: the study takes ~50 s on a loaded 2-core box,
too long for the test suite).
"""
import os, sys, threading, time, tempfile
os.environ["LLMOS_TUI_HOME"] = tempfile.mkdtemp()
from llmos_tui.config import load_config
from llmos_tui.serve.daemon import Daemon
from llmos_tui.serve.settings import ServeSettings
from llmos_tui.serve.attached import AttachedOperator
from llmos_tui.engine.supervisor import EngineState
lines = []
config = load_config(overrides={"n_ctx": 512, "n_threads": 2, "n_threads_batch": 2})
d = Daemon(config, ServeSettings(listen="127.0.0.1:0"), say=lines.append, doctor=False)
t = threading.Thread(target=d.run, daemon=True); t.start()
d.ready.wait(30)
while d.operator.supervisor.state != EngineState.READY: time.sleep(0.1)
op = AttachedOperator(d.control_path, config)
events = []
op.tuner.subscribe(lambda ev: (events.append(ev), print(round(time.time()-t0,1), ev.get("kind"), str(ev)[:150], flush=True)))
t0 = time.time()
op.tuner.start_in_background(trials="x")
op.tuner.start_in_background(trials=2, verify=False, warm_start=False, spec={"n_prompt": 32, "n_gen": 8, "reps": 1})
while time.time() - t0 < 150 and not any(e.get("kind") == "done" and (e.get("report") or {}).get("study_id") for e in events):
    time.sleep(0.5)
kinds = [e.get("kind") for e in events]
ok = (kinds[:2] == ["state", "done"] and "trial" in kinds and "study" in kinds
      and d.operator.supervisor.state == EngineState.READY)
print(f"events {kinds}; engine {d.operator.supervisor.state.value}; {time.time() - t0:.1f} s: "
      + ("met" if ok else "NOT MET"))
op.close(); d.stop("x"); t.join(20)
sys.exit(0 if ok else 1)
