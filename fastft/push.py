"""Push a finished output_dir to the Hub again: ``python -m fastft.push OUTPUT_DIR [--hub_model_id ID]``.

For a push that failed at the end of training, or a run made without --push_to_hub.
Unset options fall back to the run's config.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import yaml

from fastft import hub, reporting
from fastft.config import OneLineParser, unknown_flag
from fastft.errors import UserError, exit_on_user_error


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m fastft.push") -> str:
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0], allow_abbrev=False)
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
    repo_id = hub.prepare_repo(pick("hub_model_id"), out, bool(pick("hub_private_repo")), pick("hub_revision"))
    url = hub.push_folder(out, repo_id, pick("hub_revision"), f"fastft: push {out.name}")
    print(f"Pushed {out} to {url}")
    return url


if __name__ == "__main__":
    main()
