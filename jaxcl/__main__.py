"""``python -m jaxcl ...`` is the same as the ``jaxcl`` command."""

from jaxcl.main import run

if __name__ == "__main__":
  run()
