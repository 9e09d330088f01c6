"""kdbench.results.layout: the paper layout of a reference, ours beside the published numbers."""
from kdbench.results.aggregate import aggregate, find_results, with_published
from kdbench.results.layout import reference_layout
from results_runs import R8, R32, recipes  # noqa: F401 (fixture)


def test_reference_layout_of_a_dataset_shows_the_pairs_we_ran(recipes):
    rows = with_published(aggregate(find_results([recipes])))
    layout = reference_layout(rows, "cifar100", metric="last")
    assert layout.pairs == [("cifar100", R32, R8)]
    assert layout.grid.headers == ["Method", "resnet32x4 → resnet8x4: ours last", "resnet32x4 → resnet8x4: published"]
    cells = {line[0]: line[1:] for line in layout.grid.body}
    assert list(cells) == ["teacher", "ce", "kd", "kd+dot", "kd+ls"]
    assert cells["kd"] == ["75.00 ± 1.00 (n=3)", "73.33 [crd]"] and cells["kd+dot"] == ["75.50", "75.12 [dot]"]
    assert cells["kd+ls"] == ["76.50", "76.62 [logit-standardization]"]
    assert (layout.hidden, layout.shown) == (3, 4)  # the AdamW runs (CE, KD, PLD): not this dataset's recipes
    pld = reference_layout(rows, "pld-cifar100", metric="both")
    pld_cells = {line[0]: line for line in pld.grid.body}
    col = pld.grid.headers.index("resnet32x4 → resnet8x4: ours last")
    assert pld_cells["pld"][col:col + 3] == ["74.30 ± 0.42 (n=2)", "74.60 ± 0.28", "73.97 ± 0.05"]
    assert pld_cells["ce"][col + 2] == "71.56 ± 0.16"
