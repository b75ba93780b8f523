"""``python -m fastft`` and ``accelerate launch -m fastft train ...``: the ``fastft`` command."""
from fastft.cli import main

if __name__ == "__main__":
    main()
