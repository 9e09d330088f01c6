"""Published reference numbers: the shipped tables load, every cell carries its provenance, names resolve to
kdbench's models and methods, and spot checks against the sources' own text."""

from __future__ import annotations

import tomllib
from collections import Counter

import pytest

from conftest import REPO
from kdbench.methods import METHODS
from kdbench.models import resolve_model_name
from kdbench.results import reference as ref

TABLES = {r.name: r for r in ref.list_references()}
CELLS = [c for r in TABLES.values() for c in r.cells]
# methods the reference tables report that kdbench does not implement
NOT_IMPLEMENTED = {"ab", "ft", "fsp", "srrl", "ctkd"}


def one(table: str, dataset: str, teacher: str, student: str, method: str, recipe: str | None = None) -> ref.Cell:
    found = [c for c in TABLES[table].cells if (c.dataset, c.teacher, c.student, c.method) == (dataset, teacher, student, method)
             and (recipe is None or c.recipe == recipe)]
    assert len(found) == 1, found
    return found[0]


def test_tables_load_in_precedence_order():
    # a method's own source comes before the tables that quote or reproduce it
    assert list(TABLES) == ["crd", "dkd", "dot", "logit-standardization", "dist", "reviewkd", "nd", "pld-cifar100",
                            "pld-imagenet", "pld-coco", "mealv2", "tgeokd"]
    counts = {name: len(r.cells) for name, r in TABLES.items()}
    assert counts == {"crd": 188, "dkd": 26, "dot": 10, "logit-standardization": 112, "dist": 49, "nd": 80,
                      "reviewkd": 4, "pld-cifar100": 44, "pld-imagenet": 42, "pld-coco": 36, "mealv2": 12, "tgeokd": 10}
    for r in TABLES.values():
        assert r.title and r.citation and r.url.startswith("https://")


def test_every_cell_has_provenance():
    recipes = ref.recipes()
    for c in CELLS:
        assert c.source.strip() and c.as_written.strip(), c
        assert c.kind in ("best", "last", "unstated"), c
        assert c.runs == "unstated" or (isinstance(c.runs, int) and c.runs >= 1), c
        assert c.recipe in recipes and recipes[c.recipe].description, c
        assert 0 < c.value <= 100 and (c.spread is None or 0 < c.spread < 5), c
        assert c.dataset in ("cifar100", "imagenet", "coco"), c
        assert (c.metric in ("top1", "top5")) == (c.dataset != "coco"), c
        assert c.metric != "top5" or c.table == "mealv2", c  # top-5 cells: MEAL V2's table only
        # a repository source names the commit it was read at; a paper source names its table
        assert ("@" in c.source and ("README" in c.source)) or ("arXiv" in c.source and "Table" in c.source), c.source
    # one number per cell of a table (and recipe, metric)
    keys = Counter((c.table, c.dataset, c.teacher, c.student, c.method, c.recipe, c.metric) for c in CELLS)
    assert [k for k, n in keys.items() if n > 1] == []


def test_names_are_kdbench_models_and_methods():
    for c in CELLS:
        size = 32 if c.dataset == "cifar100" else 224
        teachers = [] if c.teacher == ref.ENSEMBLE else [c.teacher]  # a teacher ensemble: its members in the note
        resolved = {resolve_model_name(name, size) for name in [*teachers, c.student]}
        assert all(n.startswith("cifar_") for n in resolved) == (c.dataset == "cifar100"), c
        base = c.method.removesuffix("+ls").removesuffix("+dot")
        assert base in ("teacher", "ce") or base in METHODS or base in NOT_IMPLEMENTED, c.method
    assert {c.method for c in CELLS if c.method.removesuffix("+ls").removesuffix("+dot") in NOT_IMPLEMENTED} == \
        {"ab", "ft", "fsp", "srrl", "ctkd", "ctkd+ls"}


def test_crd_table_as_the_repdistiller_readme():
    crd = TABLES["crd"]
    assert len(crd.pairs) == 13 and [p[1:] for p in crd.pairs] == [tuple(ref.PAIRS[n][1:]) for n in ref.CRD_PAIRS]
    assert crd.methods == ["teacher", "ce", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp",
                           "nst", "crd"]
    # "| **CRD** | **75.48** | **74.14** | **71.16** | **71.46** | **73.48** | **75.51** | **73.94** |"
    assert [one("crd", "cifar100", t, s, "crd").top1 for _, t, s in crd.pairs[:7]] == \
        [75.48, 74.14, 71.16, 71.46, 73.48, 75.51, 73.94]
    # "| Teacher <br> Student |    74.64 <br> 64.60    |      79.34 <br> 64.60     | ..." (vgg13 / ResNet50 -> MobileNetV2)
    assert one("crd", "cifar100", "resnet50", "MobileNetV2", "teacher").top1 == 79.34
    assert one("crd", "cifar100", "resnet50", "MobileNetV2", "ce").top1 == 64.60
    assert one("crd", "cifar100", "wrn_40_2", "ShuffleV1", "nst").top1 == 74.89
    # "| FSP | 72.91 | N/A | ..." and no FSP row in the cross-architecture table
    assert not [c for c in crd.cells if c.method == "fsp" and c.student in ("wrn_40_1", "MobileNetV2", "ShuffleV1")]
    c = one("crd", "cifar100", "resnet32x4", "resnet8x4", "kd")
    assert (c.top1, c.kind, c.runs) == (73.33, "unstated", "unstated")
    assert c.source.startswith("HobbitLong/RepDistiller@b84f547 README.md")


def test_dkd_dot_and_their_imagenet_rows():
    # "| **DKD** | **76.45** | **76.70** | **69.71** | **70.35** | **77.07** |" (second CIFAR table)
    assert one("dkd", "cifar100", "wrn_40_2", "ShuffleV1", "dkd").top1 == 76.70
    c = one("dkd", "cifar100", "resnet32x4", "ShuffleV2", "dkd")
    assert c.top1 == 77.07 and "MobileNet-V2" in c.as_written and "res32x4_shuv2" in c.note
    assert one("dkd", "imagenet", "resnet34", "resnet18", "dkd").top1 == 71.70
    assert one("dkd", "imagenet", "resnet50", "mobilenetv1_100", "kd").top1 == 70.50
    assert one("dot", "cifar100", "resnet32x4", "ShuffleV2", "kd+dot").recipe == "dot_cifar"
    assert one("dot", "imagenet", "resnet50", "mobilenetv1_100", "kd+dot").top1 == 73.09


def test_other_tables_spot_checks():
    ls = one("logit-standardization", "cifar100", "wrn_40_2", "resnet8x4", "dkd+ls")
    assert ls.top1 == 76.75 and "average" in ls.note
    assert one("logit-standardization", "cifar100", "resnet32x4", "wrn_40_2", "mlkd+ls").top1 == 79.66
    dist = one("dist", "cifar100", "resnet32x4", "ShuffleV2", "dist")
    assert (dist.top1, dist.spread) == (77.35, 0.25)
    assert one("dist", "imagenet", "resnet152", "resnet34", "kd").top1 == 74.87
    assert one("dist", "imagenet", "resnet50", "mobilenetv1_100", "teacher").top1 == 76.16
    nd = one("nd", "cifar100", "resnet32x4", "resnet8x4", "dkd")
    assert nd.top1 == 75.44 and "reproduced" in nd.note  # "75.44*" in the README
    assert one("nd", "imagenet", "resnet50", "mobilenetv1_100", "reviewkdpp").top1 == 72.96
    assert [one("reviewkd", "imagenet", t, s, "reviewkd").top1 for t, s in
            (("resnet34", "resnet18"), ("resnet50", "mobilenetv1_100"))] == [71.61, 72.56]


def test_pld_tables():
    # Table 1: "| RKD [26] | 11.32 ± 1.84 | ..." and "| PLD (ours) | 73.50 ± 0.30 | 70.28 ± 0.21 | 73.97 ± 0.05 | 68.16 ± 0.38 |"
    rkd = one("pld-cifar100", "cifar100", "wrn_40_2", "wrn_40_1", "rkd")
    assert (rkd.top1, rkd.spread, rkd.runs, rkd.recipe) == (11.32, 1.84, 3, "pld_cifar")
    assert [one("pld-cifar100", "cifar100", t, s, "pld").top1 for _, t, s in TABLES["pld-cifar100"].pairs] == \
        [73.50, 70.28, 73.97, 68.16]
    assert TABLES["pld-cifar100"].methods == ["ce", "at", "fitnet", "pkt", "rkd", "sp", "vid", "kd", "dist", "dkd", "pld"]
    # Tables 2 and 3 share the ResNet-152 -> ResNet-50 row; Table 4 has a 300-epoch row
    assert one("pld-imagenet", "imagenet", "resnet152", "resnet50", "pld").top1 == 77.30
    assert one("pld-imagenet", "imagenet", "mobilenetv4_conv_large", "mobilenetv4_conv_medium", "pld",
               recipe="pld_imagenet_300ep").top1 == 76.94
    assert not TABLES["pld-cifar100"].combine and TABLES["crd"].combine


def test_lookup_and_resolution():
    kd = ref.lookup("cifar100", teacher="resnet32x4", student="resnet8x4", method="kd")
    assert [c.table for c in kd] == ["crd", "dkd", "dot", "logit-standardization", "nd", "pld-cifar100"]
    # CE rows are the student alone (any teacher); teacher rows any student; timm tags and case are ignored
    assert {c.top1 for c in ref.lookup("cifar100", teacher="vgg13", student="resnet20", method="ce",
                                       references=[TABLES["crd"]])} == {69.06}
    assert ref.lookup("imagenet", teacher="ResNet34.tv_in1k", student="resnet18", method="reviewkd")[0].top1 == 71.61
    assert [r.name for r in ref.resolve_references("cifar100")] == ["crd", "dkd", "dot", "logit-standardization",
                                                                     "dist", "nd"]
    assert ref.lookup("imagenet", teacher="resnet34", student="resnet18", method="reviewkd",
                      references=[TABLES["nd"]])[0].top1 == 71.62  # ND quotes ReviewKD's 71.61 as 71.62
    assert [r.name for r in ref.resolve_references("pld-cifar100")] == ["pld-cifar100"]
    with pytest.raises(ref.ReferenceError, match="unknown reference 'nope'; valid: crd, dkd"):
        ref.resolve_references("nope")
    recipes = ref.recipes()
    assert ref.recipe_compatible(recipes["crd_cifar"], {"optim.name": "sgd", "trainer.epochs": 240})
    assert ref.recipe_compatible(recipes["crd_cifar"], {})  # unknown recipe: compatible
    assert not ref.recipe_compatible(recipes["crd_cifar"], {"optim.name": "adamw", "trainer.epochs": 250})
    assert ref.recipe_compatible(recipes["pld_cifar"], {"optim.name": "adamw", "trainer.epochs": 250,
                                                        "trainer.batch_size": 128})
    assert ref.pair("res50_mv2") == ("cifar100", "resnet50", "MobileNetV2")
    assert ref.pair("resnet32x4:resnet8x4") == ("", "resnet32x4", "resnet8x4")
    with pytest.raises(ref.ReferenceError, match="unknown pair 'resnet32x4'"):
        ref.pair("resnet32x4")


def test_reference_files_are_package_data():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["tool"]["setuptools"]["package-data"]["kdbench.results"] == ["reference/*.csv", "reference/*.yaml"]
    assert "matplotlib>=3.7" in data["project"]["dependencies"]
    shipped = {p.name for p in (REPO / "kdbench" / "results" / "reference").iterdir()}
    assert shipped == {"index.yaml"} | {r.file for r in TABLES.values()}


def test_mealv2_table_as_the_readme():
    # "| MEAL-V2 w/ ResNet50 | 224 | 25.6M | **80.67/95.09** |" (szq0214/MEAL-V2@59e6bca README.md)
    table = TABLES["mealv2"]
    assert not table.combine and table.metrics == ("top1", "top5") and table.methods == ["mealv2"]
    assert [p[2] for p in table.pairs] == ["resnet50", "resnet18", "tf_mobilenetv3_small_075",
                                           "tf_mobilenetv3_small_100", "tf_mobilenetv3_large_100", "tf_efficientnet_b0"]
    assert {c.teacher for c in table.cells} == {"ensemble"}
    assert all("gluon_senet154" in c.note or "no training command" in c.note for c in table.cells)
    cells = {(c.student, c.metric): c for c in table.cells}
    assert (cells["resnet50", "top1"].value, cells["resnet50", "top5"].value) == (80.67, 95.09)
    assert (cells["resnet18", "top1"].value, cells["resnet18", "top5"].value) == (73.19, 90.82)
    assert (cells["tf_efficientnet_b0", "top1"].value, cells["tf_efficientnet_b0", "top5"].value) == (78.29, 93.95)
    assert cells["resnet50", "top1"].recipe == "mealv2_imagenet"
    assert cells["tf_mobilenetv3_small_075", "top5"].recipe == "mealv2_imagenet_200ep"
    recipes = ref.recipes()
    assert (recipes["mealv2_imagenet"].optim, recipes["mealv2_imagenet"].epochs,
            recipes["mealv2_imagenet"].batch_size) == ("sgd", 180, 512)
    assert recipes["mealv2_imagenet_200ep"].epochs == 200 and recipes["mealv2_imagenet_unstated"].epochs is None
    # a run of the preset: teacher "ensemble" (its result's teacher.name), a tagged timm student, the preset's recipe
    found = ref.lookup("imagenet", teacher="ensemble", student="resnet50.ram_in1k", method="mealv2", metric="top1")
    assert [(c.table, c.value) for c in found] == [("mealv2", 80.67)]
    assert ref.recipe_compatible(recipes[found[0].recipe], {"optim.name": "sgd", "trainer.epochs": 180,
                                                            "trainer.batch_size": 512})
    assert ref.pair("mealv2_r50") == ("imagenet", "ensemble", "resnet50")
    assert [r.name for r in ref.resolve_references("imagenet")] == ["dkd", "dot", "dist", "reviewkd", "nd"]


def test_tgeokd_table_as_the_paper():
    """TGeo-KD Table 1 (CIFAR-100, mean +- std of 5 runs) and Table 2 (ImageNet), arXiv:2312.15112v2; its own
    recipe (early stopping on a validation split), so never combined with the dataset's other tables."""
    table = TABLES["tgeokd"]
    assert not table.combine and table.methods == ["tgeokd"] and table.metrics == ("top1",)
    cells = {(c.teacher, c.student): c for c in table.cells}
    assert (cells["resnet32x4", "resnet8x4"].value, cells["resnet32x4", "resnet8x4"].spread) == (77.27, 0.25)
    assert cells["resnet34", "resnet18"].value == 72.89 and cells["resnet34", "resnet18"].recipe == "tgeokd_imagenet"
    assert all(c.source.endswith(("Table 1", "Table 2")) for c in table.cells)
