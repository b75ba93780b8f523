"""Offline "embedded" assets: pretrained models and datasets that need no Hub.

Names start with ``fastft:`` so a recipe can use them wherever it would name a Hub repo.
Each asset is built once from files that pip or apt installed, into :func:`common.cache_dir`.

- :mod:`fastft.offline.common`: what every asset module shares (names, the build-once cache, the command)
- :mod:`fastft.offline.image`: EfficientNet-Lite0 and Fashion-MNIST
- :mod:`fastft.offline.text`: all-MiniLM-L6-v2 and English-to-X gettext messages
- :mod:`fastft.offline.speech`: whisper-tiny.en, the Asterisk prompts and espeak-ng voices
- :mod:`fastft.offline.whisper_ct2`: the CTranslate2 -> transformers Whisper converter

``python -m fastft.offline.image`` (``.text``, ``.speech``) prepares a module's assets now (set-up runs them).
"""
