"""How long ``jaxcl search`` takes from the shell on a 56,000-document corpus: each call is a fresh
process (restore the run, embed the queries, search the index, print), timed end to end.

The corpus is the embedded ``stdlib_code`` corpus (4,161 functions) scaled up: every document is
repeated with a numbered comment line until there are ``--docs`` of them, each the positive of one
pair (its docstring's first sentence as the query), prepared with ``jaxcl prepare-data
--from_pairs``. A retriever with ``configs/retrieval_stdlib_code.py``'s towers is trained for a few
steps (the speed of search does not depend on how well it ranks), ``jaxcl embed`` writes its index,
then ``jaxcl search`` of two queries runs ``--calls`` times, each in a fresh process. The first call
pays for compiling the query tower and the search unless a compilation cache already holds them;
the later calls show what a user sees every time after that.

  python benchmarks/search_latency.py [--docs 56000] [--calls 3] [--code DIR] [--label after]
                                      [--root /tmp/jaxcl_search_latency]

``--code DIR`` times another checkout's ``jaxcl`` (e.g. the commit before a change) on the same run
and index; each ``--label`` is kept as its own row of benchmarks/results/search_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results", "search_latency.json")
CONFIG = os.path.join(REPO_ROOT, "configs", "retrieval_stdlib_code.py")
QUERIES = ("remove a directory tree", "Return a copy of a file")


def _jaxcl(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
  """Runs ``python -m jaxcl ARGS`` with ``code`` first on the path; (wall seconds, stdout)."""
  env = dict(os.environ, **(env or {}), PYTHONPATH=code)
  started = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "jaxcl", *args], env=env, cwd=code,
                        capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - started
  if proc.returncode:
    raise SystemExit(f"jaxcl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return seconds, proc.stdout


def _pairs(path: str, docs: int, data_dir: str) -> int:
  """Writes ``docs`` (query, positive) pairs scaled up from stdlib_code's corpus."""
  sys.path.insert(0, REPO_ROOT)
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  cfg = data.default_config("stdlib_code")
  cfg.data_dir = data_dir
  _, texts = data.text.load_corpus(cfg)
  queries = {}
  for split in ("train", "validation", "test"):
    try:
      got = data.text.load_queries(cfg, split)
    except (ValueError, KeyError):
      continue
    for query, relevant in zip(got.queries, got.relevant):
      for row in relevant:
        queries.setdefault(row, query)
  with open(path, "w", encoding="utf-8") as f:
    for i in range(docs):
      row = i % len(texts)
      query = queries.get(row) or texts[row].splitlines()[0][:80]
      f.write(json.dumps({"query": f"{query} ({i // len(texts)})",
                          "positive": f"# copy {i // len(texts)}\n{texts[row]}"}) + "\n")
  return docs


def prepare(root: str, docs: int) -> str:
  """The trained run with its index in ``root`` (made once; reused while ``docs`` matches)."""
  run = os.path.join(root, "run")
  stamp = os.path.join(root, "ready.json")
  if os.path.exists(stamp) and json.load(open(stamp)).get("docs") == docs:
    return run
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  data_dir = os.path.join(root, "tfds")
  pairs = os.path.join(root, "pairs.jsonl")
  _pairs(pairs, docs, data_dir)
  _jaxcl(REPO_ROOT, "prepare-data", "--from_pairs", pairs, "--name", "latency_pairs",
         "--data_dir", data_dir)
  _jaxcl(REPO_ROOT, "train", "--config", CONFIG, "--workdir", run, "--config.steps=4",
         "--config.data.name=latency_pairs", f"--config.data.data_dir={data_dir}",
         "--config.eval.final=False", "--config.eval.knn_every=0", "--config.train.log_every=2",
         "--config.train.checkpoint_every=0")
  _jaxcl(REPO_ROOT, "embed", "--workdir", run)
  with open(stamp, "w") as f:
    json.dump({"docs": docs}, f)
  return run


def phases(run: str) -> dict[str, float]:
  """Seconds of each phase of one search, in this process (this checkout's API only)."""
  started = time.perf_counter()
  out = {}

  def lap(name):
    nonlocal started
    now = time.perf_counter()
    out[name] = round(now - started, 2)
    started = now

  from jaxcl import experiment, main as cli  # pylint: disable=g-import-not-at-top
  from jaxcl.serve import commands  # pylint: disable=g-import-not-at-top
  lap("import jaxcl (jax, flax, orbax, tfds)")
  config = cli._config_from_workdir(run)  # pylint: disable=protected-access
  found = commands.load_search_index(run)
  lap("load the index (memory-mapped)")
  encoders = experiment.restore_encoders(config, run)
  lap("restore the run (config checks, tokenizer, checkpoint)")
  results = commands.search(encoders, found, list(QUERIES), k=5)
  lap("embed the queries and search (compiles)")
  commands.document_texts(config.data, found, [i for hits in results for i, _ in hits])
  lap("read the hits' documents")
  commands.search(encoders, found, ["open a file", "sort a list"], k=5)
  lap("a second search in the same process (2 other queries: the same bucket, no compile)")
  return out


def main() -> None:
  if len(sys.argv) == 3 and sys.argv[1] == "--phases":
    print(json.dumps(phases(sys.argv[2])))
    return
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--docs", type=int, default=56000)
  parser.add_argument("--calls", type=int, default=3)
  parser.add_argument("--code", default=REPO_ROOT, help="the checkout whose jaxcl is timed")
  parser.add_argument("--label", default="this checkout")
  parser.add_argument("--commit", default=None, help="the --code checkout's commit, if not a git tree")
  parser.add_argument("--root", default="/tmp/jaxcl_search_latency")
  args = parser.parse_args()
  run = prepare(args.root, args.docs)
  index = json.load(open(os.path.join(run, "index", "index.json")))
  git = args.commit or subprocess.run(["git", "-C", args.code, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True, check=False).stdout.strip()
  calls = []
  for _ in range(args.calls):
    seconds, out = _jaxcl(args.code, "search", "--workdir", run, "--k", "5", *QUERIES)
    hits = [line for line in out.splitlines() if line.strip()[:2] == "1."]
    assert len(hits) == len(QUERIES), out
    calls.append(round(seconds, 2))
    print(f"{args.label}: jaxcl search of {len(QUERIES)} queries over {index['count']:,} documents: "
          f"{seconds:.1f} s", flush=True)
  phase = None
  if args.code == REPO_ROOT:
    proc = subprocess.run([sys.executable, __file__, "--phases", run], capture_output=True,
                          text=True, check=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    phase = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{args.label}: phases (s): {phase}")
  results = json.load(open(RESULTS)) if os.path.exists(RESULTS) else {}
  results.setdefault("rows", {})[args.label] = {"phases_s": phase,
      "load_average_1min": round(os.getloadavg()[0], 1),  # other jobs on the machine
      "commit": git, "documents": index["count"], "dim": index["dim"], "queries": len(QUERIES),
      "seconds_per_call": calls, "first_call_s": calls[0],
      "later_calls_min_s": min(calls[1:]) if len(calls) > 1 else None}
  results.update({
      "what": "wall seconds of `jaxcl search --workdir RUN --k 5 Q1 Q2`, each call a fresh process",
      "command": "python benchmarks/search_latency.py --docs 56000 --calls 3 [--code DIR --label L]",
      "config": "configs/retrieval_stdlib_code.py (4 training steps), corpus scaled from stdlib_code",
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"})
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")


if __name__ == "__main__":
  main()
