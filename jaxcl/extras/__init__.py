"""The optional parts of jaxcl and the packages each needs (``pip install 'jaxcl[<extra>]'``).

The core (losses, augmentations, models, image methods, the trainer) needs none of them. A module
that uses one imports it through ``require`` at the use site, so a missing package is one line that
names the extra to install, raised at setup time, before anything is compiled::

  tokenizers = extras.require("tokenizers", "text", "text retrieval")
  # ImportError: text retrieval needs the 'text' extra: pip install 'jaxcl[text]'

``check(extra, what)`` raises the same line without importing anything (a config check), and
``package_dir(module, extra, what)`` finds a data-only package's folder without importing it.
"""

from __future__ import annotations

import importlib
import importlib.util
import types

# extra -> the import names of its packages (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {
    # text retrieval: tokenizer, Parquet, BM25, pretrained weights (safetensors)
    "text": ("tokenizers", "pyarrow", "bm25s", "safetensors"),
    "signals": ("sktime",),                       # the PLAID signals (data only, never imported)
    "shapes": ("animal_shape_mnist",),            # the Animal-Shape images (data only)
    "ann": ("usearch",),                          # approximate (HNSW) search of an index
}


class MissingExtra(ImportError):
  """An optional package is not installed; the message names the extra that installs it."""


def message(extra: str, what: str) -> str:
  """The one line a user sees: what needs the extra and the command that installs it."""
  return f"{what} needs the '{extra}' extra: pip install 'jaxcl[{extra}]'"


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # a broken install, or a module set to None in sys.modules
    return False


def check(extra: str, what: str) -> None:
  """Raises ``MissingExtra`` unless every package of ``extra`` is installed (nothing imported).

  Args:
    extra: a key of ``EXTRAS``.
    what: the feature that needs it, as the user knows it ("text retrieval", "dataset 'plaid'").
  """
  if extra not in EXTRAS:
    raise KeyError(f"unknown extra {extra!r}; jaxcl's extras are {sorted(EXTRAS)}.")
  if not all(_installed(m) for m in EXTRAS[extra]):
    raise MissingExtra(message(extra, what))


def require(module: str, extra: str, what: str) -> types.ModuleType:
  """Imports ``module`` (a package of ``extra``), or raises ``MissingExtra`` naming the extra."""
  if extra not in EXTRAS or module.split(".")[0] not in EXTRAS[extra]:
    raise KeyError(f"{module!r} is not a package of jaxcl's extra {extra!r} ({EXTRAS.get(extra)}).")
  try:
    return importlib.import_module(module)
  except ImportError:
    raise MissingExtra(message(extra, what)) from None


def package_dir(module: str, extra: str, what: str) -> str:
  """The folder of an installed package of ``extra``, found without importing (running) it."""
  if extra not in EXTRAS or module not in EXTRAS[extra]:
    raise KeyError(f"{module!r} is not a package of jaxcl's extra {extra!r} ({EXTRAS.get(extra)}).")
  try:
    spec = importlib.util.find_spec(module)
  except (ImportError, ValueError):
    spec = None
  if spec is None or not spec.submodule_search_locations:
    raise MissingExtra(message(extra, what))
  return list(spec.submodule_search_locations)[0]
