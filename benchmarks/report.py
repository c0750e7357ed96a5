r"""One page for every benchmark: ``benchmarks/results/index.html`` (static, pictures embedded).

  python benchmarks/report.py

It embeds each PNG under ``benchmarks/results/`` and the tables of ``methods.json``, ``sweeps.json`` and
``fsdp_memory.json`` (as each script's ``--table`` prints them).
"""

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout
import fsdp_memory  # noqa: E402
import methods  # noqa: E402
import sweeps  # noqa: E402

from jaxcl import report  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def _tables(text: str, prefix: str) -> dict[str, str]:
  """The ``**heading**`` + pipe-table blocks of a ``--table`` printout."""
  out, heading = {}, prefix
  for block in text.strip().split("\n\n"):
    block = block.strip()
    if block.startswith("**"):
      heading = f"{prefix}: {block.split('**')[1]}"
    elif block.startswith("|"):
      out[heading] = block
  return out


def main() -> None:
  tables = {}
  for module, name in ((methods, "methods"), (sweeps, "sweeps"), (fsdp_memory, "fsdp_memory")):
    path = os.path.join(RESULTS, f"{name}.json")
    if os.path.exists(path):
      tables.update(_tables(module.table(methods.load(path)), name))
  pictures = [(png, os.path.splitext(os.path.basename(png))[0])
              for png in sorted(glob.glob(os.path.join(RESULTS, "*.png"))) if "_quick" not in png]
  out = report.write_page(os.path.join(RESULTS, "index.html"), title="jaxcl benchmarks",
                          facts={"source": "benchmarks/*.py; numbers in benchmarks/results/*.json"},
                          tables=tables, pictures=pictures)
  print(out)


if __name__ == "__main__":
  main()
