"""The ``jaxcl`` command (also ``python -m jaxcl``).

  jaxcl train --config configs/simclr_digits.py --workdir runs/simclr_digits [--config.steps=500]
  jaxcl eval --workdir runs/simclr_digits [--config configs/simclr_digits.py] [--step N]
  jaxcl prepare-data cifar10 [--manual_dir ~/Downloads] [--data_dir D]
  jaxcl prepare-data --from_pairs pairs.jsonl [--from_beir DIR] --name NAME   (text retrieval)
  jaxcl prepare-data --from_captions captions.jsonl --name NAME [--image_size 64]   (CLIP captions)
  jaxcl mine --workdir runs/retrieval --name stdlib_code_mined [--num_negatives 4 --margin 0.95]
  jaxcl mine --by bm25 --config configs/retrieval_stdlib_code.py --name stdlib_code_bm25
  jaxcl mine --config configs/finetune_minilm_stdlib_code.py --config.model.pretrained=DIR --name N
  jaxcl embed --workdir runs/retrieval [--input corpus.jsonl] [--index DIR]
  jaxcl search --workdir runs/retrieval "remove a directory tree" [--k 10] [--query_file F]
  jaxcl search --workdir runs/simclr_digits --image digit.png          (an image run's neighbours)
  jaxcl export --workdir runs/minilm --out DIR     (a fine-tuned BERT as a sentence-transformers folder)
  jaxcl show-views --config configs/simclr_digits.py --out views.png
  jaxcl config --config configs/simclr_digits.py [--config.steps=500]   (every field, explained)
  jaxcl plan --config configs/simclr_imagenet.py --devices 256 --memory_gb 16 [--modes all]
  jaxcl sweep --config configs/simclr_digits.py --grid method.loss=nt_xent,dcl --grid
      method.temperature=0.1,0.2 --seeds 3 --workdir runs/sweep [--select_on validation|test] [--table]
  jaxcl <command> --help          jaxcl --version

Multi-host: add ``--coordinator_address host:port --num_processes N --process_id i`` on every process,
or nothing where the cluster's environment says it (SLURM, Open MPI, GKE TPU jobs), or ``--distributed``
to let JAX detect it (Cloud TPU VM pod slices: ``--worker=all --command="jaxcl train ... --distributed"``).
"""

from __future__ import annotations

import json
import os
import re
import sys

from absl import flags
from ml_collections import config_flags

from jaxcl import extras

COMMANDS = ("train", "eval", "prepare-data", "show-views", "config", "mine", "embed", "search",
            "export", "plan", "sweep")
_MULTI_HOST = ("coordinator_address", "num_processes", "process_id", "distributed")
# The flags each command reads (what `jaxcl <command> --help` lists).
COMMAND_FLAGS = {
    "train": ("config", "workdir", *_MULTI_HOST),
    "eval": ("workdir", "config", "step", *_MULTI_HOST),
    "prepare-data": ("data_dir", "manual_dir", "image_size", "from_folder", "from_pairs", "from_beir",
                     "from_captions", "name", "test_fraction"),
    "show-views": ("config", "out", "num_views", "num_images"),
    "config": ("config",),
    "mine": ("workdir", "name", "by", "num_negatives", "top_k", "skip", "margin", "step", "config"),
    "embed": ("workdir", "input", "index", "overwrite", "step", "config"),
    "search": ("workdir", "k", "query_file", "image", "index", "exact", "step", "config"),
    "export": ("workdir", "out", "overwrite", "step", "config"),
    "plan": ("config", "devices", "memory_gb", "modes", "block_size", "chunks", "max_per_device",
             "plan_json"),
    "sweep": ("config", "workdir", "grid", "seeds", "select_on", "validation_fraction", "baseline",
              "metric", "table"),
}
USAGE = __doc__

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:arg]); override fields with "
    "--config.field=value.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, pictures.")
_STEP = flags.DEFINE_integer("step", None, "eval: checkpoint step (default: the latest).")
_OUT = flags.DEFINE_string("out", None, "show-views: output PNG (default views.png); export: the "
                           "sentence-transformers folder to write.")
_NUM_VIEWS = flags.DEFINE_integer("num_views", 6, "show-views: views per image.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 8, "show-views: images shown.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "prepare-data: TFDS data directory.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "prepare-data: where downloaded archives are.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "prepare-data: stored image side.")
_FROM_FOLDER = flags.DEFINE_string(
    "from_folder", None, "prepare-data: a folder of your images (one sub-folder per class, or flat "
    "for unlabeled) to store as dataset --name (also spelt --from-folder).")
_FROM_PAIRS = flags.DEFINE_string(
    "from_pairs", None, "prepare-data: a .jsonl/.csv/.tsv/.parquet file of text pairs (columns query "
    "or anchor, positive, optional negative(s)) to store as text dataset --name (also --from-pairs).")
_FROM_BEIR = flags.DEFINE_string(
    "from_beir", None, "prepare-data: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) "
    "for evaluation, alone or with --from_pairs as the training pairs (also --from-beir).")
_FROM_CAPTIONS = flags.DEFINE_string(
    "from_captions", None, "prepare-data: a .jsonl/.csv/.tsv file with columns image (a path "
    "relative to the file's folder) and caption, one row per caption, or a folder with the images "
    "and a captions.jsonl, to store as image-caption dataset --name for CLIP/SigLIP (also "
    "--from-captions; images stored at --image_size, default 64).")
_NAME = flags.DEFINE_string("name", None, "prepare-data --from_folder/--from_pairs/--from_beir/"
                            "--from_captions: the new dataset's name.")
_TEST_FRACTION = flags.DEFINE_float(
    "test_fraction", 0.2, "prepare-data --from_folder/--from_captions: share of images held out as "
    "test; --from_pairs alone: share of distinct queries held out as test.")
_NUM_NEGATIVES = flags.DEFINE_integer("num_negatives", 4, "mine: hard negatives kept per query.")
_BY = flags.DEFINE_string("by", "model", "mine: what ranks the corpus: 'model' (the run's towers, "
                          "ANCE) or 'bm25' (DPR's negatives; --config alone, no run needed).")
_TOP_K = flags.DEFINE_integer("top_k", 50, "mine: candidates per query (best non-positive documents).")
_SKIP = flags.DEFINE_integer("skip", 0, "mine: the best surviving candidates passed over.")
_MARGIN = flags.DEFINE_float(
    "margin", 0.95, "mine: drop candidates scoring above margin x the positive's score (false "
    "negatives; NV-Retriever's TopK-PercPos); 0 keeps every candidate.")
_INPUT = flags.DEFINE_string("input", None, "embed: a corpus file (.jsonl/.csv/.tsv/.parquet with id "
                             "and text) to embed instead of the run's dataset corpus.")
_INDEX = flags.DEFINE_string("index", None, "embed / search: the index folder (default: "
                             "<workdir>/index).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "embed / export: replace an existing index / "
                               "folder.")
_K = flags.DEFINE_integer("k", 10, "search: results per query.")
_QUERY_FILE = flags.DEFINE_string("query_file", None, "search: a file of queries, one per line.")
_IMAGE = flags.DEFINE_multi_string("image", [], "search (image runs): an image file to find the "
                                   "nearest neighbours of (repeatable).")
_EXACT = flags.DEFINE_bool("exact", True, "search: exact search (sharded over the devices); "
                           "--noexact uses usearch's HNSW graph (pip install 'jaxcl[ann]').")
_DEVICES = flags.DEFINE_integer("devices", None, "plan: the mesh size to plan for (simulated on CPU).")
_MEMORY_GB = flags.DEFINE_float("memory_gb", None, "plan: memory per device, in GiB (2^30 bytes).")
_MODES = flags.DEFINE_string("modes", "all", "plan: 'all' or a comma list of allgather, ring, "
                             "grad_cache, grad_cache_ring.")
_BLOCK_SIZE = flags.DEFINE_integer("block_size", None, "plan: the ring loss's tile rows (default: "
                                   "the config's method.loss_block_size, else 1024).")
_CHUNKS = flags.DEFINE_integer("chunks", 4, "plan: gradient caching's chunks per device batch.")
_MAX_PER_DEVICE = flags.DEFINE_integer("max_per_device", 65536, "plan: the top of the batch ladder, "
                                       "in rows per device.")
_PLAN_JSON = flags.DEFINE_string("plan_json", None, "plan: also write the plan (every compiled "
                                 "step's memory) to this JSON file.")
_GRID = flags.DEFINE_multi_string("grid", [], "sweep: field=value1,value2 (repeatable): the config "
                                  "overrides whose every combination is a row.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "sweep: seeds per grid point (0 .. N-1).")
_SELECT_ON = flags.DEFINE_enum("select_on", "validation", ["validation", "test"],
                               "sweep: score a split held out of train (tuning) or the test split "
                               "(the final table); also --select-on.")
_VALIDATION_FRACTION = flags.DEFINE_float("validation_fraction", 0.2, "sweep --select_on validation: "
                                          "the share of the train split held out and scored.")
_BASELINE = flags.DEFINE_string("baseline", None, "sweep: the row the others are compared with, as "
                                "field=value[,field=value] (default: the first grid point).")
_METRIC = flags.DEFINE_string("metric", None, "sweep: the metric of the paired comparison (default: "
                              "linear, else knn, else the first the results have).")
_TABLE = flags.DEFINE_bool("table", False, "sweep: print the table of the finished cells and exit.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-host: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "multi-host: start jax.distributed and let JAX detect the cluster (Cloud "
    "TPU pod slices; SLURM, Open MPI and GKE TPU jobs are detected without this flag).")


def _usage_error(message: str) -> None:
  print(f"jaxcl: {message}\n\n{USAGE}", file=sys.stderr)
  sys.exit(2)


def _version() -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version("jaxcl")
  except metadata.PackageNotFoundError:
    return "unknown (not installed)"


def _command_help(command: str) -> str:
  lines = [f"jaxcl {command}: flags", ""]
  for name in COMMAND_FLAGS[command]:
    flag = FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default})"
    lines.append(f"  --{name}: {flag.help}{default}")
  if "config" in COMMAND_FLAGS[command]:
    lines.append("  --config.<field>=<value>: override one config field (`jaxcl config --config C` "
                 "lists them all)")
  return "\n".join(lines)


def _check_workdir(workdir: str) -> None:
  """A workdir that is a file, or under a folder jaxcl cannot write, fails here in one line."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    _usage_error(f"--workdir={workdir!r} is a file; give a directory (it is created if missing).")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    _usage_error(f"--workdir={workdir!r}: cannot write under {parent!r}; choose a directory you "
                 "can write to.")


def _start_distributed() -> None:
  from jaxcl.train import mesh  # pylint: disable=g-import-not-at-top
  mesh.initialize_distributed(coordinator_address=_COORDINATOR.value,
                                  num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                                  auto=_DISTRIBUTED.value)


def _train() -> None:
  if _CONFIG.value is None or not _WORKDIR.value:
    _usage_error("train needs --config and --workdir.")
  _check_workdir(_WORKDIR.value)
  _start_distributed()
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  from jaxcl.train import lock, preemption  # pylint: disable=g-import-not-at-top
  try:
    experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except lock.WorkdirLocked as err:
    if os.environ.get("JAXCL_TRACEBACK"):
      raise
    print(f"jaxcl train: {err}", file=sys.stderr)
    sys.exit(lock.LOCKED_EXIT_CODE)
  except preemption.Preempted as err:
    if os.environ.get("JAXCL_TRACEBACK"):
      raise
    # SIGTERM (exit 75: a scheduler may retry) or Ctrl-C (130) during training: the step in flight
    # finished and its checkpoint is committed.
    print(f"jaxcl train: {err}", file=sys.stderr)
    sys.exit(err.exit_code)


def _config_from_workdir(workdir: str):
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    _usage_error(f"{path} not found: pass --config (the config the run was trained with).")
  with open(path) as f:
    # JSON has no tuples; every sequence in jaxcl's configs is one.
    return ml_collections.ConfigDict(json.load(f, object_hook=_tuples))


def _tuples(obj: dict) -> dict:
  return {k: _as_tuple(v) for k, v in obj.items()}


def _as_tuple(value):
  return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def _eval() -> None:
  if not _WORKDIR.value:
    _usage_error("eval needs --workdir.")
  _start_distributed()
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value if _CONFIG.value is not None else _config_from_workdir(_WORKDIR.value)
  experiment.evaluate_checkpoint(config, _WORKDIR.value, step=_STEP.value)


def _run_config(command: str):
  """The config of the run in --workdir: --config if given, else the run's config.json."""
  if not _WORKDIR.value:
    _usage_error(f"{command} needs --workdir (a finished training run).")
  return _CONFIG.value if _CONFIG.value is not None else _config_from_workdir(_WORKDIR.value)


def _mine() -> None:
  if not _NAME.value:
    _usage_error("mine needs --name NAME: the new dataset the mined negatives are stored in.")
  if _CONFIG.value is not None and not _WORKDIR.value:
    config = _CONFIG.value  # BM25 or a pretrained model (model.pretrained) needs no run
  else:
    config = _run_config("mine")
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  from jaxcl.serve import commands  # pylint: disable=g-import-not-at-top
  encoders = (experiment.restore_encoders(config, _WORKDIR.value or None, step=_STEP.value,
                                          text_for="jaxcl mine")
              if _BY.value == "model" else None)
  out = commands.mine(config.data, encoders, name=_NAME.value, num_negatives=_NUM_NEGATIVES.value,
                      top_k=_TOP_K.value, skip=_SKIP.value, margin=_MARGIN.value or None,
                      by=_BY.value)
  print(f"{_NAME.value}: {out['negatives_per_query']:.2f} negatives for each of {out['queries']} "
        f"training queries (dropped {out['dropped_positives']} known positives and "
        f"{out['dropped_margin']} candidates above the margin); prepared in {out['path']}.\n"
        f"Train with them: --config.data.name={_NAME.value} "
        f"--config.method.num_negatives={_NUM_NEGATIVES.value}")


def _embed() -> None:
  config = _run_config("embed")
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  from jaxcl.serve import commands  # pylint: disable=g-import-not-at-top
  encoders = experiment.restore_encoders(config, _WORKDIR.value, step=_STEP.value)
  found = commands.embed(encoders, config.data, out=_INDEX.value, input_path=_INPUT.value,
                         overwrite=_OVERWRITE.value)
  print(f"{found.count} embeddings ({found.dim}-d) written to {found.path}")


def _export() -> None:
  config = _run_config("export")
  if not _OUT.value:
    _usage_error("export needs --out DIR: the sentence-transformers folder to write.")
  from jaxcl.experiment import export  # pylint: disable=g-import-not-at-top
  path = export.export_run(config, _WORKDIR.value, _OUT.value, step=_STEP.value,
                           overwrite=_OVERWRITE.value)
  print(f"wrote {path}: load it with SentenceTransformer({path!r}), "
        f"transformers.AutoModel.from_pretrained({path!r}), or jaxcl's "
        f"--config.model.pretrained={path}")


def _read_images(paths: list[str], config) -> "np.ndarray":
  """The image files as the run's uint8 [B, S, S, C] (decoded, resized and centre-cropped)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  from jaxcl.data import images, transforms  # pylint: disable=g-import-not-at-top
  size, _, channels = data.info(config.data).image_shape  # what the run's images are
  out = []
  for path in paths:
    with open(path, "rb") as f:
      image = images.decode_image(f.read(), source=path)
    image = image[..., None] if image.ndim == 2 else image[..., :3]  # grey gets a channel; no alpha
    if image.shape[-1] != channels:  # grey <-> RGB, to what the run trained on
      image = (np.repeat(image, channels, -1) if channels == 3 else
               image.mean(-1, keepdims=True).round().astype(np.uint8))
    out.append(transforms.resize_and_crop(image, size, config.data.resize_method))
  return np.stack(out)


def _search(queries: list[str]) -> None:
  config = _run_config("search")
  if _QUERY_FILE.value:
    with open(_QUERY_FILE.value, encoding="utf-8") as f:
      queries = queries + [line.strip() for line in f if line.strip()]
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  from jaxcl.serve import commands  # pylint: disable=g-import-not-at-top
  images = _read_images(_IMAGE.value, config) if _IMAGE.value else None
  found = commands.load_search_index(_WORKDIR.value, _INDEX.value)  # read once: search and texts
  encoders = experiment.restore_encoders(config, _WORKDIR.value, step=_STEP.value)
  results = commands.search(encoders, found, queries, images=images, k=_K.value, exact=_EXACT.value)
  texts = commands.document_texts(config.data, found, [i for hits in results for i, _ in hits])
  for query, hits in zip(queries or _IMAGE.value, results):
    print(f"\n{query}")
    for rank, (doc_id, score) in enumerate(hits, 1):
      snippet = " ".join(texts.get(doc_id, "").split())[:100]
      print(f"  {rank:>2}. {score:.3f}  {doc_id}" + (f"  {snippet}" if snippet else ""))


def _prepare_text(data) -> None:
  if not _NAME.value:
    _usage_error("prepare-data --from_pairs/--from_beir needs --name NAME (and no dataset name).")
  data_dir = _DATA_DIR.value or data.default_data_dir()
  path = data.prepare_text(_NAME.value, data_dir=data_dir, pairs=_FROM_PAIRS.value,
                           beir=_FROM_BEIR.value, test_fraction=_TEST_FRACTION.value)
  _say_prepared(data, path, data_dir, data.text.info)


def _say_prepared(data, path: str, data_dir: str, info) -> None:
  """One line on a user's prepared dataset (``info`` of its config) and the flags that read it."""
  cfg = data.default_config(_NAME.value)
  cfg.data_dir = data_dir
  print(f"{_NAME.value}: {info(cfg)}\nprepared in {path}; use it with "
        f"--config.data.name={_NAME.value}" + ("" if data_dir == data.default_data_dir() else
                                                f" --config.data.data_dir={data_dir}"))


def _prepare_captions(data) -> None:
  if not _NAME.value:
    _usage_error("prepare-data --from_captions FILE needs --name NAME (and no dataset name).")
  from jaxcl.data import captions, sources  # pylint: disable=g-import-not-at-top
  data_dir = _DATA_DIR.value or data.default_data_dir()
  path = sources.prepare_captions(_FROM_CAPTIONS.value, _NAME.value, data_dir=data_dir,
                                  image_size=_IMAGE_SIZE.value, test_fraction=_TEST_FRACTION.value)
  _say_prepared(data, path, data_dir, captions.info)


def _prepare_data(names: list[str]) -> None:
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  if _FROM_CAPTIONS.value:
    if names or _FROM_FOLDER.value or _FROM_PAIRS.value or _FROM_BEIR.value:
      _usage_error("prepare-data --from_captions takes no dataset name and no other --from_* flag.")
    _prepare_captions(data)
    return
  if _FROM_PAIRS.value or _FROM_BEIR.value:
    if names or _FROM_FOLDER.value:
      _usage_error("prepare-data --from_pairs/--from_beir takes no dataset name and no --from_folder.")
    _prepare_text(data)
    return
  if _FROM_FOLDER.value:
    if names or not _NAME.value:
      _usage_error("prepare-data --from_folder DIR needs --name NAME (and no other dataset name).")
    data_dir = _DATA_DIR.value or data.default_data_dir()
    path = data.prepare_folder(_FROM_FOLDER.value, _NAME.value, data_dir=data_dir,
                               image_size=_IMAGE_SIZE.value, test_fraction=_TEST_FRACTION.value)
    _say_prepared(data, path, data_dir, data.info)
    return
  if not names:
    _usage_error("prepare-data needs a dataset name, e.g. `jaxcl prepare-data cifar10`, or "
                 "--from_folder DIR --name NAME, --from_pairs FILE --name NAME, or "
                 "--from_captions FILE --name NAME.")
  for name in names:
    cfg = data.default_config(name)
    if _DATA_DIR.value:
      cfg.data_dir = _DATA_DIR.value
    if _MANUAL_DIR.value:
      cfg.manual_dir = _MANUAL_DIR.value
    if _IMAGE_SIZE.value:
      cfg.image_size = _IMAGE_SIZE.value
    data.prepare(cfg, progress=True)
    print(f"{name}: {data.text.info(cfg) if data.text.is_text_dataset(cfg) else data.info(cfg)}")


def _print_config() -> None:
  if _CONFIG.value is None:
    _usage_error("config needs --config, e.g. `jaxcl config --config configs/simclr_digits.py`.")
  print(_describe_config())


def _describe_config() -> str:
  """The config with every field explained, the config file's own comments first."""
  from jaxcl.experiment import describe  # pylint: disable=g-import-not-at-top
  path = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
  source = None
  if os.path.isfile(path):
    with open(path) as f:
      source = f.read()
  return describe.describe(_CONFIG.value, config_source=source)


def _show_views() -> None:
  if _CONFIG.value is None:
    _usage_error("show-views needs --config.")
  from jaxcl import augment, data  # pylint: disable=g-import-not-at-top
  from jaxcl.augment import preview  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  images, _ = data.load_arrays(config.data, config.data.eval_split)
  path = preview.save_view_grid(augment.make_recipe(config.augment), images[:_NUM_IMAGES.value],
                                _OUT.value or "views.png", num_views=_NUM_VIEWS.value,
                                seed=config.seed)
  print(path)


_PLAN_CHILD = "JAXCL_PLAN_DEVICES"  # set in the re-executed plan process: the devices it simulates


def _plan(argv: list[str]) -> None:
  if _CONFIG.value is None:
    _usage_error("plan needs --config, --devices and --memory_gb.")
  if not _DEVICES.value or _DEVICES.value < 1:
    _usage_error(f"--devices={_DEVICES.value}: plan needs the device count to plan for (>= 1).")
  if not _MEMORY_GB.value or _MEMORY_GB.value <= 0:
    _usage_error(f"--memory_gb={_MEMORY_GB.value}: plan needs the memory per device in GiB (> 0).")
  from jaxcl.experiment import plan  # pylint: disable=g-import-not-at-top
  modes = None if _MODES.value == "all" else tuple(m.strip() for m in _MODES.value.split(","))
  bad = [m for m in modes or () if m not in plan.MODES]
  if bad:
    _usage_error(f"--modes={_MODES.value!r}: unknown {bad}; use 'all' or a comma list of "
                 f"{', '.join(plan.MODES)}.")
  if _CHUNKS.value < 1 or (_BLOCK_SIZE.value is not None and _BLOCK_SIZE.value < 1):
    _usage_error("--chunks and --block_size must be >= 1.")
  if os.environ.get(_PLAN_CHILD) != str(_DEVICES.value):
    # XLA reads the simulated device count once, when JAX starts: plan in a fresh process that has it.
    flags_ = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    env = dict(os.environ, JAX_PLATFORMS="cpu", **{_PLAN_CHILD: str(_DEVICES.value)},
               XLA_FLAGS=f"{flags_} --xla_force_host_platform_device_count={_DEVICES.value}".strip())
    import subprocess  # pylint: disable=g-import-not-at-top
    sys.exit(subprocess.run([sys.executable, "-m", "jaxcl", *argv[1:]], env=env, check=False).returncode)
  result = plan.plan(_CONFIG.value, devices=_DEVICES.value,
                     memory_bytes=int(_MEMORY_GB.value * 2**30), modes=modes,
                     block_size=_BLOCK_SIZE.value, chunks=_CHUNKS.value,
                     max_rows_per_device=_MAX_PER_DEVICE.value,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
  if _PLAN_JSON.value:
    with open(_PLAN_JSON.value, "w") as f:
      json.dump(result, f, indent=2)
  print(plan.format_plan(result))


def _sweep(argv: list[str]) -> None:
  if not _WORKDIR.value:
    _usage_error("sweep needs --workdir (each cell trains in a folder under it).")
  from jaxcl.experiment import sweep  # pylint: disable=g-import-not-at-top
  if _TABLE.value:
    if not os.path.exists(os.path.join(_WORKDIR.value, "sweep_spec.json")):
      _usage_error(f"--workdir={_WORKDIR.value!r} holds no sweep (no sweep_spec.json).")
    record = sweep.write_outputs(_WORKDIR.value, metric=_METRIC.value)
    done = sum(1 for c in record["cells"].values() if c["status"] == "finished")
    print(f"{done} of {len(record['cells'])} cells finished ({_WORKDIR.value}/sweep.html)\n")
    print(record["table"])
    return
  if _CONFIG.value is None or not _GRID.value:
    _usage_error("sweep needs --config, at least one --grid field=v1,v2 and --workdir.")
  _check_workdir(_WORKDIR.value)
  grid = sweep.parse_grid(_GRID.value, _CONFIG.value)
  config_arg = config_flags.get_config_filename(FLAGS["config"])
  overrides, rest = [], argv[2:]
  for i, arg in enumerate(rest):  # --config.field=value and --config.field value
    if arg.startswith("--config."):
      overrides.append(arg if "=" in arg or i + 1 == len(rest) else f"{arg}={rest[i + 1]}")
  record = sweep.run_sweep(config_arg, _CONFIG.value, grid, seeds=_SEEDS.value,
                           workdir=_WORKDIR.value, select_on=_SELECT_ON.value,
                           validation_fraction=_VALIDATION_FRACTION.value,
                           baseline=_BASELINE.value, user_overrides=overrides, metric=_METRIC.value)
  print("\n" + record["table"] + f"\n\n{_WORKDIR.value}/sweep.json, sweep.png, sweep.html")


def run(argv: list[str] | None = None) -> None:
  """Entry point of the ``jaxcl`` console script and of ``python -m jaxcl``."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(USAGE)
    return
  if argv[1] == "--version":
    print(f"jaxcl {_version()}")
    return
  command = argv[1]
  if command not in COMMANDS:
    _usage_error(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}.")
  wants_help = any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[2:])
  # The issue-style spellings of some flags (absl names take underscores).
  argv = [re.sub(r"^--(from|test|select|validation)-(folder|fraction|pairs|beir|captions|on)",
                 r"--\1_\2", a) for a in argv]
  for arg, after in zip(argv[2:], argv[3:] + [""]):
    if re.match(r"^--config\.seed=.*,", arg) or (arg == "--config.seed" and "," in after):
      _usage_error(f"{arg}{'' if '=' in arg else ' ' + after}: --config.seed takes one seed. To train over several seeds, run "
                   "`jaxcl sweep --config C --grid field=v1,v2 --seeds 3 --workdir DIR` (a table "
                   "with mean ± std over seeds).")
  argv = [a for a in argv if a not in ("-h", "--help", "-help", "--helpfull")]
  if FLAGS.is_parsed():
    # Called again in one process (tests, notebooks), or after a library parsed flags for itself:
    # start from the defaults so --config registers its --config.* overrides afresh.
    FLAGS.unparse_flags()
  for name in [n for n in FLAGS if n.startswith("config.")]:
    delattr(FLAGS, name)  # the last call's overrides, registered when its config was loaded
  flag_argv = [argv[0]] + argv[2:]
  saved_argv, sys.argv = sys.argv, flag_argv  # config_flags finds --config.* overrides in sys.argv
  try:
    positional = FLAGS(flag_argv)[1:]
  except flags.Error as err:
    _usage_error(str(err))
  except (AttributeError, KeyError) as err:  # config_flags: a --config.field the config lacks
    message = str(err.args[0] if err.args else err).replace("\\n", " ").replace("\\'", "'")
    _usage_error(f"bad --config override: {message}")
  finally:
    sys.argv = saved_argv
  if wants_help:
    print(_command_help(command))
    if command == "train" and _CONFIG.value is not None:
      print("\n" + _describe_config())
    return
  if command not in ("prepare-data", "search") and positional:
    _usage_error(f"unexpected arguments {positional}.")
  try:
    if command == "prepare-data":
      _prepare_data(positional)
    elif command == "search":
      _search(positional)
    elif command == "plan":
      _plan(argv)
    elif command == "sweep":
      _sweep(argv)
    else:
      {"train": _train, "eval": _eval, "show-views": _show_views, "config": _print_config,
       "mine": _mine, "embed": _embed, "export": _export}[command]()
  except KeyboardInterrupt:
    if os.environ.get("JAXCL_TRACEBACK"):
      raise
    kept = ("a half-written preparation is never read" if command == "prepare-data"
            else "complete checkpoints are kept")
    print(f"jaxcl {command}: interrupted (Ctrl-C); {kept}. Run the same command again to "
          f"{'resume' if command == 'train' else 'start over'}.", file=sys.stderr)
    sys.exit(130)
  except extras.MissingExtra as err:
    if os.environ.get("JAXCL_TRACEBACK"):
      raise
    print(f"jaxcl {command}: {err}", file=sys.stderr)  # one line: what needs it, what to install
    sys.exit(1)
  except ModuleNotFoundError as err:
    if os.environ.get("JAXCL_TRACEBACK") or command != "prepare-data":
      raise
    print(f"jaxcl prepare-data: this dataset's TFDS builder needs the Python module {err.name!r}, "
          "which jaxcl does not install: pip install 'jaxcl[tensorflow]' (TensorFlow and what the "
          "catalog builders import), then run the same command again.", file=sys.stderr)
    sys.exit(1)
  except (ValueError, OSError, FloatingPointError) as err:
    # Bad config values, unprepared datasets, missing checkpoints, a full disk and divergence all
    # raise with a message that names the field or file and the fix: show that, not a traceback.
    if os.environ.get("JAXCL_TRACEBACK"):
      raise
    print(f"jaxcl {command}: {type(err).__name__}: {err}\n(set JAXCL_TRACEBACK=1 for the traceback)",
          file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  run()
