"""The flags every benchmark script takes: ``--out``, ``--fresh`` and ``--smoke``.

``--smoke`` runs the script's whole path at tiny sizes (a few steps, small batches and arrays) into
a temporary ``--out`` unless one is given, so tests/test_benchmarks_smoke.py can run every benchmark
and none breaks unseen; its numbers measure nothing. ``--fresh`` forgets what ``--out`` already holds
(resumable scripts skip the cells it has); scripts that always measure everything rewrite ``--out``
anyway and take the flag so that every benchmark has the same interface.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any


def add_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
  """Adds ``--out`` (default ``default_out``), ``--fresh`` and ``--smoke`` to ``parser``."""
  parser.add_argument("--out", default=None,
                      help=f"results file (default {os.path.relpath(default_out)}; with --smoke a "
                           "temporary one)")
  parser.add_argument("--fresh", action="store_true",
                      help="ignore what --out holds and measure every cell again")
  parser.add_argument("--smoke", action="store_true",
                      help="a few steps at tiny sizes into a temporary --out: checks the script "
                           "runs, measures nothing")


def out_path(args: argparse.Namespace, default_out: str) -> str:
  """``--out``, else a fresh temporary path named like ``default_out`` under ``--smoke``, else
  ``default_out``. Sets ``args.out`` to it."""
  if args.out is None:
    args.out = (os.path.join(tempfile.mkdtemp(prefix="jaxcl_bench_smoke_"),
                             os.path.basename(default_out)) if args.smoke else default_out)
  return args.out


def load(path: str, fresh: bool, empty: dict[str, Any]) -> dict[str, Any]:
  """The JSON at ``path``, or ``empty`` when it does not exist or ``fresh``."""
  if fresh or not os.path.exists(path):
    return empty
  with open(path) as f:
    return json.load(f)
