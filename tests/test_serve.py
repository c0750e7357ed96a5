"""jaxcl.serve's own pieces: query buckets, and search through TrainedEncoders (padded queries give
exactly the unpadded result; only the hits' documents are read back)."""

import numpy as np
import pytest

from jaxcl import serve
from jaxcl.serve import commands


def test_bucket_is_the_next_power_of_two_a_multiple_of_the_devices_and_capped():
  assert [serve.bucket(n) for n in (1, 2, 3, 4, 5, 9, 64)] == [1, 2, 4, 4, 8, 16, 64]
  assert [serve.bucket(n, multiple_of=8) for n in (1, 2, 9, 17)] == [8, 8, 16, 32]
  assert serve.bucket(3, multiple_of=6) == 6  # a power of two below 6 rounds up to 6
  assert serve.bucket(1000, multiple_of=8, most=256) == 256
  with pytest.raises(ValueError, match="at least one row"):
    serve.bucket(0)


def _encoders(table):
  def encode(texts, progress=None):
    del progress
    return np.stack([table[t] for t in texts]).astype(np.float32)
  return serve.TrainedEncoders(kind="text", workdir="/w", step=3, method="retrieval", data="d",
                               encode_documents=encode, encode_queries=encode)


def test_search_pads_queries_to_a_bucket_and_returns_only_the_real_ones(tmp_path):
  rng = np.random.default_rng(0)
  docs = rng.normal(size=(40, 6)).astype(np.float32)
  ids = [f"d{i}" for i in range(40)]
  with serve.IndexWriter(tmp_path / "ix", dim=6, meta={"tower": "documents"}) as writer:
    writer.add(docs, ids)
  found = serve.load_index(tmp_path / "ix", mmap_mode="r")
  queries = {f"q{i}": rng.normal(size=6) for i in range(3)}
  got = commands.search(_encoders(queries), found, list(queries), k=4)
  assert len(got) == 3 and all(len(hits) == 4 for hits in got)
  unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
  for query, hits in zip(queries.values(), got):
    scores = unit @ (query / np.linalg.norm(query))
    best = np.argsort(-scores, kind="stable")[:4]
    assert [i for i, _ in hits] == [ids[r] for r in best]
    np.testing.assert_allclose([s for _, s in hits], scores[best], rtol=1e-5, atol=1e-6)


def test_a_trained_encoders_record_says_what_it_lacks():
  with pytest.raises(ValueError, match="needs encode_documents, encode_queries"):
    serve.TrainedEncoders(kind="text", workdir="/w", step=0, method="retrieval", data="d")
  with pytest.raises(ValueError, match="kind='audio'"):
    serve.TrainedEncoders(kind="audio", workdir="/w", step=0, method="m", data="d")
  image = serve.TrainedEncoders(kind="image", workdir="/w", step=0, method="simclr", data="digits",
                                encode_images=lambda x, progress=None: x)
  with pytest.raises(ValueError, match="an image run: it embeds images"):
    image.embed_texts(["a"], queries=True)
