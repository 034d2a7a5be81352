"""Speech-analysis agent on the committed espeak-ng recordings (no espeak-ng needed)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import struct
import time
import wave
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")

from scipy.stats import pearsonr, spearmanr  # noqa: E402

from orchkit import AgentError  # noqa: E402
from orchkit.agents import SpeechAnalysisAgent  # noqa: E402
from orchkit.agents.speech import FEATURES, decode_audio, load_fluency_model  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "speech"
RECORDINGS = json.loads((DATA / "recordings.json").read_text())
CTX = {"plan_id": "p", "step_id": "s", "attempt": 1, "run_id": "r", "results": {}}
WPM_TOLERANCE = 0.15  # estimated wpm (1.5 syllables/word) within 15% of espeak-ng's nominal rate


@pytest.fixture(scope="module")
def agent() -> SpeechAnalysisAgent:
    a = SpeechAnalysisAgent("speech-agent-1")
    asyncio.run(a.initialize())
    return a


@pytest.fixture(scope="module")
def analyses(agent) -> dict[int, dict]:
    """analyze_speech of every committed recording, by known wpm."""

    async def run():
        out = {}
        for rec in RECORDINGS:
            resp = await agent.process(
                "analyze_speech", {"audio": (DATA / rec["file"]).read_bytes()}, CTX
            )
            out[rec["wpm"]] = resp
        return out

    return asyncio.run(run())


def wav_bytes(samples: np.ndarray, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2").tobytes())
    return buf.getvalue()


def recording(wpm: int) -> tuple[np.ndarray, int]:
    return decode_audio((DATA / f"rate_{wpm}wpm.wav").read_bytes())


# ---------------------------------------------------------------- committed recordings


def test_committed_recordings_are_small_16k_mono():
    total = sum((DATA / r["file"]).stat().st_size for r in RECORDINGS)
    assert len(RECORDINGS) == 5 and total < 2_000_000
    assert (DATA / "fluency_model.npz").stat().st_size < 1_000_000
    for rec in RECORDINGS:
        with wave.open(str(DATA / rec["file"])) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)


def test_measured_rate_ranks_and_tracks_known_wpm(analyses):
    known = sorted(analyses)
    syll_s = [analyses[w].data["rate"]["syllablesPerSecond"] for w in known]
    est_wpm = [analyses[w].data["rate"]["wordsPerMinute"] for w in known]
    print("known wpm -> syll/s, est. wpm:", list(zip(known, syll_s, est_wpm)))
    assert spearmanr(known, syll_s).statistic == pytest.approx(1.0)
    assert pearsonr(known, syll_s).statistic > 0.98
    for w, est in zip(known, est_wpm):
        assert abs(est - w) <= WPM_TOLERANCE * w, (w, est)


def test_syllable_nuclei_count_matches_the_sentence(analyses):
    # the sentence has 23 syllables; the count must not drift with the rate
    for w, resp in analyses.items():
        assert abs(resp.data["rate"]["syllables"] - RECORDINGS[0]["syllables"]) <= 2, w


def test_analyze_speech_response_shape(analyses):
    resp = analyses[160]
    d = resp.data
    assert resp.action == "analyze_speech" and 0.5 <= resp.confidence <= 0.9
    assert d["sampleRate"] == 16_000 and 5000 < d["speechMs"] <= d["durationMs"]
    assert 80 < d["pitch"]["medianHz"] < 130  # espeak-ng en-us speaks around 100 Hz
    assert 0.5 < d["pitch"]["voicedFraction"] <= 1.0
    assert -40 < d["energy"]["meanDbfs"] < d["energy"]["peakDbfs"] <= 0
    assert d["pauses"]["count"] == 0  # espeak reads the sentence without a pause
    assert 0.0 <= d["fluency"]["score"] <= 1.0 and list(d["fluency"]["features"]) == list(FEATURES)
    assert resp.to_dict()["nextSteps"]


def insert_silences(
    samples: np.ndarray, rate: int, nuclei_ms: list[float], pause_ms: float, count: int
):
    """Insert ``count`` silences of ``pause_ms`` between syllable nuclei spread over the
    utterance."""
    gaps = [(a + b) / 2 for a, b in zip(nuclei_ms, nuclei_ms[1:])]
    picks = [gaps[int(i)] for i in np.linspace(2, len(gaps) - 3, count)]
    pieces, last = [], 0
    for at_ms in picks:
        cut = int(at_ms * rate / 1000)
        pieces += [samples[last:cut], np.zeros(int(pause_ms * rate / 1000), np.float32)]
        last = cut
    return np.concatenate(pieces + [samples[last:]])


async def test_inserted_pauses_are_measured_and_lower_fluency(agent, analyses):
    plain = analyses[160]
    x, rate = recording(160)
    paused = insert_silences(x, rate, plain.data["rate"]["nucleiMs"], 1200.0, 3)
    resp = await agent.process("analyze_speech", {"audio": paused, "sampleRate": rate}, CTX)
    p = resp.data["pauses"]
    assert p["count"] == 3
    assert 1100 <= p["longestMs"] <= 1400 and 3300 <= p["totalMs"] <= 4200
    assert abs(resp.data["rate"]["syllables"] - plain.data["rate"]["syllables"]) <= 1
    assert resp.data["rate"]["articulationRate"] == pytest.approx(
        plain.data["rate"]["articulationRate"], rel=0.1
    )
    f_plain, f_paused = plain.data["fluency"]["score"], resp.data["fluency"]["score"]
    print(f"fluency without pauses {f_plain:.3f}, with 3 x 1.2 s pauses {f_paused:.3f}")
    assert 0 <= f_paused < f_plain - 0.2 and f_plain <= 1
    assert any("pause" in r for r in resp.recommendations)


def test_fluency_is_higher_for_faster_fluent_speech(analyses):
    assert analyses[100].data["fluency"]["score"] < analyses[160].data["fluency"]["score"]


async def test_pitch_and_rate_of_a_synthetic_voice(agent):
    # a 150 Hz harmonic tone gated into 5 "syllables" per second for 3 s
    rate = 16_000
    t = np.arange(3 * rate) / rate
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    phase = np.mod(t, 0.2)
    envelope = np.where(phase < 0.12, np.sin(np.pi * phase / 0.12) ** 2, 0.0)
    x = (0.1 * tone * envelope).astype(np.float32)
    resp = await agent.process("analyze_speech", {"audio": x, "sampleRate": rate}, CTX)
    assert resp.data["pitch"]["medianHz"] == pytest.approx(150, rel=0.02)
    assert resp.data["rate"]["syllables"] == 15
    assert resp.data["rate"]["syllablesPerSecond"] == pytest.approx(5.0, rel=0.1)


async def test_input_forms_agree(agent, analyses, tmp_path):
    raw = (DATA / "rate_190wpm.wav").read_bytes()
    x, rate = recording(190)
    expected = analyses[190].data["rate"]["syllables"]
    path = tmp_path / "a.wav"
    path.write_bytes(raw)
    inputs = [
        {"audio": base64.b64encode(raw).decode()},
        {"audio": "data:audio/wav;base64," + base64.b64encode(raw).decode()},
        {"audio": x.astype(np.float64).tolist(), "sampleRate": rate},
        {"path": str(path)},
        {"audio": stereo_24bit_wav(x, rate)},
    ]
    for inp in inputs:
        resp = await agent.process("analyze_speech", inp, CTX)
        assert resp.data["rate"]["syllables"] == expected


def stereo_24bit_wav(x: np.ndarray, rate: int) -> bytes:
    ints = np.round(np.clip(x, -1, 1) * (2**23 - 1)).astype("<i4")
    b = ints.view(np.uint8).reshape(-1, 4)[:, :3]
    frames = np.concatenate([b, b], axis=1).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def float_wav(x: np.ndarray, rate: int) -> bytes:
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


# ---------------------------------------------------------------- bad input

_X, _RATE = recording(130)

BAD_INPUTS = [
    ({}, "no audio given"),
    ({"audio": None}, "no audio given"),
    ({"audio": b""}, "empty"),
    ({"audio": ""}, "empty"),
    ({"audio": b"ID3\x04\x00\x00" + bytes(2000)}, "not a WAV file"),
    ({"audio": b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(40)}, "not a readable PCM WAV"),
    ({"audio": float_wav(_X, _RATE)}, "not a readable PCM WAV"),
    ({"audio": wav_bytes(np.zeros(0))}, "no samples"),
    ({"audio": "this is not base64!"}, "not valid base64"),
    ({"audio": base64.b64encode(b"hello world, plain text").decode()}, "not a WAV file"),
    ({"audio": 42}, "type int"),
    ({"audio": (_X * 32767).astype(np.int16), "sampleRate": _RATE}, "dtype int16"),
    ({"audio": _X.astype(np.complex64), "sampleRate": _RATE}, "dtype complex64"),
    ({"audio": [0.1, "x", 0.2], "sampleRate": 16000}, "must hold numbers"),
    ({"audio": [[0.1, 0.2], [0.3]], "sampleRate": 16000}, "flat list"),
    ({"audio": np.stack([_X, _X]), "sampleRate": _RATE}, "must be 1-D"),
    ({"audio": _X.tolist()}, "needs 'sampleRate'"),
    ({"audio": _X, "sampleRate": "16k"}, "sampleRate must be a number"),
    ({"audio": _X, "sampleRate": 100}, "outside"),
    (
        {
            "audio": np.where(np.arange(_X.size) == 500, np.nan, _X).astype(np.float32),
            "sampleRate": _RATE,
        },
        "NaN",
    ),
    ({"audio": _X[:2000], "sampleRate": _RATE}, "too short"),
    ({"audio": np.zeros(_RATE, np.float32), "sampleRate": _RATE}, "silent"),
    ({"audio": wav_bytes(_X), "minPauseMs": -5}, "minPauseMs"),
    ({"audio": wav_bytes(_X), "learnerId": 7}, "learnerId"),
    ({"audio": wav_bytes(_X), "recordedAtMs": 10**400}, "recordedAtMs must be epoch milliseconds"),
    (
        {"audio": wav_bytes(_X), "recordedAtMs": float("nan")},
        "recordedAtMs must be epoch milliseconds",
    ),
    ({"path": "/nonexistent/x.wav"}, "cannot read path"),
    ("just a string", "input must be an object"),
]


@pytest.mark.parametrize("inp, needle", BAD_INPUTS, ids=[n for _, n in BAD_INPUTS])
async def test_bad_audio_is_a_clear_non_retryable_error(agent, inp, needle):
    with pytest.raises(AgentError) as info:
        await agent.process("analyze_speech", inp, CTX)
    msg = str(info.value)
    assert info.value.retryable is False
    assert "speech-agent-1" in msg and "analyze_speech" in msg and needle in msg, msg
    assert info.value.__cause__ is None and "Traceback" not in msg


async def test_white_noise_is_not_speech(agent):
    # white noise: energy everywhere but no voicing -> no syllable nuclei
    x = np.random.default_rng(0).normal(0, 0.1, 16_000).astype(np.float32)
    with pytest.raises(AgentError, match="no speech detected") as info:
        await agent.process("analyze_speech", {"audio": x, "sampleRate": 16_000}, CTX)
    assert info.value.retryable is False


async def test_unknown_action_and_bad_progress_input(agent):
    with pytest.raises(AgentError, match="has no action 'transcribe'.*analyze_speech") as info:
        await agent.process("transcribe", {}, CTX)
    assert info.value.retryable is False
    for inp, needle in [
        ({}, "learnerId"),
        ({"learnerId": "l1", "days": -1}, "days"),
        ({"learnerId": "l1", "days": "7"}, "days"),
    ]:
        with pytest.raises(AgentError, match=needle) as info:
            await agent.process("analyze_speech_progress", inp, CTX)
        assert info.value.retryable is False


# ---------------------------------------------------------------- progress


async def test_progress_without_analyses_says_so_with_low_confidence():
    agent = SpeechAnalysisAgent("speech-agent-2")
    resp = await agent.process("analyze_speech_progress", {"learnerId": "nobody", "days": 7}, CTX)
    assert resp.confidence <= 0.2 and resp.data["sessions"] == 0
    assert "no speech analyses stored" in resp.reasoning


async def test_progress_summarises_this_learners_stored_analyses(agent, analyses):
    now = time.time() * 1000
    day = 86_400_000
    x, rate = recording(160)
    paused = insert_silences(x, rate, analyses[160].data["rate"]["nucleiMs"], 1500.0, 3)
    for inp in [
        {
            "audio": paused,
            "sampleRate": rate,
            "recordedAtMs": now - 10 * day,
        },  # hesitant, 10 days ago
        {"audio": wav_bytes(x), "recordedAtMs": now - 1 * day},  # fluent, yesterday
        {
            "audio": (DATA / "rate_100wpm.wav").read_bytes(),
            "recordedAtMs": now - 90 * day,
        },  # too old
    ]:
        await agent.process("analyze_speech", {"learnerId": "ana", **inp}, CTX)
    await agent.process("analyze_speech", {"learnerId": "ben", "audio": wav_bytes(x)}, CTX)

    resp = await agent.process("analyze_speech_progress", {"learnerId": "ana", "days": 30}, CTX)
    d = resp.data
    assert d["sessions"] == 2 and d["trend"] == "improving" and d["fluencyChange"] > 0.2
    assert d["firstRecordedAtMs"] == pytest.approx(now - 10 * day)
    assert resp.confidence > 0.5
    recent = await agent.process("analyze_speech_progress", {"learnerId": "ana", "days": 2}, CTX)
    assert recent.data["sessions"] == 1 and recent.data["trend"] == "stable"
    assert len(agent.history("ana")) == 3 and len(agent.history("ben")) == 1


# ---------------------------------------------------------------- model


def test_committed_model_beats_the_mean_on_held_out_sentences():
    import csv

    rows = list(csv.DictReader(open(DATA / "fluency_train.csv")))
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows], np.float32)
    y = np.array([float(r["fluency"]) for r in rows])
    test = np.array([r["split"] == "test" for r in rows])
    pred = load_fluency_model(DATA / "fluency_model.npz")(x[test]).numpy()[:, 0]
    mae, baseline = np.mean(np.abs(pred - y[test])), np.mean(np.abs(y[~test].mean() - y[test]))
    print(f"held-out MAE {mae:.3f} vs baseline {baseline:.3f}")
    assert test.sum() >= 40 and mae < 0.05 and mae < baseline / 3


async def test_without_weights_the_model_is_retrained_from_the_csv(analyses, tmp_path):
    agent = SpeechAnalysisAgent("speech-agent-3", model_path=tmp_path / "missing.npz", seed=0)
    await agent.initialize()
    resp = await agent.process(
        "analyze_speech", {"audio": (DATA / "rate_160wpm.wav").read_bytes()}, CTX
    )
    assert resp.data["fluency"]["score"] == pytest.approx(
        analyses[160].data["fluency"]["score"], abs=0.02
    )
    broken = SpeechAnalysisAgent(
        "speech-agent-4", model_path=tmp_path / "no.npz", train_path=tmp_path / "no.csv"
    )
    with pytest.raises(AgentError, match="speech_corpus.py") as info:
        await broken.initialize()
    assert info.value.retryable is False


@pytest.mark.parametrize(
    "name, content", [("bad.npz", b"not a zip"), ("bad.csv", b"split,fluency\ntrain,0.5\n")]
)
async def test_a_corrupt_model_or_training_file_is_a_clear_agent_error(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    agent = SpeechAnalysisAgent(
        "speech-agent-5",
        model_path=tmp_path / name if name.endswith("npz") else tmp_path / "none.npz",
        train_path=tmp_path / name,
    )
    with pytest.raises(AgentError, match=rf"speech-agent-5.*{name}.*regenerate") as info:
        await agent.initialize()
    assert info.value.retryable is False


# ---------------------------------------------------------------- live orchestrator


async def test_speech_plan_runs_live_through_the_orchestrator():
    import orchkit as ok

    orch = ok.Orchestrator(seed=1)
    await orch.register_agent(SpeechAnalysisAgent("speech-agent-live"))
    now = time.time() * 1000
    b64 = base64.b64encode((DATA / "rate_190wpm.wav").read_bytes()).decode()
    plan = {
        "id": "speech-plan",
        "parallel": True,
        "steps": [
            {
                "id": "slow",
                "agentId": "speech-agent-live",
                "action": "analyze_speech",
                "input": {
                    "path": str(DATA / "rate_100wpm.wav"),
                    "learnerId": "kim",
                    "recordedAtMs": now - 86_400_000,
                },
            },
            {
                "id": "fast",
                "agentId": "speech-agent-live",
                "action": "analyze_speech",
                "input": {"audio": b64, "learnerId": "kim"},
            },
            {
                "id": "corrupt",
                "agentId": "speech-agent-live",
                "action": "analyze_speech",
                "input": {"audio": base64.b64encode(b"definitely not audio").decode()},
                "retryPolicy": {"maxRetries": 3, "backoffMs": 10},
            },
            {
                "id": "progress",
                "agentId": "speech-agent-live",
                "action": "analyze_speech_progress",
                "input": {"learnerId": "kim", "days": 7},
                "dependencies": ["slow", "fast"],
            },
        ],
    }
    result = await orch.orchestrate(plan)
    await orch.shutdown()
    assert result.step_states == {
        "slow": "succeeded",
        "fast": "succeeded",
        "corrupt": "failed",
        "progress": "succeeded",
    }
    assert "not a WAV file" in result.errors["corrupt"]
    spans = result.spans
    assert (
        len(spans[spans.step_id == "corrupt"]) == 1
    )  # non-retryable: no retries despite maxRetries=3
    progress = result.results["progress"].data
    assert progress["sessions"] == 2 and progress["wordsPerMinuteChange"] > 50
