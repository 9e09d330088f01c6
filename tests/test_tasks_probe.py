"""The probe task (kdbench/tasks/probe.py): k-NN and linear probes on frozen embeddings, pinned to the reference.

Golden numbers: safelix/dinopl at commit cd39e7801397d0d11004205e3847f67e660b93d4, ``dinopl/probing.py``:
``Prober(encoders={'student': nn.Identity()}, analyses={'': LinearAnalysis(10), 'knn': KNNAnalysis(20)},
train_dl=DataLoader(TensorDataset(train), batch_size=256, shuffle=True, generator=torch.Generator()),
valid_dl=DataLoader(TensorDataset(test), batch_size=256), n_classes=5, normalize=True, seed=seed).probe()``
on the embeddings below (faiss-cpu 1.15.1 for the k-NN index; ``LinearAnalysis.train`` handed clones of its
batches, because this torch refuses the Prober's inference-mode tensors in autograd on the CPU).
"""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from kdbench.results.tasks import task_metrics
from kdbench.tasks import TASKS, task_of
from kdbench.tasks.probe import ProbeData, ProbeTask, knn_predict, linear_probe, probe_scores, standardise

# seed -> (probe/student, probe/student/knn, probe/norm/student, probe/norm/student/knn), in percent
REFERENCE = {0: (30.0, 64.0, 35.5, 66.5), 3: (28.5, 64.0, 46.5, 66.5)}
# LinearAnalysis(10) prepared with torch.Generator().manual_seed(0) and trained on the Prober's batches (the
# shuffle of a generator seeded 0 after the DataLoader's base-seed draw): weight sum, bias sum, weight[0, :4]
LINEAR_SEED0 = (-0.3619714705273509, -0.04265599139034748,
                [0.027407225221395493, 0.1633605808019638, -0.17629367113113403, -0.15616253018379211])


def embeddings(n, seed, classes=5, dim=16):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.sin(torch.arange(classes * dim, dtype=torch.float32).reshape(classes, dim) * 1.3) * 1.5
    scale = torch.linspace(0.5, 3.0, dim)  # features on other scales: standardisation matters
    return (centres[y] + 1.7 * torch.randn(n, dim, generator=g)) * scale + 2.0, y


@pytest.fixture(scope="module")
def data():
    (xtr, ytr), (xte, yte) = embeddings(600, 1), embeddings(200, 2)
    assert (xtr.sum().item(), xte.sum().item()) == pytest.approx((19544.61328125, 6671.0615234375))
    return xtr, ytr, xte, yte


@pytest.mark.parametrize("seed", sorted(REFERENCE))
def test_probe_accuracies_equal_the_reference(data, seed):
    linear, knn, linear_norm, knn_norm = REFERENCE[seed]
    assert probe_scores(*data, num_classes=5, seed=seed) == {
        "knn_top1": knn, "linear_top1": linear, "knn_norm_top1": knn_norm, "linear_norm_top1": linear_norm}


def test_linear_probe_weights_equal_the_reference(data):
    xtr, ytr, _, _ = data
    clf = linear_probe(xtr, ytr, 5, epochs=10, batch_size=256, seed=0)
    weight_sum, bias_sum, row = LINEAR_SEED0
    assert clf.weight.double().sum().item() == pytest.approx(weight_sum, abs=1e-6)
    assert clf.bias.double().sum().item() == pytest.approx(bias_sum, abs=1e-6)
    assert clf.weight[0, :4].tolist() == pytest.approx(row, abs=1e-6)


def test_linear_probe_runs_under_inference_mode(data):
    xtr, ytr, _, _ = data
    with torch.inference_mode():
        clf = linear_probe(xtr, ytr, 5, epochs=1, seed=0)
    assert torch.isfinite(clf.weight).all()


def test_knn_votes_and_ties():
    train = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    labels = torch.tensor([3, 1, 1, 0, 3])
    # nearest two of 0.4 are labels 3 and 1: a tie, the smaller label wins (torch.mode on the CPU)
    assert knn_predict(train, labels, torch.tensor([[0.4], [1.6], [10.4]]), k=2, num_classes=4).tolist() == [1, 1, 0]
    assert torch.mode(torch.tensor([3, 1])).values.item() == 1
    assert knn_predict(train, labels, torch.tensor([[9.0]]), k=50).tolist() == [1]  # k capped at the training set


def test_standardise_uses_the_training_statistics():
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    a, b = standardise(train, torch.tensor([[2.0, 7.0]]))
    assert torch.allclose(a, torch.tensor([[-0.7071068, 0.0], [0.7071068, 0.0]]))
    assert torch.allclose(b, torch.tensor([[0.0, 2.0]]))  # a constant feature keeps std 1


def test_task_registration_metrics_and_settings():
    task = task_of({"task": "probe", "probe": {"k": 5, "seed": 3}})
    assert isinstance(task, ProbeTask) and TASKS["probe"] is ProbeTask
    assert task.primary.name == "knn_top1"
    assert task.settings == {"k": 5, "linear_epochs": 10, "batch_size": 256, "seed": 3}
    assert task_of({"task": "probe"}).settings == {"k": 20, "linear_epochs": 10, "batch_size": 256, "seed": 0}
    assert task_metrics("probe").metrics == tuple((m.name, m.label) for m in ProbeTask.metrics)
    assert task_metrics("probe").compact


def test_evaluate_embeds_train_and_test_in_eval_mode():
    """The evaluator embeds ``loader.train`` and ``loader.test`` with the model in eval mode, restores its mode and
    scores the pooled embedding (here an identity "model" whose embedding is its input)."""
    from kdbench.data.batch import Batch
    from kdbench.models import ModelOutput

    class Identity(torch.nn.Module):
        def kdbench_outputs(self, images, needs):
            assert not self.training
            return ModelOutput(logits=images[:, :1], embedding=images)

    xtr, ytr = embeddings(600, 1)
    xte, yte = embeddings(200, 2)
    loader = ProbeData(train=[Batch(xtr[i:i + 128], ytr[i:i + 128], torch.arange(i, min(i + 128, 600)))
                              for i in range(0, 600, 128)],
                       test=[Batch(xte, yte, torch.arange(200))])
    model = Identity().train()
    scores = task_of({"task": "probe"}).evaluate(model, loader, torch.device("cpu"), "fp32", 5)
    assert model.training
    linear, knn, linear_norm, knn_norm = REFERENCE[0]
    assert scores == {"knn_top1": knn, "linear_top1": linear, "knn_norm_top1": knn_norm, "linear_norm_top1": linear_norm}
    assert list(loader) == loader.test  # iterating the probe data gives the test batches


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_random_teacher_presets_compose_the_reference_recipe(dataset):
    from omegaconf import OmegaConf

    from kdbench.cli import preflight

    cfg = compose_config(f"experiment=random_teachers/{dataset}", "seed=4")
    OmegaConf.resolve(cfg)
    assert (cfg.dataset.name, cfg.dataset.task, cfg.dataset.augment) == (dataset, "probe", "none")
    assert list(cfg.dataset.mean) == [0.4914, 0.4822, 0.4465] and list(cfg.dataset.std) == [0.247, 0.243, 0.261]
    assert dict(cfg.dataset.probe) == {"k": 20, "linear_epochs": 10, "batch_size": 256, "seed": 0}
    assert (cfg.teacher.name, cfg.student.name) == ("resnet18", "resnet18")
    assert cfg.teacher.random_init and cfg.teacher.seed == 4  # a new random teacher per run seed
    assert (cfg.student.init_from_teacher, cfg.student.init_scale) == ("equal", 0.0)
    assert (cfg.method.name, cfg.method.head_init, cfg.method.head_init_scale) == ("dino", "equal", 0.0)
    assert (cfg.method.student_temp, cfg.method.teacher_temp, cfg.method.out_dim) == (1.0, 1.0, 65536)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule) == ("adamw", 1e-3, 0.0, "constant")
    assert list(cfg.optim.betas) == [0.9, 0.999] and cfg.optim.warmup_epochs == 0
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.eval_batch_size) == (100, 256, 256)
    preflight(["--cfg", "job", f"experiment=random_teachers/{dataset}"])  # schemas and declared ranges


def test_random_teacher_run_writes_student_and_teacher_probe_accuracies(tmp_path, env, cifar_root, capsys):
    """A random-teacher run on CIFAR-format pickles through the console script: result.json carries the probe
    accuracies of the student (per epoch, last and best) and of its random teacher, and kdbench-table shows both."""
    from conftest import FAST, read_result, run_cli
    from kdbench.results.table import main as table

    run_dir = tmp_path / "run"
    out = run_cli(["experiment=random_teachers/cifar100", f"dataset.root={cifar_root}", "teacher=resnet8",
                   "student=resnet8", "method.out_dim=256", "method.hidden_dims=[64,64]", "method.bottleneck_dim=32",
                   "trainer.epochs=1", "trainer.max_steps_per_epoch=2", "logger.mode=disabled", *FAST,
                   f"hydra.run.dir={run_dir}"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = read_result(run_dir)
    names = [m.name for m in ProbeTask.metrics]
    assert r["status"] == "completed" and r["config"]["dataset"]["task"] == "probe"
    assert r["teacher"]["checkpoint"] == "random init (seed 0)" and r["student"]["init"] == "teacher (equal)"
    assert all(0.0 <= r["teacher"][n] <= 100.0 for n in names), r["teacher"]
    assert all(0.0 <= r["metrics"][f"{kind}_{n}"] <= 100.0 for n in names for kind in ("last", "best")), r["metrics"]
    assert set(r["history"][0]["losses"]) == {"dino"} and r["method"]["hparams"]["head_init"] == "equal"
    assert r["student"]["extra_params"] > 0  # the student's head; the teacher's is not trained
    capsys.readouterr()
    assert table([str(run_dir), "--format", "md"]) in (0, None)
    shown = (run_dir / "leaderboard-probe.md").read_text()
    assert "Last k-NN top-1" in shown and "Linear top-1 (last, mean)" in shown
    teacher_row = next(line for line in shown.splitlines() if "| teacher |" in line)
    assert f"| {r['teacher']['knn_top1']:.2f} |" in teacher_row
    assert f"| {r['teacher']['linear_norm_top1']:.2f} |" in teacher_row
    dino_row = next(line for line in shown.splitlines() if "| dino |" in line)
    assert f"| {r['metrics']['last_knn_top1']:.2f} |" in dino_row


def test_probe_data_is_the_plain_training_set_and_the_test_set_on_every_loader_path(cifar_root):
    """The device loader and torch's DataLoader give the same un-augmented images and labels, in sample order."""
    from omegaconf import OmegaConf

    from kdbench.data import build_data

    cfg = OmegaConf.create({"dataset": {"name": "cifar100", "root": str(cifar_root), "download": False,
                                        "num_classes": 100, "image_size": 32, "mean": [0.5, 0.5, 0.5],
                                        "std": [0.25, 0.25, 0.25], "augment": "cifar", "num_workers": 0,
                                        "task": "probe"},
                            "trainer": {"eval_batch_size": 100, "loader": "auto"}})
    data, task = build_data(cfg.dataset), task_of(cfg.dataset)
    device_path = task.test_loader(cfg, data, torch.device("cpu"))
    cfg.trainer.loader = "torch"
    torch_path = task.test_loader(cfg, data, torch.device("cpu"))
    for split, size in (("train", 256), ("test", 128)):
        a, b = list(getattr(device_path, split)), list(getattr(torch_path, split))
        images_a, images_b = torch.cat([x.images for x in a]), torch.cat([x.images for x in b])
        assert images_a.shape == (size, 3, 32, 32)
        assert torch.allclose(images_a, images_b, atol=1e-5)  # no crop, no flip: the augmentation is never applied
        assert torch.equal(torch.cat([x.targets for x in a]), torch.cat([x.targets for x in b]))
        assert torch.equal(torch.cat([x.index for x in a]).cpu(), torch.arange(size))
