"""kdbench/engine/teacher.py: the teacher store's key holds a hash of the recipe that trains the teacher, so
differently trained teachers never share an entry; entries written before the hash stay readable."""

from __future__ import annotations

from hydra import compose, initialize_config_module

from kdbench.engine.teacher import store_dir


def cfg_with(tmp_path, *overrides):
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[f"store={tmp_path}", "teacher=resnet8", "trainer.epochs=3",
                                                        *overrides])


def test_the_recipe_decides_the_key_and_how_it_runs_does_not(tmp_path):
    base = store_dir(cfg_with(tmp_path), "cifar100")
    assert base.name.startswith("e3-s0-r") and len(base.name) == len("e3-s0-r") + 8
    for recipe_change in ("optim.lr=0.1", "trainer.batch_size=128", "dataset.augment=none", "optim.milestones=[1,2]"):
        assert store_dir(cfg_with(tmp_path, recipe_change), "cifar100") != base, recipe_change
    for run_change in ("trainer.device=cpu", "trainer.loader=torch", "trainer.log_every_n_steps=7", "dataset.root=/x",
                       "dataset.num_workers=3", "logger.mode=disabled", "method=dkd", "student=resnet20", "seed=5"):
        assert store_dir(cfg_with(tmp_path, run_change), "cifar100") == base, run_change


def test_an_entry_from_before_recipe_hashes_is_still_used(tmp_path):
    cfg = cfg_with(tmp_path)
    legacy = tmp_path / "teachers" / "cifar100" / "resnet8" / "e3-s0"
    legacy.mkdir(parents=True)
    (legacy / "teacher.pth").write_bytes(b"x")
    (legacy / "meta.json").write_text("{}")
    assert store_dir(cfg, "cifar100") == legacy
    hashed = tmp_path / "teachers" / "cifar100" / "resnet8" / f"e3-s0-r{store_dir(cfg_with(tmp_path / 'other'), 'x').name.split('-r')[1]}"
    hashed.mkdir(parents=True)
    (hashed / "teacher.pth").write_bytes(b"y")
    assert store_dir(cfg, "cifar100") == hashed  # a hashed entry wins once it exists
