"""``benchmarks/accelerator.sh --dry-run``: the accelerator run's every stage, at tiny sizes on this CPU."""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_passes_every_stage_and_writes_json_named_after_the_device(tmp_path):
  out = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator.sh"), "--dry-run",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "XLA_FLAGS": ""})
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "accelerator_cpu.json").read_text())
  assert summary["dry_run"] is True and summary["device"] == "cpu"
  assert [s["stage"] for s in summary["stages"]] == [
      "step_vs_pytorch_f32", "step_vs_pytorch_bf16", "loss_scaling", "plan_accuracy", "default_job"]
  assert all(s["exit_code"] == 0 for s in summary["stages"])
  for dtype in ("float32", "bfloat16"):
    step = json.loads((tmp_path / f"step_vs_pytorch_cpu_{dtype}.json").read_text())
    assert step["configs"]["small_cnn"]["dtype"] == dtype
    assert step["configs"]["small_cnn"]["images_per_s"]["jaxcl"] > 0
  scaling = json.loads((tmp_path / "loss_scaling_cpu.json").read_text())
  assert scaling["results"]["ring"]["512"]
  accuracy = json.loads((tmp_path / "plan_accuracy_cpu.json").read_text())
  assert accuracy["cells"][0]["ok"] and accuracy["cells"][0]["estimate_bytes"] > 0
  assert "loss" in json.loads((tmp_path / "default_job_cpu.json").read_text())
