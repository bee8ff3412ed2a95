"""``emdcli.torch``: bad arguments and bad data give one clear ValueError, never a crash."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import emdcli.torch as et  # noqa: E402
from emdcli.errors import EMDInputError  # noqa: E402
from emdcli.spaces import Tree  # noqa: E402

X = torch.zeros(3, 4)
C = torch.tensor([0, 3, 1])
TREE = Tree.from_edges(["r", "a", "b", "c", "d"], [None, "r", "r", "a", "a"])  # bins b, c, d


@pytest.mark.parametrize("x, t, match", [
    (torch.zeros(4), C, r"input must be \(B, N\)"),
    (torch.zeros(3, 4, 2), C, r"input must be \(B, N\)"),
    (torch.zeros(3, 4, dtype=torch.long), C, "floating point"),
    (X, torch.tensor([0, 1]), "2 class indices but input has 3 rows"),
    (X, torch.tensor([0.0, 1.0, 2.0]), "must be integer"),
    (X, torch.tensor([True, False, True]), "must be integer"),
    (X, torch.ones(3, 5), r"shape \(3, 5\) but input has \(3, 4\)"),
    (X, torch.ones(3, 4, dtype=torch.long), "must be floating point"),
    (X, torch.ones(3, 4, 1), "target must be"),
    (X, torch.ones(3, 4, requires_grad=True), "pass target.detach"),
    (X, torch.zeros(3, dtype=torch.long, device="meta"), "target is on meta but input is on cpu"),
    ([[0.0, 1.0]], C, "input must be a torch.Tensor"),
    (X, [0, 1, 2], "target must be a torch.Tensor"),
])
def test_bad_shapes_dtypes_devices(x, t, match):
    with pytest.raises(ValueError, match=match):
        et.emd_loss(x, t)


@pytest.mark.parametrize("kwargs, match", [
    ({"reduction": "avg"}, "reduction must be one of mean, sum, none"),
    ({"normalize": "sigmoid"}, "normalize must be one of"),
    ({"rho": 0.5}, "rho must be a finite number >= 1"),
    ({"rho": float("nan")}, "rho must be a finite number >= 1"),
    ({"rho": "2"}, "rho must be a number"),
    ({"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\]"),
    ({"ce_weight": -1.0}, "ce_weight must be a finite number >= 0"),
    ({"ignore_index": 1.5}, "ignore_index must be an integer"),
    ({"positions": [0, 1, 2, 3], "tree": TREE}, "at most one of positions, tree and ground"),
    ({"tree": 3}, "tree must be an emdcli Tree"),
    ({"ground": np.ones((4, 4)) - np.eye(4)}, "supports only rho = 1"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        et.emd_loss(X, C, **kwargs)
    with pytest.raises(ValueError, match=match):
        et.EMDLoss(**kwargs)


def test_space_problems():
    with pytest.raises(EMDInputError, match="the chain has 3 bins but input has 4 columns"):
        et.emd_loss(X, C, positions=[0.0, 1.0, 2.0])
    with pytest.raises(EMDInputError, match="strictly increasing"):
        et.emd_loss(X, C, positions=[0.0, 2.0, 1.0, 3.0])
    with pytest.raises(EMDInputError, match="the tree has 3 bins but input has 4 columns"):
        et.EMDLoss(tree=TREE)(X, C)
    with pytest.raises(EMDInputError, match="no-such-tree.csv"):
        et.EMDLoss(tree="no-such-tree.csv")
    ground = np.ones((4, 4)) - np.eye(4)
    with pytest.raises(ValueError, match="ground matrix takes class-index targets"):
        et.emd_loss(X, torch.ones(3, 4), ground=ground, rho=1.0)
    with pytest.raises(ValueError, match="label_smoothing makes soft targets"):
        et.emd_loss(X, C, ground=ground, rho=1.0, label_smoothing=0.1)
    with pytest.raises(EMDInputError, match="diagonal"):
        et.emd_loss(X, C, ground=np.ones((4, 4)), rho=1.0)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("space", [{}, {"tree": Tree.from_edges(list("rabcd"), [None] + list("rraa"), bins=list("bcda"))}])
def test_class_index_out_of_range_names_the_row(smoothing, space):
    for bad in (4, -1):
        t = torch.tensor([0, bad, 1])
        with pytest.raises(EMDInputError, match=f"class index {bad} is out of range 0..3") as e:
            et.emd_loss(X, t, label_smoothing=smoothing, **space)
        assert e.value.row == 1 and e.value.source == "target"
    et.emd_loss(X, torch.tensor([0, -100, 1]), label_smoothing=smoothing, **space)  # ignored


def test_non_finite_and_negative_data():
    x = X.clone()
    x[2, 1] = float("nan")
    with pytest.raises(EMDInputError, match="value is nan") as e:
        et.emd_loss(x, C)
    assert (e.value.source, e.value.row, e.value.column) == ("input", 2, 1)
    assert str(e.value).startswith("input: row 2, column 1")
    x[2, 1] = float("inf")
    with pytest.raises(EMDInputError, match="value is inf"):
        et.emd_loss(x, C, ce_weight=1.0)
    with pytest.raises(EMDInputError, match="negative mass"):
        et.emd_loss(X - 1.0, C, normalize="l1")
    with pytest.raises(EMDInputError, match="sums to zero"):
        et.emd_loss(X, C, normalize="l1")
    with pytest.raises(EMDInputError, match="prediction mass"):
        et.emd_loss(X + 1.0, C, normalize="none")
    q = torch.ones(3, 4)
    q[0, 0] = -1.0
    with pytest.raises(EMDInputError, match="negative mass") as e:
        et.emd_loss(X, q)
    assert e.value.source == "target"
    assert torch.isfinite(et.emd_loss(X, C))  # nothing left broken


def test_a_loss_that_overflows_its_dtype_names_the_row():
    x = torch.zeros(40, 300)
    x[:, 0] = 30.0
    far = torch.arange(300, dtype=torch.float64) * 1e37  # EMD² ~ 3e39 > float32's max
    with pytest.raises(EMDInputError, match="the loss is inf: it overflows float32") as e:
        et.emd_loss(x, torch.full((40,), 299), positions=far)
    assert (e.value.source, e.value.row) == ("input", 0)
    assert torch.isfinite(et.emd_loss(x.double(), torch.full((40,), 299), positions=far))


def test_empty_batch():
    x = torch.zeros(0, 4, requires_grad=True)
    assert et.emd_loss(x, torch.zeros(0, dtype=torch.long), reduction="sum").item() == 0.0
    assert et.emd_loss(x, torch.zeros(0, 4), reduction="none").shape == (0,)
