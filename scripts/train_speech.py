"""Fine-tune a speech model: `accelerate launch scripts/train_speech.py --config recipes/speech/X.yaml`.

The recipe's `task` picks speech recognition (asr) or audio_classification.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from fastft.cli import script_main  # noqa: E402

if __name__ == "__main__":
    script_main("speech")
