"""The README's offline quickstart, run as a user runs it (slow: about 5 minutes on 2 cores)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from fastft.offline.image import FASHION_MNIST_DIR


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (make setup installs it)")
def test_quickstart_reaches_85_percent_on_the_fashion_mnist_test_set(tmp_path):
    out = tmp_path / "quickstart"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "scripts/train_image.py",
           "--config", "recipes/image/quickstart.yaml", "--output_dir", str(out)]
    # The recipe takes about 5 minutes alone; the margin is for a loaded CI machine.
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_samples"] == 2_000  # a fixed subset of the Fashion-MNIST test set
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [125, 250, 375, 500, 625]  # a curve, not one point
    assert metrics["eval_accuracy"] >= 0.85
    assert metrics["time_to_target_s"] is not None
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("Done: eval_accuracy=") and str(out.resolve()) in last
    print(f"quickstart: eval_accuracy={metrics['eval_accuracy']:.4f}, {metrics['train_runtime_s']:.0f} s, "
          f"{metrics['train_samples_per_second']:.1f} img/s")
    assert Path(out / "model.safetensors").is_file()
