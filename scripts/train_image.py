"""Fine-tune an image classifier: `accelerate launch scripts/train_image.py --config recipes/image/X.yaml`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from fastft.engine import main  # noqa: E402
from fastft.tasks.image import ImageArguments, ImageTask  # noqa: E402

if __name__ == "__main__":
    main(ImageTask, ImageArguments)
