"""Test setup: 8 simulated CPU devices and no network.

XLA_FLAGS must be set before JAX is imported anywhere, so this runs first.
"""

import os
import socket
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests (and the training subprocesses they start) compile the same programs: the smoke config's
# init and step. XLA's persistent cache shares them across tests, workers and processes; a cached
# executable is the compiled program itself, so results are bit-identical to a fresh compile.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"jaxcl-tests-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# TFDS would otherwise spend minutes resolving GCS hosts on an offline machine.
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")

import pytest  # noqa: E402

_real_connect = socket.socket.connect


def _loopback_only_connect(self, address):
  host = address[0] if isinstance(address, tuple) else address
  if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1", "")):
    return _real_connect(self, address)
  if self.family == socket.AF_UNIX:
    return _real_connect(self, address)
  raise OSError(f"network access is disabled in tests (tried to connect to {address!r})")


socket.socket.connect = _loopback_only_connect


@pytest.fixture(scope="session")
def devices():
  import jax

  devs = jax.devices()
  assert len(devs) == 8, f"expected 8 simulated devices, got {len(devs)}"
  return devs


@pytest.fixture(scope="session")
def mesh(devices):
  """A 1-D data-parallel mesh over the 8 simulated devices."""
  import jax

  return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
