"""What jaxcl's own builders share: they read local files, so they say so instead of "Downloading"."""


class LocalFiles:
  """Mixin for a ``tfds.core.GeneratorBasedBuilder`` that reads local files only.

  TFDS announces every preparation as "Downloading and preparing dataset Unknown size (download:
  Unknown size ...)" and its end as "downloaded and prepared", which is untrue here: one jaxcl line
  replaces both.
  """

  def _log_download_bytes(self) -> None:
    print(f"jaxcl: preparing {self.name} from local files (nothing is downloaded) into "
          f"{self.data_dir}", flush=True)

  def _log_download_done(self) -> None:
    pass
