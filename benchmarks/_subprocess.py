"""Fresh-process measurement helpers for the benchmarks.

Memory high-water marks are per process, so each measured configuration runs in its own Python
process: the parent launches a child with the environment it needs (``XLA_FLAGS`` must be set before
JAX is imported), the child prints one JSON line as its last line of output, and the parent parses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(
    script: str, payload: dict[str, Any], *, env: dict[str, str] | None = None, timeout_s: float
) -> dict[str, Any]:
  """Runs ``python script --child JSON`` in a fresh process and returns its last-line JSON.

  Failures (non-zero exit, killed by the OOM killer, timeout, unparsable output) come back as
  ``{"ok": False, "error": ...}`` so the caller can record them and stop scaling that method.
  """
  child_env = dict(os.environ)
  child_env.update(env or {})
  child_env["PYTHONPATH"] = REPO_ROOT + os.pathsep + child_env.get("PYTHONPATH", "")
  cmd = [sys.executable, script, "--child", json.dumps(payload)]
  try:
    proc = subprocess.run(
        cmd, env=child_env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
  except subprocess.TimeoutExpired:
    return {"ok": False, "error": f"timeout after {timeout_s:.0f} s"}
  lines = [l for l in proc.stdout.strip().splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"ok": False, "error": f"exit code {proc.returncode}: " + " | ".join(tail)}
  return json.loads(lines[-1])


def jaxcl_train(config: str, flags: Sequence[str], workdir: str, *,
                timeout_s: float | None = None) -> dict[str, Any]:
  """``python -m jaxcl train`` of ``config`` in a fresh process, from the repository root, into an
  emptied ``workdir`` (a leftover checkpoint would resume instead of training).

  Returns ``{"ok": True, "results": <its results.json>, ...}`` or ``{"ok": False, "error": <the
  last lines of its output>, ...}``, both with ``wall_s`` and ``command``.
  """
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, "-m", "jaxcl", "train", "--config", config, "--workdir", workdir, *flags]
  env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = {"command": " ".join(["python", *cmd[1:]])}
  started = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return {**out, "ok": False, "error": f"jaxcl train: timeout after {timeout_s:.0f} s",
            "wall_s": timeout_s}
  out["wall_s"] = round(time.perf_counter() - started, 1)
  path = os.path.join(workdir, "results.json")
  if proc.returncode or not os.path.exists(path):
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {**out, "ok": False, "error": f"jaxcl train exit code {proc.returncode}: " + " | ".join(tail)}
  with open(path) as f:
    return {**out, "ok": True, "results": json.load(f)}


def _status_kib(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def rss_bytes() -> int:
  """Current resident memory of this process (VmRSS), or 0 where /proc is unavailable."""
  kib = _status_kib("VmRSS")
  return 1024 * kib if kib is not None else 0


def peak_rss_bytes() -> int:
  """High-water mark of resident memory (VmHWM; falls back to ru_maxrss)."""
  kib = _status_kib("VmHWM")
  if kib is None:
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return 1024 * kib


def reset_peak_rss() -> bool:
  """Resets VmHWM to the current RSS (Linux >= 4.0); returns whether it worked."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False
