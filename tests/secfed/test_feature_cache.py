"""The per-record scattering feature cache (``model.cache_features``, issue 17).

The scattering transform is a fixed public function of each record, so computing it once when the
data is loaded must change nothing but the time:

* a whole record-level DP run (fixed noise) releases the same states with and without the cache,
  and with the cache the transform sees each record once instead of at every use;
* the model (state dict, parameter names) is the same module, and it still takes raw records;
* what a reader of the site's data sees (``Site.dataset``: attacks compare reconstructions with
  it) stays the raw records;
* features are keyed by the data and every setting of the transform: a different ``J``, ``L`` or
  image size never reuses them, and a model refuses features of another transform;
* configurations that need raw pixels (``privacy.augmult > 1``) or have no scattering front-end
  are refused.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from secfed_config_dicts import small_digits_dict

from privacy.noise import fixed_noise_source
from secfed import components
from secfed.config import ExperimentConfig, config_from_dict
from secfed.errors import ConfigError
from secfed.experiment import Experiment, load_checkpoint_arrays
from secfed.models import feature_cache as feature_mod
from secfed.models.build import build_model
from secfed.models.feature_cache import clear_feature_memo, feature_key, featurize, featurize_images
from secfed.models.scatter import ScatterModel

REPO = Path(__file__).resolve().parents[2]


def _digits_dp(*, cache: bool, **extra: Any) -> ExperimentConfig:
    raw = small_digits_dict(
        experiment={"rounds": 2, "final_eval_episodes": 10, "seed": 3},
        model={
            "arch": "mlp",
            "hidden": 16,
            "norm": "group",
            "groups": 4,
            "layers": 1,
            "frontend": "scatter",
            "scatter_j": 1,
            "scatter_l": 4,
            "cache_features": cache,
        },
        learner={"name": "protonet", "local_steps": 2, "local_lr": 0.05},
        privacy={"mode": "record", "noise_multiplier": 1.0, "sample_rate": 0.5, "episodes_per_step": 4},
    )
    for dotted, value in extra.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    return config_from_dict(raw, base_dir=REPO)


class _CountRaw:
    """Counts the records the model itself sends through the scattering front-end."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.records = 0
        original = ScatterModel.front

        def counting(model: ScatterModel, x: torch.Tensor) -> torch.Tensor:
            if tuple(x.shape[1:]) == model.input_shape:
                self.records += int(x.shape[0])
            return original(model, x)

        monkeypatch.setattr(ScatterModel, "front", counting)


def _fixed_site_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """TEST ONLY: the sites' secret sampling seeds (normally ``os.urandom``) made constant, so
    that two runs draw the same private episodes."""
    import secfed.dp.site.episodic as dp_site  # where the episodic hook draws its secret seed

    monkeypatch.setattr(dp_site, "os", types.SimpleNamespace(urandom=lambda n: bytes(range(n))))


def _final_state(config: ExperimentConfig, out: Path) -> np.ndarray:
    with fixed_noise_source(seed="feature-cache"):
        Experiment(config=config).run(out_dir=out, progress=False)
    files = sorted((out / "checkpoint").glob("model-*.safetensors"))
    return load_checkpoint_arrays(files[-1])["state"]


def test_dp_run_releases_the_same_states_with_and_without_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_feature_memo()
    _fixed_site_secrets(monkeypatch)
    counter = _CountRaw(monkeypatch)
    plain = _final_state(_digits_dp(cache=False), tmp_path / "plain")
    transformed_plain = counter.records
    counter.records = 0
    cached = _final_state(_digits_dp(cache=True), tmp_path / "cached")
    transformed_cached = counter.records
    # Same update: a record's features do not depend on how they were batched.
    np.testing.assert_allclose(cached, plain, rtol=0, atol=1e-6)
    assert not np.array_equal(
        plain, _final_state(_digits_dp(cache=False, experiment__seed=4), tmp_path / "s4")
    )
    # The cache is used: with it the model never transforms a record (training and evaluation
    # get the features computed once at load time); without it, every use transforms again.
    assert transformed_cached == 0 and transformed_plain > 0


def test_one_dp_step_same_update_on_omniglot_conv4(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's model (ScatterNet J = 2, L = 8 on 28x28, GroupNorm Conv-4): the clipped,
    noised, normalised update of a site's record-level DP round is the same on cached features."""
    from secfed.federation.state import flat_state, state_spec

    base = config_from_dict(
        {
            "experiment": {"seed": 0},
            "data": {"dataset": "omniglot", "root": "", "val_alphabets": ["Latin"], "test_rotations": True},
            "partition": {"scheme": "class_disjoint", "num_sites": 5},
            "task": {"n_way": 5, "k_shot": 1, "q_query": 1},
            "model": {"frontend": "scatter", "norm": "group", "hidden": 16, "groups": 4, "trainable": "last"},
            "learner": {"name": "protonet", "local_steps": 1, "local_lr": 0.01},
            "privacy": {
                "mode": "record",
                "noise_multiplier": 1.0,
                "sample_rate": 0.5,
                "episodes_per_step": 2,
            },
        },
        base_dir=REPO,
    )
    _fixed_site_secrets(monkeypatch)
    deltas = []
    for cache in (False, True):
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, cache_features=cache))
        site = components.build_site(config=cfg, site_id=1)
        torch.manual_seed(0)
        model = components.build_model(config=cfg, input_shape=site.input_shape)
        before = flat_state(model, spec=state_spec(model)).copy()
        with fixed_noise_source(seed="one-step"):
            privacy = components.build_site_privacy(config=cfg, site_id=1, site=site)
            update = privacy.local_update(
                learner=components.build_learner(config=cfg),
                model=model,
                site=site,
                rng=np.random.default_rng(7),
                round_idx=1,
            )
        deltas.append(
            np.concatenate([np.asarray(v, dtype=np.float64).ravel() for _, v in sorted(update.delta.items())])
        )
        assert np.abs(deltas[-1]).max() > 0 and deltas[-1].size <= before.size
    np.testing.assert_allclose(deltas[1], deltas[0], rtol=0, atol=1e-6)


def test_model_is_the_same_module_and_takes_raw_records() -> None:
    clear_feature_memo()
    cfg = _digits_dp(cache=True)
    train, _ = components.load_splits(config=cfg)
    torch.manual_seed(0)
    a = components.build_model(config=cfg, input_shape=train.input_shape)
    torch.manual_seed(0)
    b = components.build_model(config=_digits_dp(cache=False), input_shape=train.input_shape)
    assert isinstance(a, ScatterModel)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    raw = torch.from_numpy(np.array(train.images[:20]))
    feats = torch.from_numpy(np.array(featurize(model=cfg.model, dataset=train).images[:20]))
    assert tuple(feats.shape[1:]) == a.frontend.output_shape != tuple(raw.shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(a.embed(feats), a.embed(raw), rtol=0, atol=1e-6)


def test_site_keeps_its_raw_records_for_readers() -> None:
    """Attacks and the replicas compare against ``Site.dataset``: still the raw images in [0, 1]."""
    clear_feature_memo()
    cached = components.build_site(config=_digits_dp(cache=True), site_id=0)
    plain = components.build_site(config=_digits_dp(cache=False), site_id=0)
    np.testing.assert_array_equal(cached.dataset.images, plain.dataset.images)
    assert cached.dataset.input_shape == (1, 8, 8) and plain.inputs is None
    assert cached.inputs is not None and cached.inputs.shape == (cached.num_records, 5, 4, 4)
    np.testing.assert_array_equal(cached.model_inputs, cached.inputs)
    np.testing.assert_array_equal(plain.model_inputs, plain.dataset.images)


def test_features_are_keyed_by_data_and_every_setting() -> None:
    clear_feature_memo()
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 16, 16), dtype=np.float32)
    y = x.copy()
    y[0, 0, 0, 0] += 0.5
    first = featurize_images(images=x, J=1, L=4)
    assert featurize_images(images=x.copy(), J=1, L=4) is first  # memo hit on equal content
    shapes = {
        (1, 4): (6, 5, 8, 8),
        (1, 8): (6, 9, 8, 8),
        (2, 4): (6, 25, 4, 4),
    }
    for (j, ell), shape in shapes.items():
        out = featurize_images(images=x, J=j, L=ell)
        assert out.shape == shape, (j, ell)
    other = featurize_images(images=y, J=1, L=4)
    assert other is not first and not np.array_equal(other[0], first[0])
    np.testing.assert_array_equal(other[1:], first[1:])  # per record: the others are unchanged
    # a different image size with the same number of values is a different key
    flat = x.reshape(6, 1, 8, 32)
    assert feature_key(images=flat, J=1, L=4) != feature_key(images=x, J=1, L=4)
    assert featurize_images(images=flat, J=1, L=4).shape == (6, 5, 4, 16)
    keys = {feature_key(images=x, J=j, L=ell) for j, ell in shapes} | {feature_key(images=y, J=1, L=4)}
    assert len(keys) == 4
    # the memo holds exactly what the module computes for those settings
    from secfed.models.scatter import ScatterFeatures

    with torch.no_grad():
        ref = ScatterFeatures(input_shape=(1, 16, 16), J=1, L=8)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(featurize_images(images=x, J=1, L=8), ref, rtol=0, atol=1e-6)


def test_a_model_refuses_features_of_another_transform() -> None:
    model = build_model(
        arch="conv4", input_shape=(1, 28, 28), num_classes=None, norm="group", frontend="scatter"
    )
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    for j, ell in ((1, 8), (2, 4)):
        feats = torch.from_numpy(np.array(featurize_images(images=x, J=j, L=ell)))
        with pytest.raises(ConfigError, match="cached features"):
            model(feats)
    with pytest.raises(ConfigError, match="raw records"):
        model(torch.zeros(2, 1, 32, 32))


def test_refusals() -> None:
    with pytest.raises(ConfigError, match="model.cache_features.*frontend"):
        config_from_dict({"model": {"cache_features": True}}, base_dir=REPO)
    with pytest.raises(ConfigError, match="model.cache_features.*augmult"):
        _digits_dp(cache=True, privacy__augmult=2)
    _digits_dp(cache=False, privacy__augmult=2)  # the raw-pixel recipe itself is allowed
    with pytest.raises(ConfigError, match="must be a bool|cache_features"):
        config_from_dict({"model": {"frontend": "scatter", "cache_features": "yes"}}, base_dir=REPO)
    # featurize on a configuration built without validation still refuses a missing front-end
    cfg = _digits_dp(cache=True)
    bad = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frontend="none"))
    train, _ = components.load_splits(config=cfg)
    with pytest.raises(ConfigError, match="frontend"):
        featurize(model=bad.model, dataset=train)
    with pytest.raises(ConfigError, match="float32"):
        feature_key(images=np.zeros((2, 8, 8), dtype=np.float32), J=1, L=4)


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_feature_memo()
    monkeypatch.setattr(feature_mod, "_MEMO_BYTES", 1)
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    featurize_images(images=x, J=1, L=4)
    featurize_images(images=x + 1, J=1, L=4)
    assert len(feature_mod._MEMO) == 1
    clear_feature_memo()
