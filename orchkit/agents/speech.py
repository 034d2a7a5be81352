"""Speech-analysis agent: TensorFlow signal processing and a small Keras fluency model.

Raw audio in (WAV bytes, a base64 WAV string, a WAV file path, or float samples with
their sample rate); out come energy, pitch, pauses, speaking rate and a fluency score.

Signal chain (all frames hop 10 ms, computed with ``tf.signal``):

- energy: RMS of 25 ms frames in dB re full scale (dBFS);
- pitch: normalised autocorrelation of 45 ms Hann frames (FFT-based, corrected for the
  window's own autocorrelation), 75-400 Hz, voiced when the peak exceeds 0.45;
- pauses: runs of frames more than 35 dB below the loud frames (the 99th percentile),
  inside the speech span, lasting at least ``minPauseMs`` (default 250 ms);
- speaking rate: syllable nuclei = voiced peaks of the 300-3000 Hz band energy (50 ms
  smoothing) that stand at least 2 dB above the dip separating them from the previous
  nucleus (de Jong & Wempe, 2009). Syllables per second over the speech span, and
  words per minute = syllables/s x 60 / ``syllablesPerWord`` (default 1.5);
- fluency: a Keras MLP over eight of those measurements, trained on espeak-ng speech
  with known rates and inserted pauses (``simulations/speech_corpus.py``).

Importing this module imports TensorFlow (~2.5 s); ``orchkit.agents`` imports it lazily.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import time
import wave
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from .._base.errors import AgentError  # noqa: E402
from .._base.resources import data_path  # noqa: E402
from .._runtimes.agent import Agent, AgentResponse  # noqa: E402

__all__ = [
    "SpeechAnalysisAgent",
    "FEATURES",
    "decode_audio",
    "measure_speech",
    "fluency_features",
    "build_fluency_model",
    "train_fluency_model",
    "save_fluency_model",
    "load_fluency_model",
]

DATA_DIR = data_path("speech")  # shipped in the package (orchkit/data/speech)
DEFAULT_MODEL_PATH = DATA_DIR / "fluency_model.npz"
DEFAULT_TRAIN_PATH = DATA_DIR / "fluency_train.csv"

HOP_MS = 10.0
ENERGY_WIN_MS = 25.0
PITCH_WIN_MS = 45.0
F0_MIN_HZ, F0_MAX_HZ = 75.0, 400.0
VOICING_THRESHOLD = 0.45
SILENCE_BELOW_TOP_DB = 35.0
NUCLEUS_BELOW_TOP_DB = 25.0
NUCLEUS_DIP_DB = 2.0
MIN_DURATION_MS = 300.0
MAX_DURATION_MS = 600_000.0
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 192_000

FEATURES = (
    "syllables_per_s",
    "articulation_rate",
    "pauses_per_min",
    "mean_pause_s",
    "longest_pause_s",
    "pause_fraction",
    "pitch_std_st",
    "voiced_fraction",
)
"""Inputs of the fluency model, in order (see ``fluency_features``)."""


# --------------------------------------------------------------------------- input


def decode_audio(audio: Any, sample_rate: Any = None) -> tuple[np.ndarray, int]:
    """Turn ``audio`` into mono float32 samples in [-1, 1] and the sample rate in Hz.

    ``audio`` is WAV bytes, a base64 string of a WAV file (a ``data:`` URL prefix is
    allowed), or float samples (list or 1-D float numpy array) together with
    ``sample_rate``. Raises ``ValueError`` saying what is wrong.
    """
    if audio is None:
        raise ValueError(
            "no audio given: pass 'audio' (WAV bytes, base64 WAV, or samples + 'sampleRate') "
            "or 'path'"
        )
    if isinstance(audio, (bytes, bytearray, memoryview)):
        samples, rate = _read_wav(bytes(audio))
    elif isinstance(audio, str):
        text = audio.strip()
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        if not text:
            raise ValueError("audio is an empty string")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "audio string is not valid base64 (expected a base64-encoded WAV file)"
            ) from None
        samples, rate = _read_wav(raw)
    elif isinstance(audio, (list, tuple, np.ndarray)):
        samples, rate = _read_array(audio, sample_rate)
    else:
        raise ValueError(
            f"audio has type {type(audio).__name__}; expected WAV bytes, a base64 WAV string "
            "or a list/array of float samples"
        )
    return _check_samples(samples, rate)


def _read_wav(raw: bytes) -> tuple[np.ndarray, int]:
    if not raw:
        raise ValueError("audio is empty (0 bytes)")
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"audio is not a WAV file (no RIFF/WAVE header; starts with {raw[:12]!r})")
    try:
        with wave.open(io.BytesIO(raw), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(
            f"audio is not a readable PCM WAV file ({exc}); use 8/16/24/32-bit integer PCM"
        ) from None
    usable = len(frames) // (width * channels) * (width * channels)
    frames = frames[:usable]
    if not frames:
        raise ValueError("audio WAV file holds no samples")
    if width == 1:
        data = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(frames, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"audio WAV sample width {width} bytes is not supported (1-4)")
    return data.reshape(-1, channels).mean(axis=1), rate


def _read_array(audio: Any, sample_rate: Any) -> tuple[np.ndarray, int]:
    if isinstance(audio, np.ndarray):
        if audio.dtype.kind != "f":
            raise ValueError(
                f"audio array has dtype {audio.dtype}; expected float samples in [-1, 1] "
                "(e.g. int16 PCM: divide by 32768)"
            )
        data = audio
    else:
        if any(isinstance(v, (bool, str, bytes)) or v is None for v in audio):
            raise ValueError("audio list must hold numbers (float samples in [-1, 1])")
        try:
            data = np.asarray(audio, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "audio list must be a flat list of numbers (float samples in [-1, 1])"
            ) from None
    if data.ndim != 1:
        raise ValueError(f"audio samples must be 1-D (mono); got shape {data.shape}")
    if sample_rate is None:
        raise ValueError("audio given as samples needs 'sampleRate' (Hz)")
    if isinstance(sample_rate, bool) or not isinstance(
        sample_rate, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"sampleRate must be a number of Hz, got {sample_rate!r}")
    if not float(sample_rate).is_integer():
        raise ValueError(f"sampleRate must be a whole number of Hz, got {sample_rate!r}")
    return data, int(sample_rate)


def _check_samples(data: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    if data.size == 0:
        raise ValueError("audio is empty (0 samples)")
    bad = ~np.isfinite(data)
    if bad.any():
        raise ValueError(
            f"audio contains NaN or infinite samples (first at index {int(np.argmax(bad))})"
        )
    duration_ms = 1000.0 * data.size / rate
    if duration_ms < MIN_DURATION_MS:
        raise ValueError(
            f"audio is too short: {duration_ms:.0f} ms (at least {MIN_DURATION_MS:.0f} ms needed)"
        )
    if duration_ms > MAX_DURATION_MS:
        raise ValueError(
            f"audio is too long: {duration_ms:.0f} ms (at most {MAX_DURATION_MS:.0f} ms)"
        )
    if float(np.max(np.abs(data))) < 1e-4:
        raise ValueError("audio is silent (peak below -80 dBFS)")
    return data.astype(np.float32), rate


# --------------------------------------------------------------------------- signal


BLOCK_FRAMES = 3000  # frames analysed at once (30 s): bounds memory on long recordings


def _frame_contours(
    samples: np.ndarray, sr: int, hop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 10 ms frame: energy (dBFS), 300-3000 Hz band energy (dB) and f0 (Hz, 0 = unvoiced).

    Frame i starts at sample i * hop; the signal is zero-padded at the end.
    """
    win_e = max(hop, round(sr * ENERGY_WIN_MS / 1000.0))
    win_p = max(win_e, round(sr * PITCH_WIN_MS / 1000.0))
    n_frames = -(-len(samples) // hop)
    padded = np.concatenate([samples, np.zeros(win_p, np.float32)])
    parts = []
    for first in range(0, n_frames, BLOCK_FRAMES):
        count = min(BLOCK_FRAMES, n_frames - first)
        block = tf.constant(padded[first * hop : (first + count - 1) * hop + win_p])
        parts.append(
            (
                _energy_db(block, win_e, hop)[:count],
                _band_db(block, sr, win_e, hop, 300.0, 3000.0)[:count],
                _pitch_hz(block, sr, win_p, hop)[:count],
            )
        )
    return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]


def _energy_db(x: tf.Tensor, win: int, hop: int) -> np.ndarray:
    frames = tf.signal.frame(x, win, hop)
    rms = tf.sqrt(tf.reduce_mean(tf.square(frames), axis=1))
    return (20.0 * tf.math.log(rms + 1e-10) / np.log(10.0)).numpy()


def _band_db(x: tf.Tensor, sr: int, win: int, hop: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    nfft = 1 << (win - 1).bit_length()
    power = tf.square(tf.abs(tf.signal.stft(x, win, hop, nfft)))
    freqs = np.arange(nfft // 2 + 1) * sr / nfft
    mask = tf.constant(((freqs >= lo_hz) & (freqs <= hi_hz)).astype(np.float32))
    return (10.0 * tf.math.log(tf.reduce_sum(power * mask, axis=1) + 1e-10) / np.log(10.0)).numpy()


def _pitch_hz(x: tf.Tensor, sr: int, win: int, hop: int) -> np.ndarray:
    """Per-frame f0 in Hz from the normalised autocorrelation; 0 where unvoiced."""
    nfft = 1 << (2 * win - 1).bit_length()
    window = tf.signal.hann_window(win, periodic=False)
    frames = tf.signal.frame(x, win, hop)
    frames = (frames - tf.reduce_mean(frames, axis=1, keepdims=True)) * window

    def autocorr(signal: tf.Tensor) -> tf.Tensor:
        spec = tf.signal.rfft(signal, [nfft])
        return tf.signal.irfft(tf.cast(tf.square(tf.abs(spec)), tf.complex64), [nfft])

    lag_lo, lag_hi = int(sr / F0_MAX_HZ), int(np.ceil(sr / F0_MIN_HZ)) + 1
    r = autocorr(frames)[:, : lag_hi + 2].numpy()
    rw = autocorr(window[tf.newaxis, :])[0, : lag_hi + 2].numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = (r / r[:, :1]) / (rw / rw[0])  # corrected for the window's own autocorrelation
    norm = np.nan_to_num(norm, nan=0.0, posinf=0.0, neginf=0.0)
    seg = norm[:, lag_lo : lag_hi + 1]
    best = np.argmax(seg, axis=1)
    strength = seg[np.arange(len(seg)), best]
    # parabolic interpolation around the peak for a sub-sample lag
    i, peak = np.arange(len(norm)), best + lag_lo
    left, mid, right = norm[i, peak - 1], norm[i, peak], norm[i, peak + 1]
    denom = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / denom, 0.0)
    lag = peak + np.clip(shift, -0.5, 0.5)
    return np.where(strength > VOICING_THRESHOLD, sr / lag, 0.0)


def measure_speech(
    samples: np.ndarray,
    sample_rate: int,
    *,
    min_pause_ms: float = 250.0,
    syllables_per_word: float = 1.5,
) -> dict[str, Any]:
    """Energy, pitch, pauses and speaking rate of mono float ``samples`` at ``sample_rate`` Hz.

    Times in the result are in ms, rates in syllables per second and words per minute.
    Raises ``ValueError`` when no speech is found.
    """
    sr = int(sample_rate)
    hop = max(1, round(sr * HOP_MS / 1000.0))
    energy, band, f0 = _frame_contours(np.asarray(samples, np.float32), sr, hop)
    smooth = max(1, round(50.0 / HOP_MS))  # 50 ms moving average of the band energy
    band = tf.nn.avg_pool1d(tf.constant(band[np.newaxis, :, np.newaxis]), smooth, 1, "SAME")[
        0, :, 0
    ].numpy()

    top = float(np.percentile(energy, 99))
    floor = float(np.percentile(energy, 5))
    threshold = max(top - SILENCE_BELOW_TOP_DB, floor + 10.0)
    speech = energy > threshold
    idx = np.flatnonzero(speech)
    if idx.size == 0:
        raise ValueError("no speech detected")
    first, last = int(idx[0]), int(idx[-1])
    span_ms = (last - first + 1) * HOP_MS
    voiced = (f0 > 0) & speech

    # pauses: silent runs inside the speech span, at least min_pause_ms long
    pauses: list[dict[str, float]] = []
    run_start = None
    for i in range(first, last + 2):
        silent = i <= last and not speech[i]
        if silent and run_start is None:
            run_start = i
        elif not silent and run_start is not None:
            length_ms = (i - run_start) * HOP_MS
            if length_ms >= min_pause_ms:
                pauses.append({"startMs": run_start * HOP_MS, "durationMs": length_ms})
            run_start = None
    pause_ms = sum(p["durationMs"] for p in pauses)
    phonation_ms = max(span_ms - pause_ms, HOP_MS)

    # syllable nuclei: voiced, loud, prominent peaks of the band energy
    band_top = float(np.percentile(band, 99))
    near_voiced = np.convolve(voiced.astype(float), np.ones(7), mode="same") > 0  # +-30 ms
    inner = band[1:-1]
    is_peak = (inner >= band[:-2]) & (inner > band[2:])
    candidates = np.flatnonzero(is_peak) + 1
    nuclei: list[int] = []
    for i in candidates:
        if not (
            first <= i <= last and near_voiced[i] and band[i] > band_top - NUCLEUS_BELOW_TOP_DB
        ):
            continue
        if nuclei:
            j = nuclei[-1]
            dip = float(band[j : i + 1].min())
            if min(band[j], band[i]) - dip < NUCLEUS_DIP_DB:
                if band[i] > band[j]:
                    nuclei[-1] = int(i)
                continue
        nuclei.append(int(i))
    if not nuclei:
        raise ValueError("no speech detected (no syllable nuclei)")

    f0v = f0[voiced]
    if f0v.size:
        median_f0 = float(np.median(f0v))
        st = 12.0 * np.log2(f0v / median_f0)
        pitch = {
            "medianHz": round(median_f0, 1),
            "p5Hz": round(float(np.percentile(f0v, 5)), 1),
            "p95Hz": round(float(np.percentile(f0v, 95)), 1),
            "stdSemitones": round(float(np.std(st)), 2),
            "voicedFraction": round(float(voiced.sum() / max(speech.sum(), 1)), 3),
        }
    else:
        pitch = {
            "medianHz": None,
            "p5Hz": None,
            "p95Hz": None,
            "stdSemitones": 0.0,
            "voicedFraction": 0.0,
        }
    loud = energy[speech]
    syllables = len(nuclei)
    per_s = syllables / (span_ms / 1000.0)
    return {
        "durationMs": round(1000.0 * len(samples) / sr, 1),
        "speechMs": span_ms,
        "sampleRate": sr,
        "energy": {
            "meanDbfs": round(float(loud.mean()), 2),
            "peakDbfs": round(float(loud.max()), 2),
            "dynamicRangeDb": round(float(np.percentile(loud, 95) - np.percentile(loud, 5)), 2),
        },
        "pitch": pitch,
        "pauses": {
            "count": len(pauses),
            "totalMs": pause_ms,
            "meanMs": round(pause_ms / len(pauses), 1) if pauses else 0.0,
            "longestMs": max((p["durationMs"] for p in pauses), default=0.0),
            "perMinute": round(len(pauses) / (span_ms / 60_000.0), 2),
            "fraction": round(pause_ms / span_ms, 4),
            "minPauseMs": min_pause_ms,
            "list": pauses,
        },
        "rate": {
            "syllables": syllables,
            "syllablesPerSecond": round(per_s, 3),
            "articulationRate": round(syllables / (phonation_ms / 1000.0), 3),
            "wordsPerMinute": round(per_s * 60.0 / syllables_per_word, 1),
            "syllablesPerWord": syllables_per_word,
            "nucleiMs": [i * HOP_MS for i in nuclei],
        },
    }


def fluency_features(metrics: dict[str, Any]) -> np.ndarray:
    """The model's input vector (order: ``FEATURES``) from a ``measure_speech`` result."""
    p, r = metrics["pauses"], metrics["rate"]
    return np.array(
        [
            r["syllablesPerSecond"],
            r["articulationRate"],
            p["perMinute"],
            p["meanMs"] / 1000.0,
            p["longestMs"] / 1000.0,
            p["fraction"],
            metrics["pitch"]["stdSemitones"],
            metrics["pitch"]["voicedFraction"],
        ],
        dtype=np.float32,
    )


# --------------------------------------------------------------------------- model


def build_fluency_model(mean: np.ndarray, variance: np.ndarray, seed: int = 0) -> tf.keras.Model:
    """An untrained MLP: standardise (``mean``, ``variance`` per feature) -> Dense(16, tanh)
    -> Dense(1, sigmoid); initial weights drawn from ``seed``."""
    keras = tf.keras
    return keras.Sequential(
        [
            keras.Input(shape=(len(FEATURES),)),
            keras.layers.Normalization(
                mean=np.asarray(mean, np.float32), variance=np.asarray(variance, np.float32)
            ),
            keras.layers.Dense(
                16, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
            keras.layers.Dense(
                1,
                activation="sigmoid",
                kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
            ),
        ]
    )


def train_fluency_model(
    x: np.ndarray, y: np.ndarray, *, seed: int = 0, steps: int = 1000
) -> tf.keras.Model:
    """Fit the fluency MLP on features ``x`` (n x len(FEATURES)) and scores ``y`` in [0, 1].

    Full-batch Adam (learning rate 0.01) on the squared error for ``steps`` steps: the
    result depends only on the data and ``seed``.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32).reshape(-1, 1)
    variance = np.maximum(x.var(axis=0), 1e-6)
    model = build_fluency_model(x.mean(axis=0), variance, seed)
    optimizer = tf.keras.optimizers.Adam(0.01)
    xt, yt = tf.constant(x), tf.constant(y)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xt, training=True) - yt))
        optimizer.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        )
        return loss

    for _ in range(steps):
        step()
    return model


def save_fluency_model(model: tf.keras.Model, path: str | Path) -> None:
    """Write the model (standardisation and dense weights) to an ``.npz`` file (a few kB)."""
    norm = model.layers[0]
    dense = [w for layer in model.layers[1:] for w in layer.get_weights()]
    np.savez_compressed(
        path,
        mean=np.ravel(norm.input_mean),
        variance=np.ravel(norm.input_variance),
        **{f"w{i}": w for i, w in enumerate(dense)},
    )


def load_fluency_model(path: str | Path) -> tf.keras.Model:
    """Rebuild the MLP from a file written by ``save_fluency_model``."""
    with np.load(path) as data:
        model = build_fluency_model(data["mean"], data["variance"])
        weights = [data[f"w{i}"] for i in range(len(data.files) - 2)]
    for layer in model.layers[1:]:
        n = len(layer.get_weights())
        layer.set_weights(weights[:n])
        weights = weights[n:]
    return model


def _load_training_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import csv

    with open(path, newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row.get("split", "train") == "train"]
    if not rows:
        raise ValueError("no rows with split 'train'")
    x = np.array([[float(row[name]) for name in FEATURES] for row in rows], np.float32)
    y = np.array([float(row["fluency"]) for row in rows], np.float32)
    return x, y


# --------------------------------------------------------------------------- agent


class SpeechAnalysisAgent(Agent):
    """Live agent for speech recordings; actions ``analyze_speech``, ``analyze_speech_progress``.

    ``analyze_speech`` input: ``audio`` (WAV bytes, base64 WAV string, or float samples
    in [-1, 1] with ``sampleRate`` in Hz) or ``path`` (a WAV file); optional
    ``learnerId`` (stores the result for progress reports), ``recordedAtMs`` (epoch ms,
    default now), ``minPauseMs`` (default 250), ``syllablesPerWord`` (default 1.5).

    ``analyze_speech_progress`` input: ``learnerId``, optional ``days`` (default 30):
    summarises this agent's stored analyses of that learner in the last ``days`` days.

    The fluency model is loaded from ``model_path`` (default ``orchkit/data/speech/
    fluency_model.npz``); if that file does not exist it is trained at ``initialize``
    from ``train_path`` (default ``orchkit/data/speech/fluency_train.csv``) with ``seed``.
    """

    ACTIONS = ("analyze_speech", "analyze_speech_progress")

    def __init__(
        self,
        agent_id: str,
        *,
        capacity: int | None = None,
        seed: int = 0,
        model_path: str | Path | None = None,
        train_path: str | Path | None = None,
    ):
        super().__init__(agent_id, capacity=capacity)
        self.seed = seed
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        self.train_path = Path(train_path) if train_path is not None else DEFAULT_TRAIN_PATH
        self._model: tf.keras.Model | None = None
        self._history: dict[str, list[dict[str, Any]]] = {}

    async def initialize(self) -> None:
        """Load (or, without a weights file, train) the fluency model."""
        self._ensure_model()

    async def shutdown(self) -> None:
        """Drop the model; stored analyses are kept."""
        self._model = None

    def _ensure_model(self) -> tf.keras.Model:
        if self._model is not None:
            return self._model
        fix = "run `python simulations/speech_corpus.py`"
        if not (self.model_path.exists() or self.train_path.exists()):
            raise AgentError(
                f"agent '{self.agent_id}': no fluency model at {self.model_path} "
                f"and no training data at {self.train_path}; {fix}",
                retryable=False,
            )
        path = self.model_path if self.model_path.exists() else self.train_path
        try:
            if path == self.model_path:
                self._model = load_fluency_model(path)
            else:
                self._model = train_fluency_model(*_load_training_csv(path), seed=self.seed)
        except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
            raise AgentError(
                f"agent '{self.agent_id}': cannot use {path} ({type(exc).__name__}: {exc}); "
                f"delete or regenerate it ({fix})",
                retryable=False,
            ) from None
        return self._model

    def history(self, learner_id: str) -> list[dict[str, Any]]:
        """The stored analyses of ``learner_id`` (oldest first; times in epoch ms)."""
        return list(self._history.get(learner_id, []))

    async def process(self, action: str, input: Any, context: dict[str, Any]) -> AgentResponse:
        """Serve ``analyze_speech`` or ``analyze_speech_progress`` (inputs: class docstring)."""
        if action not in self.ACTIONS:
            raise AgentError(
                f"agent '{self.agent_id}' has no action '{action}' "
                f"(actions: {', '.join(self.ACTIONS)})",
                retryable=False,
            )
        if input is None:
            input = {}
        if not isinstance(input, dict):
            raise self._bad(action, f"input must be an object, got {type(input).__name__}")
        if action == "analyze_speech":
            return await self._analyze(input)
        return self._progress(input)

    def _bad(self, action: str, problem: str) -> AgentError:
        return AgentError(f"agent '{self.agent_id}' action '{action}': {problem}", retryable=False)

    # ---- analyze_speech

    async def _analyze(self, input: dict[str, Any]) -> AgentResponse:
        action = "analyze_speech"
        learner = input.get("learnerId")
        if learner is not None and (not isinstance(learner, str) or not learner):
            raise self._bad(action, f"learnerId must be a non-empty string, got {learner!r}")
        options = {}
        for key, name, low, high in (
            ("minPauseMs", "min_pause_ms", 50, 5000),
            ("syllablesPerWord", "syllables_per_word", 0.5, 5),
        ):
            if key in input:
                value = input[key]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not low <= value <= high
                ):
                    raise self._bad(
                        action, f"{key} must be a number in [{low}, {high}], got {value!r}"
                    )
                options[name] = float(value)
        recorded = input.get("recordedAtMs", time.time() * 1000.0)
        if (
            isinstance(recorded, bool)
            or not isinstance(recorded, (int, float))
            or not -1e15 < recorded < 1e15
        ):  # also rejects NaN, inf and huge ints
            raise self._bad(action, f"recordedAtMs must be epoch milliseconds, got {recorded!r}")
        try:
            if "path" in input and input.get("audio") is None:
                path = input["path"]
                if not isinstance(path, str) or not path:
                    raise ValueError(f"path must be a non-empty string, got {path!r}")
                try:
                    raw = Path(path).read_bytes()
                except OSError as exc:
                    raise ValueError(f"cannot read path {path!r}: {exc.strerror or exc}") from None
                samples, rate = decode_audio(raw)
            else:
                samples, rate = decode_audio(input.get("audio"), input.get("sampleRate"))
        except ValueError as exc:
            raise self._bad(action, str(exc)) from None
        model = self._ensure_model()
        try:
            metrics = await asyncio.to_thread(self._measure, model, samples, rate, options)
        except ValueError as exc:
            raise self._bad(action, str(exc)) from None
        score = metrics["fluency"]["score"]
        if learner is not None:
            self._history.setdefault(learner, []).append(
                {
                    "recordedAtMs": float(recorded),
                    "fluencyScore": score,
                    "wordsPerMinute": metrics["rate"]["wordsPerMinute"],
                    "syllablesPerSecond": metrics["rate"]["syllablesPerSecond"],
                    "pausesPerMinute": metrics["pauses"]["perMinute"],
                    "medianPitchHz": metrics["pitch"]["medianHz"],
                }
            )
            self._history[learner].sort(key=lambda h: h["recordedAtMs"])
        speech_s = metrics["speechMs"] / 1000.0
        confidence = float(
            np.clip(0.5 + 0.05 * speech_s, 0.5, 0.9)
            * (1.0 if metrics["rate"]["syllables"] >= 4 else 0.6)
        )
        data = {"learnerId": learner, **metrics}
        return AgentResponse(
            action=action,
            confidence=round(confidence, 3),
            reasoning=(
                f"{speech_s:.1f} s of speech: {metrics['rate']['syllables']} syllable nuclei "
                f"({metrics['rate']['syllablesPerSecond']:.2f}/s, "
                f"~{metrics['rate']['wordsPerMinute']:.0f} wpm), "
                f"{metrics['pauses']['count']} pauses >= {metrics['pauses']['minPauseMs']:.0f} ms, "
                f"median pitch {metrics['pitch']['medianHz']} Hz; fluency {score:.2f} (Keras model)"
            ),
            data=data,
            recommendations=_recommendations(metrics),
            next_steps=["analyze_speech_progress"]
            if learner
            else ["record more speech with a learnerId"],
        )

    @staticmethod
    def _measure(
        model: tf.keras.Model, samples: np.ndarray, rate: int, options: dict[str, float]
    ) -> dict[str, Any]:
        metrics = measure_speech(samples, rate, **options)
        features = fluency_features(metrics)
        score = float(model(features[np.newaxis, :], training=False).numpy()[0, 0])
        metrics["fluency"] = {
            "score": round(score, 4),
            "features": {name: round(float(v), 4) for name, v in zip(FEATURES, features)},
        }
        return metrics

    # ---- analyze_speech_progress

    def _progress(self, input: dict[str, Any]) -> AgentResponse:
        action = "analyze_speech_progress"
        learner = input.get("learnerId")
        if not isinstance(learner, str) or not learner:
            raise self._bad(action, f"learnerId must be a non-empty string, got {learner!r}")
        days = input.get("days", 30)
        if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 3650:
            raise self._bad(action, f"days must be a number in (0, 3650], got {days!r}")
        now_ms = time.time() * 1000.0
        since = now_ms - days * 86_400_000.0
        sessions = [h for h in self._history.get(learner, []) if h["recordedAtMs"] >= since]
        if not sessions:
            return AgentResponse(
                action=action,
                confidence=0.1,
                reasoning=(
                    f"no speech analyses stored for learner '{learner}' in the last {days:g} days"
                ),
                data={"learnerId": learner, "days": days, "sessions": 0, "trend": "unknown"},
                recommendations=["record a speech sample (analyze_speech with this learnerId)"],
                next_steps=["analyze_speech"],
            )
        fluency = np.array([s["fluencyScore"] for s in sessions])
        wpm = np.array([s["wordsPerMinute"] for s in sessions])
        change = float(fluency[-1] - fluency[0])
        trend = (
            "stable"
            if len(sessions) < 2 or abs(change) < 0.05
            else ("improving" if change > 0 else "declining")
        )
        data = {
            "learnerId": learner,
            "days": days,
            "sessions": len(sessions),
            "firstRecordedAtMs": sessions[0]["recordedAtMs"],
            "lastRecordedAtMs": sessions[-1]["recordedAtMs"],
            "meanFluency": round(float(fluency.mean()), 4),
            "fluencyChange": round(change, 4),
            "meanWordsPerMinute": round(float(wpm.mean()), 1),
            "wordsPerMinuteChange": round(float(wpm[-1] - wpm[0]), 1),
            "meanPausesPerMinute": round(
                float(np.mean([s["pausesPerMinute"] for s in sessions])), 2
            ),
            "trend": trend,
            "history": sessions,
        }
        recs = {
            "improving": "keep the current practice routine",
            "declining": "revisit pacing and pause control; shorter daily reading-aloud practice",
            "stable": "add timed reading-aloud practice to move fluency further",
        }
        return AgentResponse(
            action=action,
            confidence=round(min(0.9, 0.3 + 0.15 * len(sessions)), 3),
            reasoning=(
                f"{len(sessions)} analyses of '{learner}' in the last {days:g} days: mean fluency "
                f"{fluency.mean():.2f}, change {change:+.2f} ({trend}), mean {wpm.mean():.0f} wpm"
            ),
            data=data,
            recommendations=[recs[trend]],
            next_steps=["analyze_speech"],
        )


def _recommendations(metrics: dict[str, Any]) -> list[str]:
    recs = []
    wpm, pauses, pitch = metrics["rate"]["wordsPerMinute"], metrics["pauses"], metrics["pitch"]
    if wpm < 110:
        recs.append(f"pace is slow (~{wpm:.0f} wpm): practise reading aloud towards 130-170 wpm")
    elif wpm > 210:
        recs.append(f"pace is fast (~{wpm:.0f} wpm): slow down for clarity")
    if pauses["longestMs"] >= 1000 or pauses["fraction"] > 0.2:
        recs.append(
            f"long pauses (longest {pauses['longestMs']:.0f} ms, "
            f"{100 * pauses['fraction']:.0f}% of speech time): "
            "plan phrases ahead to keep the flow"
        )
    if pitch["stdSemitones"] < 1.0:
        recs.append("intonation is flat: vary pitch to mark stress and questions")
    return recs or ["fluent delivery: keep practising with longer passages"]
