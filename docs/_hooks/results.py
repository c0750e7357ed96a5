"""MkDocs hook: serves the benchmark pictures of ``benchmarks/results/`` as ``results/<name>.png``.

The pictures live beside the JSON their scripts write, outside ``docs/``; the manual shows them
without a second copy in the repository.
"""

import glob
import os

from mkdocs.structure.files import File

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "benchmarks", "results")


def on_files(files, config):
  for path in sorted(glob.glob(os.path.join(RESULTS, "*.png"))):
    files.append(File.generated(config, f"results/{os.path.basename(path)}", abs_src_path=path))
  return files
