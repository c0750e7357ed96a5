"""``jaxcl plan``: the search, the compiled estimate on the smoke config, and the command's errors."""

import os
import subprocess
import sys

import pytest

from jaxcl import experiment, main
from jaxcl.experiment import plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "simclr_digits.py")


def _fake(peaks):
  calls = []

  def measure(batch):
    calls.append(batch)
    return plan.StepMemory(batch=batch, arguments=0, outputs=0, aliased=0,
                           temporaries=peaks(batch), generated_code=0, flops=None)
  return measure, calls


def test_binary_search_finds_the_largest_fitting_batch_in_few_compiles():
  batches = plan.ladder(8, 1, max_rows_per_device=1024)  # 8 .. 8192: 11 rungs
  assert batches[0] == 8 and batches[-1] == 8192 and len(batches) == 11
  measure, calls = _fake(lambda b: 100 * b)
  fits, steps = plan.largest_fitting(measure, batches, budget=100 * 1000)
  assert fits.batch == 512 and len(calls) <= 5 and [s.batch for s in steps] == sorted(calls)
  measure, _ = _fake(lambda b: 100 * b)
  assert plan.largest_fitting(measure, batches, budget=10)[0] is None
  assert plan.ladder(8, 4, max_rows_per_device=16) == [32, 64, 128]  # whole chunks per device


def test_plan_of_the_smoke_config_on_8_devices_grows_with_the_batch(devices):
  c = experiment.load_config_file(CONFIG, "smoke")
  result = plan.plan(c, devices=8, memory_bytes=2**40, modes=("allgather",), max_rows_per_device=4)
  row = result["modes"]["allgather"]
  assert [s["batch"] for s in row["steps"]] == [8, 16, 32] and row["largest_batch"] == 32
  temps = [s["temporaries"] for s in row["steps"]]
  peaks = [s["peak"] for s in row["steps"]]
  assert temps[0] < temps[1] < temps[2] and peaks == sorted(peaks)
  state = result["state_bytes"]
  assert state["params"] > 0 and state["opt_state"] > 0
  assert row["steps"][0]["arguments"] >= state["params"] + state["opt_state"]
  assert 0 < row["loss_temporaries"] < row["fits"]["temporaries"]
  assert row["fits"]["flops"] and row["fits"]["flops"] > 0
  text = plan.format_plan(result)
  assert "allgather" in text and "compiled-memory estimates for the cpu backend" in text
  # A budget between two rungs picks the lower one.
  small = plan.plan(c, devices=8, memory_bytes=(peaks[0] + peaks[1]) // 2, modes=("allgather",),
                    max_rows_per_device=4)
  assert small["modes"]["allgather"]["largest_batch"] == 8


@pytest.mark.parametrize("args, message", [
    (["--devices=0", "--memory_gb=16"], "--devices=0"),
    (["--devices=8", "--memory_gb=-1"], "--memory_gb=-1"),
    (["--devices=8", "--memory_gb=16", "--modes=allgather,zigzag"], "unknown ['zigzag']"),
    (["--devices=8", "--memory_gb=16", "--chunks=0"], "--chunks"),
])
def test_bad_flags_are_one_line_before_anything_compiles(args, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    main.run(["jaxcl", "plan", f"--config={CONFIG}:smoke", *args])
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err.splitlines()[0]


def test_plan_command_simulates_its_devices_in_a_fresh_process():
  out = subprocess.run([sys.executable, "-m", "jaxcl", "plan", f"--config={CONFIG}:smoke",
                        "--devices=16", "--memory_gb=4", "--max_per_device=1", "--modes=allgather"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT},
                       timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "16 devices" in out.stdout and "estimates for the cpu backend" in out.stdout
  line = next(l for l in out.stdout.splitlines() if l.startswith("allgather"))
  assert line.split()[1] == "16"  # one row per device, the whole ladder
