"""The mixer registry: names, building by name, registering one's own mixer, the CLI's choices."""
import pytest
import torch

import tmix_aug as tm
from tmix_aug import BatchMixer, create_mixer, list_mixers, register_mixer
from tmix_aug.registry import mixer_class


def test_every_bundled_mixer_is_registered_and_built_by_name():
    assert list_mixers() == ["cutmix", "mixup", "mixup-cutmix", "none", "resizemix", "saliencymix", "transformmix"]
    assert list_mixers("mixup*") == ["mixup", "mixup-cutmix"]
    for name in list_mixers():
        mixer = create_mixer(name, 4)
        assert isinstance(mixer, mixer_class(name)) and mixer.num_classes == 4
    assert mixer_class("transformmix") is tm.TransformMix


def test_register_a_new_mixer(monkeypatch):
    from tmix_aug import registry

    monkeypatch.setattr(registry, "_MIXERS", dict(registry._MIXERS))

    @register_mixer("flip-mix")
    class FlipMix(tm.baselines.Mixup):
        pass

    assert "flip-mix" in list_mixers() and type(create_mixer("flip-mix", 3, alpha=0.5)) is FlipMix
    register_mixer("flip-mix")(FlipMix)  # the same class again is harmless
    with pytest.raises(ValueError, match="name: 'flip-mix' is already registered to FlipMix"):
        register_mixer("flip-mix")(tm.baselines.CutMix)
    with pytest.raises(TypeError, match="expected a BatchMixer subclass"):
        register_mixer("not-a-mixer")(dict)


def test_train_offers_exactly_the_registered_mixers():
    from tmix_aug import train

    action = next(a for a in train.build_parser()._actions if "--mixer" in a.option_strings)
    assert list(action.choices) == list_mixers()


def test_viz_is_not_imported_with_the_package():
    import subprocess
    import sys

    code = "import sys, tmix_aug as tm; assert 'tmix_aug.viz' not in sys.modules; tm.viz.save_mix_grid"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_mixers_are_batch_mixers_with_timms_switch():
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6) % 4
    for name in list_mixers():
        mixer = create_mixer(name, 4, label_smoothing=0.1)
        assert isinstance(mixer, BatchMixer) and mixer.mixup_enabled
        mixer.mixup_enabled = False
        out = mixer.mix(x, y, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.images, x), name
        assert torch.equal(out.targets, torch.nn.functional.one_hot(y, 4).float() * 0.9 + 0.1 / 4), name
