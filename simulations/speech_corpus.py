"""Make the speech agent's recordings and its fluency model's training data.

    apt-get install -y espeak-ng          # only needed to run this script
    .venv/bin/python simulations/speech_corpus.py [--out data/speech]
                                                  [--model-out orchkit/data/speech]
                                                  [--n 320] [--seed 0]

Writes the recordings to ``--out`` and what the agent reads at run time (the training
rows and the model) to ``--model-out``, the package's data (``data/speech`` links to them):

- ``rate_<wpm>wpm.wav``: one sentence spoken by espeak-ng (voice en-us) at 100, 130,
  160, 190 and 220 words per minute, resampled to 16 kHz mono 16-bit PCM;
- ``recordings.json``: file, known wpm, text, word and syllable counts of each WAV;
- ``fluency_train.csv``: ``--n`` espeak-ng utterances (10 sentences, 6 voices, random
  pitch, rate uniform in 80..260 wpm, 0-4 inserted pauses of 300-2000 ms made with SSML
  ``<break>``), their measured features (``orchkit.agents.speech.FEATURES``), the known
  generation parameters and the fluency label (below); sentences 9 and 10 are held out
  (``split=test``);
- ``fluency_model.npz``: the Keras MLP trained on the ``train`` rows.

Fluency label (ground truth of this corpus, from the known generation parameters):

    rate_term     = clip((wpm - 70) / 100, 0, 1)        # 70 wpm -> 0, >= 170 wpm -> 1
    pause_frac    = inserted pause time / utterance duration
    fluency       = 0.4 * rate_term + 0.6 * exp(-5 * pause_frac)

Every random draw comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly
from scipy.stats import pearsonr, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchkit.agents.speech import (  # noqa: E402
    FEATURES,
    decode_audio,
    fluency_features,
    load_fluency_model,
    measure_speech,
    save_fluency_model,
    train_fluency_model,
)

RATE_SENTENCE = (
    "The quick brown fox jumps over the lazy dog while seven happy children watch from the garden."
)
RATE_SENTENCE_SYLLABLES = 23
RATES_WPM = (100, 130, 160, 190, 220)
SAMPLE_RATE = 16_000

SENTENCES = (
    "I would like to order a cup of coffee and a slice of apple pie, please.",
    "Yesterday we walked along the river and watched the boats sail slowly past the bridge.",
    "My favourite subject at school is science because I enjoy doing experiments.",
    "Could you tell me how to get to the train station from here?",
    "The weather forecast says it will rain this afternoon, so take an umbrella.",
    "She has been learning to play the piano for almost three years now.",
    "When I finish my homework, I usually read a book or call my friends.",
    "The museum opens at nine o'clock and closes early on Sundays.",
    # the last two are held out (TEST_SENTENCES)
    "Our teacher explained the lesson again because many students were confused.",
    "Last summer my family travelled by car to visit our grandparents in the mountains.",
)
TEST_SENTENCES = {8, 9}
VOICES = ("en-us", "en-gb", "en-us+m3", "en-gb+f2", "en-029", "en-us+f4")


def espeak(
    text: str, *, wpm: int, voice: str = "en-us", pitch: int = 50, ssml: bool = False
) -> np.ndarray:
    """Speak ``text`` with espeak-ng; float samples at 16 kHz."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "--stdout"]
    if ssml:
        cmd.append("-m")
    raw = subprocess.run([*cmd, text], check=True, capture_output=True).stdout
    # espeak-ng streams a 44-byte header with placeholder lengths to stdout: fix them up
    assert raw[36:40] == b"data", "unexpected espeak-ng WAV header"
    raw = (
        raw[:4]
        + (len(raw) - 8).to_bytes(4, "little")
        + raw[8:40]
        + (len(raw) - 44).to_bytes(4, "little")
        + raw[44:]
    )
    samples, rate = decode_audio(raw)
    return resample_poly(samples, SAMPLE_RATE, rate).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16-bit PCM mono WAV at 16 kHz."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())


def fluency_label(wpm: float, inserted_pause_ms: float, duration_ms: float) -> float:
    """The corpus's ground-truth fluency in [0, 1] (see the module docstring)."""
    rate_term = float(np.clip((wpm - 70.0) / 100.0, 0.0, 1.0))
    return 0.4 * rate_term + 0.6 * float(np.exp(-5.0 * inserted_pause_ms / duration_ms))


def make_recordings(out: Path) -> list[dict]:
    rows = []
    for wpm in RATES_WPM:
        name = f"rate_{wpm}wpm.wav"
        write_wav(out / name, espeak(RATE_SENTENCE, wpm=wpm))
        rows.append(
            {
                "file": name,
                "wpm": wpm,
                "text": RATE_SENTENCE,
                "words": len(RATE_SENTENCE.split()),
                "syllables": RATE_SENTENCE_SYLLABLES,
                "voice": "en-us",
                "sampleRate": SAMPLE_RATE,
            }
        )
    (out / "recordings.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def make_training_rows(n: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for i in range(n):
        s = int(rng.integers(len(SENTENCES)))
        words = SENTENCES[s].split()
        voice = VOICES[int(rng.integers(len(VOICES)))]
        pitch = int(rng.integers(30, 71))
        wpm = int(rng.integers(80, 261))
        n_pauses = int(rng.choice([0, 0, 1, 2, 3, 4]))
        gaps = sorted(rng.choice(np.arange(1, len(words)), size=n_pauses, replace=False).tolist())
        lengths = [int(v) for v in rng.integers(300, 2001, size=n_pauses)]
        for gap, ms in sorted(zip(gaps, lengths), reverse=True):
            words.insert(gap, f'<break time="{ms}ms"/>')
        samples = espeak(
            f"<speak>{' '.join(words)}</speak>", wpm=wpm, voice=voice, pitch=pitch, ssml=True
        )
        duration_ms = 1000.0 * len(samples) / SAMPLE_RATE
        features = fluency_features(measure_speech(samples, SAMPLE_RATE))
        rows.append(
            {
                "id": i,
                "split": "test" if s in TEST_SENTENCES else "train",
                "sentence": s,
                "voice": voice,
                "pitch": pitch,
                "wpm": wpm,
                "n_pauses": n_pauses,
                "inserted_pause_ms": sum(lengths),
                "duration_ms": round(duration_ms, 1),
                **{name: round(float(v), 5) for name, v in zip(FEATURES, features)},
                "fluency": round(fluency_label(wpm, sum(lengths), duration_ms), 5),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "speech")
    parser.add_argument(
        "--model-out",
        type=Path,
        default=ROOT / "orchkit" / "data" / "speech",
        help="folder for fluency_train.csv and fluency_model.npz",
    )
    parser.add_argument("--n", type=int, default=320, help="training utterances")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found: apt-get install -y espeak-ng")
    args.out.mkdir(parents=True, exist_ok=True)
    args.model_out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    recordings = make_recordings(args.out)
    print("recordings (known wpm -> measured):")
    for rec in recordings:
        samples, rate = decode_audio((args.out / rec["file"]).read_bytes())
        m = measure_speech(samples, rate)["rate"]
        print(
            f"  {rec['file']}: {rec['wpm']} wpm -> {m['syllables']} syllables, "
            f"{m['syllablesPerSecond']:.2f} syll/s, ~{m['wordsPerMinute']:.0f} wpm"
        )

    rows = make_training_rows(args.n, np.random.default_rng(args.seed))
    with open(args.model_out / "fluency_train.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    plain = [r for r in rows if r["n_pauses"] == 0]
    rho = spearmanr([r["wpm"] for r in plain], [r["syllables_per_s"] for r in plain]).statistic
    print(
        f"corpus: {len(rows)} utterances; rate tracking on {len(plain)} without inserted pauses: "
        f"Spearman(known wpm, syll/s) = {rho:.3f}"
    )

    x = np.array([[r[f] for f in FEATURES] for r in rows], np.float32)
    y = np.array([r["fluency"] for r in rows], np.float32)
    train = np.array([r["split"] == "train" for r in rows])
    model = train_fluency_model(x[train], y[train], seed=args.seed)
    save_fluency_model(model, args.model_out / "fluency_model.npz")
    model = load_fluency_model(args.model_out / "fluency_model.npz")
    pred = model(x[~train], training=False).numpy()[:, 0]
    yt = y[~train]
    mae = float(np.mean(np.abs(pred - yt)))
    r2 = 1.0 - float(np.sum((pred - yt) ** 2) / np.sum((yt - yt.mean()) ** 2))
    print(
        f"fluency model, held-out sentences ({len(yt)} utterances): MAE {mae:.3f}, R^2 {r2:.3f}, "
        f"Pearson {pearsonr(pred, yt).statistic:.3f}; baseline MAE (predict train mean) "
        f"{float(np.mean(np.abs(y[train].mean() - yt))):.3f}"
    )
    print(f"done in {time.perf_counter() - t0:.1f} s -> {args.out}, {args.model_out}")


if __name__ == "__main__":
    main()
