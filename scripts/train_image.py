"""Fine-tune an image classifier: `accelerate launch scripts/train_image.py --config recipes/image/X.yaml`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from fastft.cli import script_main  # noqa: E402

if __name__ == "__main__":
    script_main("image")
