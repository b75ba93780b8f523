"""The fake Hub (tests/hub_server.py) works with the real huggingface_hub, timm and transformers clients."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError
from hub_server import FakeHub, RealNetworkError, fake_hub, make_fake_hub  # noqa: F401  (fixtures)

REPO = "alice/tiny"
CARD = "---\nlicense: apache-2.0\ntags:\n- image-classification\n- fastft\n---\n# Tiny\n\nA test model.\n"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A model folder: card with YAML metadata, a >1 MB binary (goes via LFS) and a small json (inline)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text(CARD)
    (out / "weights.bin").write_bytes(os.urandom(1_500_000))
    (out / "config.json").write_text(json.dumps({"num_labels": 3}))
    return out


def test_clients_point_at_loopback_and_tmp(fake_hub, tmp_path):
    from huggingface_hub import HfApi, constants
    from huggingface_hub.hf_api import api

    for endpoint in (constants.ENDPOINT, api.endpoint, HfApi().endpoint, os.environ["HF_ENDPOINT"]):
        assert endpoint == fake_hub.url and urlsplit(endpoint).hostname == "127.0.0.1"
    assert Path(constants.HF_HUB_CACHE).is_relative_to(tmp_path)
    assert not constants.is_offline_mode() and constants.HF_HUB_DISABLE_XET
    with pytest.raises(RealNetworkError):  # the guard: nothing leaves the machine, even by an explicit endpoint
        HfApi(endpoint="https://hub.example.invalid").whoami()  # RFC 2606: never resolves
    assert fake_hub.errors == ["blocked a request to https://hub.example.invalid/api/whoami-v2"]


def test_whoami(fake_hub):
    from huggingface_hub import HfApi

    me = HfApi().whoami()  # HF_TOKEN is the hub's token
    assert me["name"] == "alice" and [o["name"] for o in me["orgs"]] == ["fastft-org"]
    assert me["auth"]["accessToken"]["role"] == "write"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").whoami()
    assert err.value.response.status_code == 401


def test_create_repo(fake_hub):
    from huggingface_hub import HfApi, create_repo

    url = HfApi().create_repo(REPO)
    assert url.repo_id == REPO and url.startswith(fake_hub.url)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi().create_repo(REPO)
    assert err.value.response.status_code == 409
    assert create_repo(REPO, exist_ok=True).repo_id == REPO  # the module-level function, bound at import
    HfApi().create_repo("fastft-org/shared", private=True)
    assert ("model", "fastft-org/shared") in fake_hub.private
    with pytest.raises(HfHubHTTPError) as err:
        HfApi().create_repo("bob/theirs")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").create_repo("alice/other", exist_ok=True)
    assert err.value.response.status_code == 401
    fake_hub.add_token("hf_read", "alice", role="read")
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_read").create_repo("alice/other")
    assert err.value.response.status_code == 403
    assert set(fake_hub.repos) == {("model", REPO), ("model", "fastft-org/shared")}


def test_upload_folder_is_one_commit_and_downloads_back(fake_hub, folder, tmp_path):
    from huggingface_hub import HfApi, ModelCard, hf_hub_download, model_info, snapshot_download

    api = HfApi()
    api.create_repo(REPO)
    info = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="Push tiny")
    local = {p.name: p.read_bytes() for p in folder.iterdir()}

    [commit] = fake_hub.commits(REPO)
    assert commit.summary == "Push tiny" and sorted(commit.added) == sorted(local)
    assert info.oid == commit.oid and fake_hub.repos[("model", REPO)]["main"] == local
    assert fake_hub.requests["lfs_upload"] == 1 and fake_hub.requests["commit"] == 1  # only the binary via LFS

    for name, data in local.items():
        assert Path(hf_hub_download(REPO, name)).read_bytes() == data
    snapshot = Path(snapshot_download(REPO, cache_dir=tmp_path / "other_cache"))
    assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == local
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.txt")

    card = ModelCard.load(REPO)
    assert card.data.license == "apache-2.0" and "fastft" in card.data.tags and "A test model." in card.text
    assert model_info(REPO).card_data.license == "apache-2.0"
    assert {s.rfilename for s in model_info(REPO).siblings} == set(local)

    # Nothing changed: the client compares preupload's oids and makes no new commit.
    api.upload_folder(repo_id=REPO, folder_path=folder)
    assert len(fake_hub.commits(REPO)) == 1
    assert not fake_hub.errors and not fake_hub.requests["unknown"]


def test_push_to_a_revision_branch(fake_hub, folder):
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    api.create_repo(REPO)
    api.create_branch(REPO, branch="v1")
    api.create_branch(REPO, branch="v1", exist_ok=True)
    api.upload_folder(repo_id=REPO, folder_path=folder, revision="v1")
    assert fake_hub.repos[("model", REPO)]["main"] == {}
    assert set(fake_hub.repos[("model", REPO)]["v1"]) == {"README.md", "weights.bin", "config.json"}
    assert [c.revision for c in fake_hub.commits(REPO)] == ["v1"]
    path = hf_hub_download(REPO, "config.json", revision="v1")
    assert Path(path).read_bytes() == (folder / "config.json").read_bytes()
    assert [b.name for b in api.list_repo_refs(REPO).branches] == ["main", "v1"]


def test_timm_model_round_trip(fake_hub, tmp_path):
    import timm
    import torch
    from huggingface_hub import HfApi
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=4)
    save_for_hf(model, tmp_path / "timm", safe_serialization=True)
    HfApi().create_repo("fastft-org/tiny-timm")
    HfApi().upload_folder(repo_id="fastft-org/tiny-timm", folder_path=tmp_path / "timm")

    loaded = timm.create_model("hf-hub:fastft-org/tiny-timm", pretrained=True)
    assert loaded.num_classes == 4
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_transformers_model_round_trip(fake_hub, tmp_path):
    import torch
    from huggingface_hub import HfApi
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=3)
    model = ViTForImageClassification(config)
    model.save_pretrained(tmp_path / "vit")
    HfApi().create_repo("alice/tiny-vit")
    HfApi().upload_folder(repo_id="alice/tiny-vit", folder_path=tmp_path / "vit")

    loaded = ViTForImageClassification.from_pretrained("alice/tiny-vit")
    assert loaded.config.num_labels == 3
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not fake_hub.errors


def test_failure_switch_and_private_repos(fake_hub, folder):
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    api.create_repo(REPO, private=True)
    with fake_hub.failing(401):
        with pytest.raises(HfHubHTTPError) as err:
            api.whoami()
        assert err.value.response.status_code == 401
    with fake_hub.failing(503, "commit"):  # the commit POST is not retried by the client
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_folder(repo_id=REPO, folder_path=folder)
        assert err.value.response.status_code == 503
    assert fake_hub.commits(REPO) == [] and fake_hub.requests["commit"] == 1
    with fake_hub.failing(503, "preupload"):  # retried, without the 23 s of backoff sleeps
        with pytest.raises(HfHubHTTPError):
            api.upload_folder(repo_id=REPO, folder_path=folder)
    assert fake_hub.requests["preupload"] == 1 + 6 and fake_hub.client_sleeps == [1, 2, 4, 8, 8]
    api.upload_folder(repo_id=REPO, folder_path=folder)  # the LFS object is already there: no second PUT
    assert fake_hub.requests["lfs_upload"] == 1 and len(fake_hub.commits(REPO)) == 1
    with pytest.raises(HfHubHTTPError):  # private: anonymous reads are refused
        hf_hub_download(REPO, "config.json", token=False)
    (folder / "README.md").write_text("---\nlicense: [unclosed\n---\nbad card\n")
    with pytest.raises(ValueError, match="Invalid metadata"):  # validate-yaml answers 400, before any upload
        api.upload_folder(repo_id=REPO, folder_path=folder)
    assert len(fake_hub.commits(REPO)) == 1 and not fake_hub.errors


def test_a_fresh_process_is_pointed_by_env_vars(fake_hub, tmp_path):
    """huggingface_hub reads HF_ENDPOINT at import: a subprocess needs only hub.client_env()."""
    code = ("import huggingface_hub as h; from huggingface_hub import constants; print(constants.ENDPOINT); "
            "print(h.whoami()['name']); print(h.create_repo('fastft-org/from-subprocess').repo_id)")
    env = {**os.environ, **fake_hub.client_env(tmp_path / "sub_home")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [fake_hub.url, "alice", "fastft-org/from-subprocess"]
    assert ("model", "fastft-org/from-subprocess") in fake_hub.repos


def test_server_without_the_fixture():
    """FakeHub alone is a context manager; a subprocess gets pointed at it with hub.client_env()."""
    import httpx2

    with FakeHub(token="t", user="u", orgs=()) as hub:
        env = hub.client_env("/nonexistent")
        assert env["HF_ENDPOINT"] == hub.url and env["HF_HUB_DISABLE_XET"] == "1"
        r = httpx2.get(f"{hub.url}/api/whoami-v2", headers={"Authorization": "Bearer t"})
        assert r.status_code == 200 and r.json()["name"] == "u"
        assert httpx2.get(f"{hub.url}/api/whoami-v2").status_code == 401
        assert hub.requests["whoami"] == 2
        data = b"x" * 70_000  # a streamed (chunked) body, as a client may send to the LFS upload URL
        oid = hashlib.sha256(data).hexdigest()
        r = httpx2.put(f"{hub.url}/_lfs/{oid}", content=iter([data[:1000], data[1000:]]))
        assert r.status_code == 200 and r.request.headers["transfer-encoding"] == "chunked"
        assert hub.lfs[oid] == data
        assert httpx2.put(f"{hub.url}/_lfs/{oid[::-1]}", content=data).status_code == 400  # wrong hash
        assert httpx2.get(f"{hub.url}/api/nothing-here").status_code == 404 and hub.requests["unknown"] == 1
