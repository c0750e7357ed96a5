"""Every field of an experiment config with its value and the comment that explains it.

The explanations are the comments the defaults are written with (``c.lr = 0.3  # base learning rate``,
a comment block above an assignment, or a ``name: text`` line of a ``Fields:`` docstring), read from
the source files of the functions that build each part; a config file's own comments override them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable

import ml_collections

PARTS = ("data", "augment", "model", "method", "optim", "train", "eval")
_TOP = {"seed": "the one seed every random number derives from",
        "batch_size": "global batch size (all devices, all hosts)",
        "steps": "optimizer steps"}
_ASSIGN = re.compile(r"^\s*[A-Za-z_]\w*\.([\w.]+)\s*=(.*)$")  # c.eval.knn_k = ...: "eval.knn_k"
_DOC_FIELD = re.compile(r"^\s{2,}(\w+(?:\s*/\s*\w+)*):\s+(\S.*)$")


def _comments(source: str) -> dict[str, str]:
  """``{field: comment}`` from one source file; a field is the assigned path after the variable
  (``c.eval.knn_k = ...`` gives ``eval.knn_k``, ``e.knn_k = ...`` gives ``knn_k``)."""
  out: dict[str, str] = {}
  block: list[str] = []
  lines = source.splitlines()
  fields_indent = None  # inside a docstring's "Fields:" section: the indent of its entries
  entry: list[str] | None = None
  for i, line in enumerate(lines):
    stripped = line.strip()
    indent = len(line) - len(line.lstrip())
    if stripped == "Fields:":
      fields_indent, entry = indent + 2, None
      continue
    if fields_indent is not None:
      doc = _DOC_FIELD.match(line)
      if doc and indent == fields_indent:
        entry = [doc.group(2)]
        for name in doc.group(1).split("/"):
          out.setdefault(name.strip(), entry)
        continue
      if stripped and indent > fields_indent and entry is not None:
        entry.append(stripped)  # the entry goes on
        continue
      fields_indent = entry = None
    if stripped.startswith("#"):
      block.append(stripped.lstrip("# "))
      continue
    match = _ASSIGN.match(line)
    if match:
      field, rest = match.groups()
      inline = rest.split("  #", 1)[1].strip() if "  #" in rest else ""
      # Continuation comments aligned under an inline one.
      j = i + 1
      while inline and j < len(lines) and lines[j].strip().startswith("#") and \
          len(lines[j]) - len(lines[j].lstrip()) > 8:
        inline += " " + lines[j].strip().lstrip("# ")
        j += 1
      text = inline or " ".join(block)
      if text:
        out.setdefault(field, text)
    block = []
  return {k: " ".join(v) if isinstance(v, list) else v for k, v in out.items()}


def _source_comments(objects: Iterable) -> dict[str, str]:
  out: dict[str, str] = {}
  for obj in objects:
    try:
      out.update({k: v for k, v in _comments(inspect.getsource(inspect.getmodule(obj))).items()
                  if k not in out})
    except (OSError, TypeError):
      continue
  return out


def _defaults_sources(config: ml_collections.ConfigDict) -> dict[str, list]:
  from jaxcl import augment, data, methods, models  # pylint: disable=g-import-not-at-top
  from jaxcl.experiment import config as experiment_config  # pylint: disable=g-import-not-at-top
  from jaxcl.train import optim  # pylint: disable=g-import-not-at-top
  method = config.method.get("name") if "method" in config else None
  method_sources = [methods.default_config]
  if method in methods.NAMES:
    method_sources.insert(0, methods._REGISTRY[method][0])  # pylint: disable=protected-access
  return {"data": [data.default_config], "augment": [augment.default_config],
          "model": [models.default_config], "method": method_sources, "optim": [optim.default_config],
          "train": [experiment_config.train_defaults], "eval": [experiment_config.eval_defaults]}


def _format(value) -> str:
  if isinstance(value, ml_collections.ConfigDict):
    return repr(value.to_dict())
  return repr(value)


def describe(config: ml_collections.ConfigDict, *, config_source: str | None = None) -> str:
  """The config as text, grouped by part: ``part.field = value  # explanation``.

  Args:
    config: an experiment config.
    config_source: the config file's text, whose comments take precedence.
  """
  own = _comments(config_source) if config_source else {}
  lines = ["# top level"]
  for key in ("seed", "batch_size", "steps"):
    if key in config:
      lines.append(f"{key} = {config[key]!r}  # {own.get(key, _TOP[key])}")
  sources = _defaults_sources(config)
  for part in PARTS:
    if part not in config:
      continue
    comments = _source_comments(sources[part])
    lines += ["", f"# {part}"]
    for key, value in config[part].items():
      note = own.get(f"{part}.{key}", comments.get(key))
      lines.append(f"{part}.{key} = {_format(value)}" + (f"  # {note}" if note else ""))
  return "\n".join(lines)
