"""Reading and resampling audio without FFmpeg: soundfile (libsndfile) decodes, scipy resamples.

``datasets.Audio`` decoding needs torchcodec and FFmpeg, so audio columns are
loaded with ``Audio(decode=False)`` (a ``{"bytes", "path"}`` dict) or as plain
paths, and decoded here one example at a time.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import soundfile

from fastft.errors import UserError

AudioSource = Union[str, Path, dict]
# What libsndfile decodes: the suffixes audiofolder collects and `fastft predict` takes as audio.
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif"}


def _open_args(source: AudioSource, base_dir: Optional[Path]) -> tuple[Any, str]:
    """What soundfile opens (a path or a byte stream) and a name for messages."""
    if isinstance(source, dict):
        if source.get("bytes"):
            return io.BytesIO(source["bytes"]), str(source.get("path") or "<audio bytes>")
        source = source.get("path")
    if not source:
        raise UserError("an audio example has neither bytes nor a path; check the audio_column")
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    # libsndfile says "System error" and "Format not recognised" for these two.
    if not path.is_file():
        raise UserError(f"audio file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise UserError(f"audio file {path} is empty (0 bytes)")
    return path, str(path)


def _unreadable(name: str, err: Exception) -> UserError:
    return UserError(f"cannot read audio {name} ({err}); libsndfile reads WAV, FLAC, OGG and MP3")


def read_audio(source: AudioSource, base_dir: Optional[Path] = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and their sampling rate.

    ``source`` is a path (relative ones are taken from ``base_dir``), a
    ``datasets.Audio(decode=False)`` dict, or an already decoded
    ``{"array", "sampling_rate"}`` dict.
    """
    if isinstance(source, dict) and source.get("array") is not None:
        samples, rate = np.asarray(source["array"], dtype=np.float32), int(source["sampling_rate"])
    else:
        target, name = _open_args(source, base_dir)
        try:
            samples, rate = soundfile.read(target, dtype="float32", always_2d=False)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
            raise _unreadable(name, err) from None
        if not len(samples):  # a valid header with no frames: the extractor would pad silence, or divide by 0
            raise UserError(f"audio {name} has no samples (0 frames); remove it from the data")
    if samples.ndim == 2:  # (frames, channels): average the channels, as Whisper's and wav2vec2's training did
        samples = samples.mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32), rate


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling with an anti-aliasing filter (``scipy.signal.resample_poly``)."""
    if orig_rate == target_rate:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(int(orig_rate), int(target_rate))
    return resample_poly(samples, target_rate // g, orig_rate // g).astype(np.float32)


def load_audio(source: AudioSource, sampling_rate: int, base_dir: Optional[Path] = None) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate``, whatever the file's own rate and channels."""
    samples, rate = read_audio(source, base_dir)
    return resample(samples, rate, sampling_rate)


def duration_s(source: AudioSource, base_dir: Optional[Path] = None) -> float:
    """Length in seconds from the file header (no decoding)."""
    if isinstance(source, dict) and source.get("array") is not None:
        return len(source["array"]) / float(source["sampling_rate"])
    target, name = _open_args(source, base_dir)
    try:
        return soundfile.info(target).duration
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise _unreadable(name, err) from None
