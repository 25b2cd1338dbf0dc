"""Config loading, overrides, validation, resume identity; the sampler and the lr schedule."""

from __future__ import annotations

import pytest
import torch

from pretrain.config import config_hash, load_config, parse_override, resume_identity
from pretrain.data.sampler import GlobalBatchSampler
from pretrain.errors import UserError
from pretrain.optim import LARS, lr_factor
from pretrain.trainer import check_resume_compatible
from tests.conftest import REPO

CONFIGS = sorted((REPO / "pretrain" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_resolve(path):
    config = load_config(path)
    assert config.method_name in ("sl", "sl-mlp", "look")
    assert config.name == path.stem  # the run directory is named after the file
    # the resolved form reloads to the same config
    assert load_config(None, [f"{k}={v}" for k, v in _flat(config.to_dict())]).to_dict() == config.to_dict()


def _flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "method":
            yield from _flat(value, f"{prefix}{key}.")
        elif key == "method":
            for mk, mv in value.items():
                yield f"method.{mk}", mv
        else:
            yield f"{prefix}{key}", "null" if value is None else value


def test_look_defaults_are_filled_in():
    config = load_config(None, ["method.name=look"])
    assert config.method == {"name": "look", "k": 50, "temperature": 0.1, "momentum": 0.5, "embed_dim": 128,
                             "hidden_dim": 2048, "chunk_size": 262144, "memory_seed": 0, "search_dtype": "float32",
                             "search_kernel": "torch", "compile": False,
                             "compile_mode": "default"}


def test_numbers_in_yaml_exponent_form_are_floats():
    assert load_config(None, ["optim.lr_per_256=1e-4"]).optim.lr_per_256 == pytest.approx(1e-4)
    with pytest.raises(UserError, match="'optim.lr_per_256' must be a number"):
        load_config(None, ["optim.lr_per_256=fast"])
    with pytest.raises(UserError, match="'train.amp'"):
        load_config(None, ["train.amp=[1]"])


def test_learning_rate_is_given_per_256_images_and_scaled_by_the_global_batch():
    config = load_config(REPO / "pretrain/configs/sl_imagenet_r50.yaml")
    assert config.optim.lr_per_256 == pytest.approx(0.1) and config.peak_lr == pytest.approx(0.4)  # batch 1024
    for batch in (64, 256, 4096):
        scaled = load_config(REPO / "pretrain/configs/sl_imagenet_r50.yaml", [f"train.batch_size={batch}"])
        assert scaled.peak_lr == pytest.approx(0.1 * batch / 256)
    # the old absolute key is refused with what to write instead, not silently ignored
    with pytest.raises(UserError, match="optim.lr was replaced by optim.lr_per_256"):
        load_config(None, ["optim.lr=0.4"])
    with pytest.raises(UserError, match="must be positive"):
        load_config(None, ["optim.lr_per_256=0"])


def test_override_parsing():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    assert parse_override("data.root=null") == {"data": {"root": None}}
    with pytest.raises(UserError, match="key=value"):
        parse_override("no-equals-sign")


def test_resume_identity_ignores_paths_and_logging_only():
    a = load_config(None, ["method.name=look"]).to_dict()
    b = load_config(None, ["method.name=look", "data.root=/elsewhere", "train.log_every=3", "data.workers=1"]).to_dict()
    c = load_config(None, ["method.name=look", "method.k=7"]).to_dict()
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert "method.k" in resume_identity(a)


def test_a_checkpoint_older_than_a_config_key_resumes_when_the_key_keeps_its_default(tmp_path):
    # A run written before `method.search_dtype` existed searched in float32: that is the default.
    older = load_config(None, ["method.name=look"]).to_dict()
    del older["method"]["search_dtype"]
    checkpoint = {"config": older, "dataset": {"images": 8}}
    check_resume_compatible(checkpoint, load_config(None, ["method.name=look"]), {"images": 8}, tmp_path)
    with pytest.raises(UserError, match="method.search_dtype: 'float32' in checkpoint, 'bfloat16' now"):
        check_resume_compatible(checkpoint, load_config(None, ["method.name=look", "method.search_dtype=bfloat16"]),
                                {"images": 8}, tmp_path)


def test_sampler_ranks_split_each_global_batch_and_resume_mid_epoch():
    single = list(GlobalBatchSampler(50, 8, seed=3))
    assert len(single) == 48 and len(set(single)) == 48  # 6 full batches, no repeats
    ranks = [list(GlobalBatchSampler(50, 8, rank=r, world_size=2, seed=3)) for r in (0, 1)]
    for step in range(6):
        together = ranks[0][step * 4:(step + 1) * 4] + ranks[1][step * 4:(step + 1) * 4]
        assert together == single[step * 8:(step + 1) * 8]
    resumed = GlobalBatchSampler(50, 8, seed=3)
    resumed.set_epoch(0, start_step=4)
    assert list(resumed) == single[32:] and len(resumed) == 16
    other_epoch = GlobalBatchSampler(50, 8, seed=3)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != single


def test_lr_schedule_warmup_then_cosine():
    factors = [lr_factor(s, 100, 10, 0.0) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] < 0.01
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_lars_scales_updates_by_trust_ratio_and_skips_excluded_groups():
    w = torch.nn.Parameter(torch.full((4, 4), 2.0))
    b = torch.nn.Parameter(torch.ones(4))
    opt = LARS([{"params": [w]}, {"params": [b], "lars_exclude": True}], lr=1.0, momentum=0.0, eta=0.01)
    w.grad, b.grad = torch.full((4, 4), 100.0), torch.full((4,), 0.5)
    opt.step()
    # trust = eta * |w| / |g| = 0.01 * 8 / 400; the step is lr * trust * g = 0.02 per element
    torch.testing.assert_close(w.detach(), torch.full((4, 4), 2.0 - 0.02))
    torch.testing.assert_close(b.detach(), torch.full((4,), 0.5))


def test_keys_added_later_leave_the_names_of_earlier_runs_unchanged():
    """Run directories are named by the config hash: a key added since, at its default, must not rename
    (and so orphan) the runs of configs written before it; at another value it is another run."""
    from pretrain.config import HASH_OMITS_AT_DEFAULT, config_hash

    config = load_config(None, ["method.name=look"]).to_dict()
    earlier = {**config, "model": {k: v for k, v in config["model"].items() if k != "stem"},
               "data": {k: v for k, v in config["data"].items() if k not in ("in_memory", "decoder")},
               "method": {k: v for k, v in config["method"].items()
                          if k not in ("search_kernel", "compile", "compile_mode")}}
    assert set(HASH_OMITS_AT_DEFAULT) == {"model.stem", "data.in_memory", "data.decoder", "method.search_kernel",
                                          "method.compile", "method.compile_mode"}
    assert config_hash(config) == config_hash(earlier)
    small = load_config(None, ["method.name=look", "model.stem=small"]).to_dict()
    assert config_hash(small) != config_hash(config)
    gpu = load_config(None, ["method.name=look", "data.decoder=gpu"]).to_dict()
    assert config_hash(gpu) != config_hash(config)
