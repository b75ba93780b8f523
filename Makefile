# The README's two commands. Each does the (idempotent) set-up first.
.PHONY: setup quickstart quickstart-translation quickstart-speech quickstart-keywords test test-fast

setup:
	bash scripts/setup.sh

quickstart: setup
	.venv/bin/accelerate launch scripts/train_image.py --config recipes/image/quickstart.yaml --overwrite_output_dir true

# The other tasks' offline quickstarts (docs/translation.md, docs/speech.md).
quickstart-translation: setup
	.venv/bin/accelerate launch scripts/train_translation.py --config recipes/translation/quickstart.yaml --overwrite_output_dir true

quickstart-speech: setup
	.venv/bin/accelerate launch scripts/train_speech.py --config recipes/speech/quickstart.yaml --overwrite_output_dir true

quickstart-keywords: setup
	.venv/bin/accelerate launch scripts/train_speech.py --config recipes/speech/keywords_quickstart.yaml --overwrite_output_dir true

# Every test, the slow end-to-end runs included (CI: .ci/run), then the 15 slowest.
test: setup
	.venv/bin/python -m pytest --durations=15

test-fast: setup
	.venv/bin/python -m pytest -m "not slow" --durations=15
