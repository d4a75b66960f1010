"""The step benchmark's command line: which models and how many timed
steps (``python -m cil_jax.bench --models mlp --steps 300``)."""

import pytest

from cil_jax.bench import settings as bench_settings


def test_models_and_steps_narrow_the_full_settings():
  settings = bench_settings.resolve_settings(False, ["mlp"], 300)
  assert settings.models == ("mlp",)
  assert settings.member_models == ("mlp",)
  assert settings.steps == 300
  assert settings.warmup == bench_settings.FULL.warmup


def test_a_model_without_members_benchmarks_no_members():
  settings = bench_settings.resolve_settings(True, ["cnn"])
  assert settings.models == ("cnn",)
  assert settings.member_models == ()
  assert settings.steps == bench_settings.QUICK.steps


def test_defaults_are_the_named_settings():
  assert bench_settings.resolve_settings(False) == bench_settings.FULL
  assert bench_settings.resolve_settings(True) == bench_settings.QUICK


@pytest.mark.parametrize("models,steps,message", [
    (["vit"], None, r"--models: unknown \['vit'\]; choose from"),
    (None, 0, "--steps must be at least 1, not 0"),
])
def test_bad_flags_name_the_flag_and_the_choices(models, steps, message):
  with pytest.raises(ValueError, match=message):
    bench_settings.resolve_settings(False, models, steps)
