"""Loading the NumPy pickles some datasets ship as, without letting a file run code.

A pickle can call any importable function while it loads, so a dataset file from a mirror, a shared
drive or a package index could run code as the user. ``load`` builds only what such files hold (dicts,
lists, bytes, str, ints and NumPy arrays) and refuses every other global: the name in the file never
decides what gets imported. Callers check the shapes, dtypes and labels of what it returns.
"""

import pickle
from typing import Any, BinaryIO

import numpy as np

_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
  # NumPy pickles an array as an empty ndarray that __setstate__ then fills (and checks against the
  # data's length); any other shape would only allocate memory the file never backs.
  if subtype is not np.ndarray or tuple(shape) != (0,):
    raise TypeError(f"array reconstruction with {getattr(subtype, '__name__', subtype)}, {shape}")
  return _NUMPY_RECONSTRUCT(subtype, shape, dtype)


# NumPy's array reconstruction (written as numpy.core by NumPy 1.x, numpy._core by 2.x), mapped to
# objects chosen here.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

#: What a truncated or garbled pickle raises depends on where its bytes stop making sense.
DAMAGED_ERRORS = (ValueError, pickle.UnpicklingError, EOFError, OSError, TypeError, AttributeError,
                  KeyError, IndexError, MemoryError, RecursionError)


class UnsafePickleError(ValueError):
  """A data file references code to run: not the dataset's file, possibly malicious."""


class _Unpickler(pickle.Unpickler):
  """Unpickles plain containers and NumPy arrays only; any other global raises UnsafePickleError."""

  def __init__(self, file: BinaryIO, where: str, dataset: str, fix: str):
    super().__init__(file, encoding="bytes")
    self._where, self._dataset, self._fix = where, dataset, fix

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f"{self._where} asks to load {module}.{name}, which no {self._dataset} file contains: it "
          f"is not a {self._dataset} file and may be malicious (nothing was run). Delete it and "
          f"{self._fix}.") from None


def load(file: BinaryIO, where: str, *, dataset: str, fix: str) -> Any:
  """Unpickles ``file`` with containers and NumPy arrays only.

  Args:
    file: the open pickle.
    where: the file's name for messages.
    dataset: the dataset's name for messages ("CIFAR-10").
    fix: what the user should do, for messages ("re-download ...").

  Raises:
    UnsafePickleError: the file references any other global (nothing was run).
    One of ``DAMAGED_ERRORS``: the file is truncated or garbled (callers turn it into one line).
  """
  return _Unpickler(file, where, dataset, fix).load()
