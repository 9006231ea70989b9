"""The adversary's view under DP: runs on neighbouring datasets differ only in mechanism outputs.

Every DP guarantee covers everything an observer sees. These tests run one configuration on a
site dataset D and on D' = D minus one record (a random record, and the only record of a class),
with every random source fixed (``os.urandom`` replaced by a call-indexed deterministic stream,
the noise source fixed through :func:`privacy.noise.fixed_noise_source`), and capture

* everything that leaves each site (every reply message: its kind, metadata, tensors and, for
  aggregation replies, the inner protocol message), and
* everything written to the run directory (every file, JSON field by field).

They assert that every item is identical except the released update (site → server in record
mode; the server's aggregate in client and distributed mode) and what is computed from the
released model (test accuracy, the checkpointed weights), and that the released update moves by
at most the mechanism's sensitivity (one round, one DP step, plain SGD, so the release is an
affine function of the noised sum). They also assert that no timing is sent or recorded.

On the code before the egress fix they fail: the info reply and ``sites.json`` carry the record
count, the train reply carries ``train_s``, ``metrics.jsonl`` carries ``wall_s``, and removing the
only record of a class re-planned the episodes (the class list came from the shard's labels).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privacy import sampling
from secfed import components
from secfed.config import config_from_dict
from secfed.experiment import Experiment
from secfed.federation.backends import SequentialBackend
from secfed.federation.messages import decode_message
from secfed.learners import LEARNERS as LEARNER_REGISTRY
from secfed.learners import learner_class

REPO = Path(__file__).resolve().parents[3]
C = 1.0  # max_grad_norm
B = 4  # privacy.expected_batch, the public normaliser of per-record DP steps
E = 2  # privacy.episodes_per_step, the public normaliser of per-episode DP steps
LR = 0.5
TARGET_SITE = 0
#: Fields computed from the released model (post-processing), allowed to differ.
MODEL_DERIVED = {"test_accuracy", "test_accuracy_ci95"}
#: Fields that differ between any two runs whatever the data (clock, paths), normalised away.
RUN_SPECIFIC = {
    "created",
    "created_unix",
    "time_unix",
    "time",
    "timestamp",
    "run_dir",
    "code_version",
    # the ledger's chain values cover the clock too; every field they cover is compared itself
    "hash",
    "prev",
    "prev_hash",
    "mac",
    "prev_mac",
}
TIMING_KEYS = {"elapsed"}  # and every key ending in "_s" (seconds)


def _config(mode: str, learner: str) -> dict[str, Any]:
    lr: dict[str, Any] = {"name": learner, "local_steps": 1, "local_lr": LR, "local_optimizer": "sgd"}
    if learner in ("maml", "fomaml", "reptile"):
        lr.update(inner_steps=1, inner_lr=0.1, inner_optimizer="sgd")
    if learner == "reptile":
        lr.update(meta_batch=1, local_lr=1.0)
    privacy: dict[str, Any] = {
        "mode": mode,
        "noise_multiplier": 1.0,
        "max_grad_norm": C,
        "sample_rate": 0.3,
        "expected_batch": B,
        "episodes_per_step": E,
    }
    federation: dict[str, Any] = {"server_lr": 1.0, "server_optimizer": "sgd"}
    if mode == "distributed":
        federation["aggregation"] = "secagg"
        privacy.update(mechanism="ddg", bits=24)
    return {
        "experiment": {
            "rounds": 1,
            "eval_every": 0,
            "eval_episodes": 5,
            "final_eval_episodes": 10,
            "seed": 5,
        },
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 2, "k_shot": 1, "q_query": 2, "test_n_way": 2, "test_q_query": 2},
        "model": {"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
        "learner": lr,
        "federation": federation,
        "privacy": privacy,
        "secagg": {"corrupt_fraction": 0.0},
    }


# ------------------------------------------------------------------------------------------------
# Fixing every random source
# ------------------------------------------------------------------------------------------------
class _DeterministicUrandom:
    """``os.urandom`` replaced by bytes that depend only on where it is called from and how often.

    The i-th call from one line of code returns a prefix of an expansion of ``sha256(line, i)``, so
    two runs that make the same calls from each line get the same bytes, whatever the lengths
    asked for, and a library's one-off call at import time shifts nothing else.
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, n: int) -> bytes:
        caller = sys._getframe(1)
        where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
        self.calls[where] = index = self.calls.get(where, 0) + 1
        out = bytearray()
        block = 0
        while len(out) < n:
            out += hashlib.sha256(f"urandom/{where}/{index}/{block}".encode()).digest()
            block += 1
        return bytes(out[:n])


@contextlib.contextmanager
def _fixed_noise() -> Iterator[None]:
    try:
        from privacy.noise import fixed_noise_source
    except ImportError:  # before the noise module existed: urandom fixes torch's reseeded generator
        yield
        return
    with fixed_noise_source(seed="neighbouring-transcripts"):
        yield


# ------------------------------------------------------------------------------------------------
# Capturing what leaves the sites and what the run directory holds
# ------------------------------------------------------------------------------------------------
def _decode(data: bytes) -> dict[str, Any]:
    msg = decode_message(data)
    out: dict[str, Any] = {
        "kind": msg.kind,
        "meta": msg.meta,
        "tensors": {k: np.asarray(v) for k, v in msg.tensors.items()},
    }
    if msg.blob:
        try:
            out["inner"] = _decode(msg.blob)
        except Exception:  # an opaque protocol message (SecAgg): compared by length only
            out["inner_len"] = len(msg.blob)
    return out


def _run(
    tmp: Path, cfg_dict: dict[str, Any], shard_edit: Any, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    replies: list[tuple[int, dict[str, Any]]] = []
    original_request = SequentialBackend.request

    def recording_request(self: SequentialBackend, *, messages: dict[int, bytes]) -> dict[int, bytes]:
        out = original_request(self, messages=messages)
        replies.extend((sid, _decode(data)) for sid, data in sorted(out.items()))
        return out

    original_partition = components._partition

    def edited_partition(*, config: Any, dataset: Any, num_sites: int, seed: int) -> list[np.ndarray]:
        shards = original_partition(config=config, dataset=dataset, num_sites=num_sites, seed=seed)
        shards[TARGET_SITE] = shard_edit(shards[TARGET_SITE], dataset.labels)
        return shards

    slots: list[tuple[tuple[int, ...], list[list[int]]]] = []
    original_slots = sampling.draw_slots

    def recording_slots(*, classes: Any, **kwargs: Any) -> np.ndarray:
        plan = original_slots(classes=classes, **kwargs)
        slots.append((tuple(int(c) for c in classes), np.asarray(plan).tolist()))
        return plan

    with monkeypatch.context() as m:
        m.setattr(sampling, "draw_slots", recording_slots)
        m.setattr(SequentialBackend, "request", recording_request)
        m.setattr(components, "_partition", edited_partition)
        m.setattr(os, "urandom", _DeterministicUrandom())
        m.setenv("SECFED_KEY_DIR", str(tmp / "keys"))
        with _fixed_noise():
            Experiment(config=config_from_dict(cfg_dict, base_dir=REPO)).run(
                out_dir=tmp / "run", progress=False
            )
    files: dict[str, Any] = {}
    for path in sorted((tmp / "run").rglob("*")):
        if path.is_file():
            rel = str(path.relative_to(tmp / "run"))
            if path.suffix == ".safetensors":
                from safetensors.numpy import load_file

                files[rel] = load_file(str(path))
            else:
                files[rel] = path.read_bytes()
    return {"replies": replies, "files": files, "slots": slots}


def _json_items(raw: bytes, name: str) -> list[Any]:
    text = raw.decode("utf-8")
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if name.endswith(".json"):
        return [json.loads(text)]
    return [text]


def _strip(value: Any) -> Any:
    """Drop run-specific and model-derived fields (recursively)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in RUN_SPECIFIC | MODEL_DERIVED}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _timings(value: Any) -> set[str]:
    """Names of timing fields that hold a value (``None`` marks a withheld one)."""
    if isinstance(value, dict):
        own = {k for k, v in value.items() if (k in TIMING_KEYS or k.endswith("_s")) and v is not None}
        return own | {k for v in value.values() for k in _timings(v)}
    if isinstance(value, list):
        return {k for v in value for k in _timings(v)}
    return set()


# ------------------------------------------------------------------------------------------------
# The comparison
# ------------------------------------------------------------------------------------------------
def _released_bound(mode: str, learner: str) -> float:
    """How far the release may move when one record is removed (one round, one DP step, SGD)."""
    if mode == "record":
        # episodic: one episode's clipped gradient changes, ||g - g'|| <= 2C, and the noisy sum is
        # divided by the E slots of a step; per-sample: C, divided by B.
        if learner_class(learner).episodic:
            return LR * 2 * C / E
        return LR * C / B if learner != "reptile" else 0.1 * C / B
    # client / distributed: the site's whole update is clipped to C, so it moves by <= 2C;
    # the server releases it inside a sum divided by a public count (>= 1).
    return 2 * C


def _compare(d: dict[str, Any], d_prime: dict[str, Any], *, mode: str, learner: str) -> None:
    bound = _released_bound(mode, learner) * (1 + 1e-4) + 1e-6
    # 0. the public episode plans (they may be published): identical
    assert d["slots"] == d_prime["slots"], "the public slot plan depends on the data"
    # 1. what left each site
    assert [(s, r["kind"]) for s, r in d["replies"]] == [(s, r["kind"]) for s, r in d_prime["replies"]]
    for (sid, a), (_, b) in zip(d["replies"], d_prime["replies"], strict=True):
        assert not _timings(a["meta"]), f"site {sid} sent a timing: {a['meta']}"
        assert a["meta"] == b["meta"], f"site {sid} {a['kind']}: {a['meta']} != {b['meta']}"
        for part in ("inner",):
            if part in a:
                assert a[part]["meta"] == b[part]["meta"]
                assert set(a[part]["tensors"]) == set(b[part]["tensors"])
                for name, va in a[part]["tensors"].items():
                    vb = b[part]["tensors"][name]
                    assert va.shape == vb.shape
                    if sid == TARGET_SITE and name == "weighted_update" and mode != "distributed":
                        # the site's release: moves by at most the sensitivity (record mode), or
                        # by at most 2C before the trusted aggregator's noise (client mode)
                        site_bound = bound if mode == "record" else 2 * C
                        assert float(np.linalg.norm(va - vb)) <= site_bound * (1 + 1e-4) + 1e-6
                    elif mode != "distributed":
                        np.testing.assert_array_equal(va, vb, err_msg=f"site {sid} tensor {name}")
        assert a.get("inner_len") == b.get("inner_len")
        if a["kind"] != "agg_reply":
            assert set(a["tensors"]) == set(b["tensors"])
            for name, va in a["tensors"].items():
                np.testing.assert_array_equal(va, b["tensors"][name], err_msg=f"site {sid} tensor {name}")
    # 2. the run directory
    assert set(d["files"]) == set(d_prime["files"]), set(d["files"]) ^ set(d_prime["files"])
    for name, va in d["files"].items():
        vb = d_prime["files"][name]
        if isinstance(va, dict):  # safetensors: the released model (post-processing of the release)
            state_a, state_b = va["state"].astype(np.float64), vb["state"].astype(np.float64)
            assert float(np.linalg.norm(state_a - state_b)) <= bound, name
            continue
        items_a, items_b = _json_items(va, name), _json_items(vb, name)
        for item in items_a:
            assert not _timings(item), f"{name} records a timing"
        if name.endswith(".toml") or name.endswith(".json") or name.endswith(".jsonl"):
            assert _strip(items_a) == _strip(items_b), name
        elif not name.endswith(".key"):
            assert va == vb, name


LEARNERS = tuple(LEARNER_REGISTRY)
CASES = (
    [("record", name) for name in LEARNERS]
    + [("client", name) for name in LEARNERS]
    + [("distributed", name) for name in ("protonet", "reptile")]
)


def _drop_random_record(shard: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.delete(shard, 7)


def _keep_one_of_first_class(shard: np.ndarray, labels: np.ndarray) -> np.ndarray:
    first = labels[shard[0]]
    of_class = shard[labels[shard] == first]
    return np.setdiff1d(shard, of_class[1:])


@pytest.mark.parametrize(("mode", "learner"), CASES)
def test_removing_a_record_changes_only_the_mechanism_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, learner: str
) -> None:
    cfg = _config(mode, learner)
    d = _run(tmp_path / "d", cfg, lambda s, y: s, monkeypatch)
    d_prime = _run(tmp_path / "d1", cfg, _drop_random_record, monkeypatch)
    _compare(d, d_prime, mode=mode, learner=learner)


@pytest.mark.parametrize("learner", ["protonet", "maml", "reptile", "fedavg"])
def test_removing_the_only_record_of_a_class_changes_only_the_mechanism_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learner: str
) -> None:
    cfg = _config("record", learner)

    def only_record_removed(shard: np.ndarray, labels: np.ndarray) -> np.ndarray:
        kept = _keep_one_of_first_class(shard, labels)
        first = labels[shard[0]]
        return kept[labels[kept] != first]

    d = _run(tmp_path / "d", cfg, _keep_one_of_first_class, monkeypatch)
    d_prime = _run(tmp_path / "d1", cfg, only_record_removed, monkeypatch)
    _compare(d, d_prime, mode="record", learner=learner)


def test_the_transcript_check_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A site that sends its record count is caught (the check is not vacuous)."""
    from secfed.federation import egress

    original = egress.SiteEgress.info

    def leaky_info(self: egress.SiteEgress, facts: egress.SiteFacts) -> dict[str, Any]:
        return {**original(self, facts), "leak": facts.records}

    cfg = _config("record", "protonet")
    monkeypatch.setattr(egress.SiteEgress, "info", leaky_info)
    d = _run(tmp_path / "d", cfg, lambda s, y: s, monkeypatch)
    d_prime = _run(tmp_path / "d1", cfg, _drop_random_record, monkeypatch)
    with pytest.raises(AssertionError, match="info_reply"):
        _compare(d, d_prime, mode="record", learner="protonet")


def test_noise_sharing_removing_a_record_changes_only_the_released_sum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record mode with the noise split across sites under SecAgg (secfed.dp.sharing): the sites'
    messages are opaque protocol messages of equal length, and the released model moves by at most
    LR·2C/E divided by the survivors (the site's clipped sum inside the sum; lattice rounding adds
    at most σ·2^-20)."""
    cfg = _config("record", "protonet")
    cfg["federation"]["aggregation"] = "secagg"
    cfg["privacy"]["noise_sharing"] = True
    d = _run(tmp_path / "d", cfg, lambda s, y: s, monkeypatch)
    d_prime = _run(tmp_path / "d1", cfg, _drop_random_record, monkeypatch)
    _compare(d, d_prime, mode="record", learner="protonet")
    ledger = [json.loads(x) for x in d["files"]["privacy_ledger.jsonl"].decode().splitlines() if x.strip()]
    assert all(
        rec["params"]["noise_sharing"]["colluding_sites"] == 0
        for e in ledger
        for rec in (e.get("sites") or {}).values()
    )
