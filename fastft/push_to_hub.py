"""Push a run's output_dir to the Hugging Face Hub: ``--push_to_hub``, and ``fastft push OUTPUT_DIR`` again.

The token comes from ``HF_TOKEN`` or the stored login (``hf auth login``), never
from a recipe, and is never printed. Training checks the token and the repo
before it starts; the push itself is one commit of the model, its card,
``config.yaml``, ``metrics.json`` and plots; checkpoints stay local.
``fastft push`` (:func:`main`) pushes a finished run again: for a push that failed
at the end of training, or a run made without --push_to_hub; its unset options fall
back to the run's config.yaml.
"""
from __future__ import annotations

import shlex
import shutil
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Optional, Sequence

import yaml

from fastft import reporting
from fastft.arguments import OneLineParser, unknown_flag
from fastft.errors import UserError, exit_on_user_error

# Resumable training state and scratch files are not part of the published model.
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", ".tmp-*", ".tmp-*/**", "*.tmp", "train_log.jsonl",
                   "best_model.*"]  # load_best_model_at_end's weights in waiting


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError("push_to_hub needs a Hub token with write access: set HF_TOKEN or run `hf auth login` "
                        "(a token is never read from a recipe)")
    return token


def _describe(err: Exception) -> str:
    """What failed, in one line, without the token (the client never puts it in messages)."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    hint = {401: "the token was rejected (401): check HF_TOKEN or log in again",
            403: "the token may not write there (403): the name belongs to another user or org, "
                 "or the token is read-only"}.get(status)
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return hint or f"{type(err).__name__}: {first}"


def retry_command(output_dir: str | Path, repo_id: str, revision: Optional[str]) -> str:
    cmd = ["fastft", "push", str(output_dir), "--hub_model_id", repo_id]
    return shlex.join(cmd + (["--hub_revision", revision] if revision else []))


def prepare_repo(hub_model_id: Optional[str], output_dir: str | Path, private: bool,
                 revision: Optional[str]) -> str:
    """Check the token and the repo name, create the repo (and branch); return the full repo id.

    Called before training, so a bad token or a foreign name fails in seconds, not after hours.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    api = HfApi(token=_token())
    try:
        me = api.whoami()
    except Exception as err:  # offline, 401, server down: the run would fail at the end anyway
        raise UserError(f"push_to_hub: cannot reach the Hub as you ({_describe(err)}); fix it or drop "
                        f"--push_to_hub and push later with `fastft push OUTPUT_DIR`") from None
    repo_id = hub_model_id or f"{me['name']}/{Path(output_dir).resolve().name}"
    if "/" not in repo_id:
        repo_id = f"{me['name']}/{repo_id}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        if hub_model_id is None:  # the name came from output_dir, not from the user
            raise UserError(f"the Hub repo name derived from output_dir ({repo_id!r}) is not valid; set "
                            f"hub_model_id to user/name or org/name with letters, digits, '-', '_' and '.'") from None
        raise UserError(f"hub_model_id {repo_id!r} is not a valid Hub repo name: use user/name or org/name "
                        f"with letters, digits, '-', '_' and '.'") from None
    namespace = repo_id.split("/")[0]
    mine = {me["name"], *(org["name"] for org in me.get("orgs", []))}
    if namespace not in mine:
        raise UserError(f"hub_model_id {repo_id!r}: you ({me['name']}) cannot write to namespace {namespace!r}; "
                        f"use one of {', '.join(sorted(mine))}")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    except Exception as err:
        raise UserError(f"push_to_hub: cannot create {repo_id} ({_describe(err)})") from None
    return repo_id


def push_folder(output_dir: str | Path, repo_id: str, revision: Optional[str], message: str,
                background: bool = False) -> str | Future:
    """Upload output_dir as one commit; return its URL, or when ``background`` a Future of the commit."""
    from huggingface_hub import HfApi

    api = HfApi(token=_token())

    def upload(folder: str | Path) -> object:
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=message, ignore_patterns=IGNORE_PATTERNS)

    if background:  # training goes on and rewrites the model files: upload a copy, not the live folder
        snapshot = Path(tempfile.mkdtemp(prefix=f".tmp-push-{Path(output_dir).name}-", dir=Path(output_dir).parent))
        shutil.copytree(output_dir, snapshot, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*IGNORE_PATTERNS))

        def upload_snapshot() -> object:
            try:
                return upload(snapshot)
            finally:
                shutil.rmtree(snapshot, ignore_errors=True)
        return api.run_as_future(upload_snapshot)
    try:
        result = upload(output_dir)
    except Exception as err:
        raise UserError(f"push to {repo_id} failed ({_describe(err)}); {output_dir} is complete; retry with: "
                        f"{retry_command(output_dir, repo_id, revision)}") from None
    return result.commit_url


DESCRIPTION = "Push a finished output_dir to the Hub again: ``fastft push OUTPUT_DIR [--hub_model_id ID]``."


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None, prog: str = "fastft push") -> str:
    parser = OneLineParser(prog=prog, description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("output_dir", help="A finished run's folder (with metrics.json and README.md).")
    parser.add_argument("--hub_model_id", help="user/name or org/name; default: the run's, else <you>/<folder>.")
    parser.add_argument("--hub_revision", help="Branch to push to; default: the run's, else main.")
    parser.add_argument("--hub_private_repo", action="store_true", default=None, help="Create the repo private.")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise unknown_flag(unknown, [a.dest for a in parser._actions if a.option_strings])
    out = Path(args.output_dir)
    if not out.is_dir():
        raise UserError(f"output_dir {out} is not a folder; give a finished fastft run's output_dir")
    for needed in (reporting.FINAL, "README.md", reporting.CONFIG):
        if not (out / needed).is_file():
            raise UserError(f"{out} has no {needed}: push a finished fastft run's output_dir")
    try:
        recipe = yaml.safe_load((out / reporting.CONFIG).read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{out / reporting.CONFIG} is damaged ({type(err).__name__}); pass --hub_model_id "
                        f"and --hub_revision, or restore the file") from None
    if not isinstance(recipe, dict):
        raise UserError(f"{out / reporting.CONFIG} is not a recipe mapping; restore the file")
    pick = lambda key: getattr(args, key) if getattr(args, key) is not None else recipe.get(key)  # noqa: E731
    repo_id = prepare_repo(pick("hub_model_id"), out, bool(pick("hub_private_repo")), pick("hub_revision"))
    url = push_folder(out, repo_id, pick("hub_revision"), f"fastft: push {out.name}")
    print(f"Pushed {out} to {url}")
    return url

