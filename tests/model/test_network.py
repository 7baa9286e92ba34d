"""YOLO Nano topology against the table in shared/reference/architecture.md, and the paper's numbers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (train extra)")

from yolo_nano.model.blocks import EP, PEP  # noqa: E402
from yolo_nano.model.flops import count_model  # noqa: E402
from yolo_nano.model.network import EXPANSION, YoloNano  # noqa: E402
from yolo_nano.model.registry import ARCHS, build_model  # noqa: E402

pytestmark = pytest.mark.torch

# (module, channels in, channels out, output spatial size at 416) from the reference table.
TOPOLOGY = [
    ("conv1", 3, 12, 416), ("conv2", 12, 24, 208), ("pep1", 24, 24, 208), ("ep1", 24, 70, 104),
    ("pep2", 70, 70, 104), ("pep3", 70, 70, 104), ("ep2", 70, 150, 52), ("pep4", 150, 150, 52),
    ("conv3", 150, 150, 52), ("pep5", 150, 150, 52), ("pep6", 150, 150, 52), ("pep7", 150, 150, 52),
    ("ep3", 150, 325, 26), ("ep4", 325, 545, 13), ("pep16", 545, 545, 13), ("conv4", 545, 230, 13),
    ("ep5", 230, 489, 13), ("pep17", 489, 469, 13), ("conv5", 469, 189, 13), ("conv6", 189, 105, 13),
    ("pep18", 430, 325, 26), ("pep19", 325, 207, 26), ("conv7", 207, 98, 26), ("conv8", 98, 47, 26),
    ("pep20", 197, 122, 52), ("pep21", 122, 87, 52), ("pep22", 87, 93, 52), ("conv9", 93, 75, 52),
    ("ep6", 98, 183, 26), ("conv10", 183, 75, 26), ("ep7", 189, 462, 13), ("conv11", 462, 75, 13),
]  # fmt: skip
PEP_PROJECTIONS = {
    "pep1": 7, "pep2": 25, "pep3": 24, "pep4": 56, "pep5": 73, "pep6": 71, "pep7": 75, "pep16": 276,
    "pep17": 213, "pep18": 113, "pep19": 99, "pep20": 58, "pep21": 52, "pep22": 47,
}  # fmt: skip
STAGE26_PROJECTIONS = [132, 124, 141, 140, 137, 135, 133, 140]


@pytest.fixture(scope="module")
def nano_and_shapes():
    model = YoloNano().eval()
    shapes = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, (i[0].shape[1], tuple(o.shape[1:])))
        )
        for name, *_ in TOPOLOGY
    ]
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 416, 416))
    for h in hooks:
        h.remove()
    return model, shapes, outputs


@pytest.mark.parametrize("name,c_in,c_out,size", TOPOLOGY)
def test_every_layer_matches_the_reference_table(nano_and_shapes, name, c_in, c_out, size):
    _, shapes, _ = nano_and_shapes
    got_in, got_out = shapes[name]
    assert (got_in, got_out) == (c_in, (c_out, size, size))


def test_projection_widths_and_skips(nano_and_shapes):
    model, _, _ = nano_and_shapes
    for name, proj in PEP_PROJECTIONS.items():
        assert getattr(model, name).project_in.conv.out_channels == proj, name
    stage = list(model.stage26)
    assert [b.project_in.conv.out_channels for b in stage] == STAGE26_PROJECTIONS
    assert all(isinstance(b, PEP) and b.residual for b in stage)
    # residual only where stride 1 and in == out
    assert model.pep1.residual and not model.pep17.residual and not model.pep18.residual
    assert isinstance(model.ep1, EP) and not model.ep1.residual and model.ep1.dw.conv.stride == (2, 2)


def test_heads_are_raw_largest_stride_first(nano_and_shapes):
    _, _, outputs = nano_and_shapes
    assert [tuple(o.shape) for o in outputs] == [(1, 75, 13, 13), (1, 75, 26, 26), (1, 75, 52, 52)]
    assert sum(o.shape[2] * o.shape[3] * 3 for o in outputs) == 10647


def test_paper_weights_and_flops_within_bounds():
    c = count_model(YoloNano(20, 416), 416)
    assert abs(c.weights / 4.0e6 - 1) <= 0.03, c.weights
    assert abs(c.flops / 4.57e9 - 1) <= 0.02, c.flops
    assert EXPANSION[32] > EXPANSION[2]  # expands more at low resolution, as the search chose


@pytest.mark.parametrize("arch,paper_flops", [("tiny-yolov2", 6.97e9), ("tiny-yolov3", 5.52e9)])
def test_baselines_flops_near_the_paper(arch, paper_flops):
    c = count_model(build_model(arch), 416)
    assert abs(c.flops / paper_flops - 1) <= 0.03


def test_flop_counter_agrees_with_torch_flop_counter():
    """Our hook-based counter against PyTorch's own FlopCounterMode (conv and addmm, 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    for arch in ARCHS:
        model = build_model(arch, 20, 128).eval()
        ours = count_model(model, 128).flops
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, 128, 128))
        assert ours == counter.get_total_flops(), arch


def test_weight_count_agrees_with_state_dict():
    model = build_model("yolo-nano")
    ours = count_model(model, 64).weights
    independent = sum(
        v.numel() for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() > 1
    )
    assert ours == independent


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size,classes", [(320, 3), (224, 1)])
def test_any_multiple_of_32_and_class_count(arch, size, classes):
    model = build_model(arch, classes, size).eval()
    meta = model.build_metadata()
    with torch.no_grad():
        outs = model(torch.zeros(2, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [meta.head_shape(h, 2) for h in meta.heads]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"arch": "yolo-giga"}, "unknown arch"),
        ({"input_size": 100}, "multiple of 32"),
        ({"num_classes": 0}, ">= 1"),
    ],
)
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_metadata_decodes_all_three_archs():
    v2 = build_model("tiny-yolov2").build_metadata()
    assert v2.class_activation == "softmax" and len(v2.heads) == 1 and v2.heads[0].num_anchors == 5
    v3 = build_model("tiny-yolov3").build_metadata()
    assert [h.stride for h in v3.heads] == [32, 16] and v3.class_activation == "sigmoid"
    nano = build_model("yolo-nano").build_metadata()
    assert [h.stride for h in nano.heads] == [32, 16, 8]
    assert nano.heads[2].anchors[0] == (10.0, 13.0)


def _model_imports():
    """yolo_nano.model module -> the yolo_nano.model modules it imports anywhere (functions included)."""
    import ast
    from pathlib import Path

    import yolo_nano.model as pkg

    graph = {}
    for path in Path(pkg.__path__[0]).glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    deps.add(node.module or "")
                elif (node.module or "").startswith("yolo_nano.model."):
                    deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[2] for a in node.names if a.name.startswith("yolo_nano.model."))
        graph[path.stem] = deps - {"", path.stem}
    return graph


def test_model_package_has_no_import_cycle():
    graph = _model_imports()
    assert graph["detector_base"].isdisjoint({"network", "baselines", "registry"})
    assert "network" not in graph["baselines"] and "baselines" not in graph["network"]
    state = {}

    def visit(m, path):
        if state.get(m) == "open":
            raise AssertionError(f"import cycle: {' -> '.join(path + [m])}")
        if state.get(m) != "done":
            state[m] = "open"
            for d in sorted(graph.get(m, ())):
                visit(d, path + [m])
            state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("first", ["baselines", "network", "detector_base", "registry"])
def test_any_network_module_imports_first_in_a_fresh_interpreter(first):
    import subprocess
    import sys

    code = (
        f"import yolo_nano.model.{first}\n"
        "from yolo_nano.model.registry import ARCHS, build_model\n"
        "from yolo_nano.model.detector_base import DetectorNet\n"
        "assert all(isinstance(build_model(a, 2, 64), DetectorNet) for a in ARCHS)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_network_shares_the_base_head_convention(arch):
    from yolo_nano.model.detector_base import OBJECTNESS_PRIOR_LOGIT, DetectorNet

    model = build_model(arch, 3, 64)
    assert isinstance(model, DetectorNet) and model.arch == arch
    heads = model.head_convs()
    assert [h.out_channels for h in heads] == [len(a) * 8 for a in model.anchors]
    for head, anchors in zip(heads, model.anchors):
        bias = head.bias.detach().view(len(anchors), 8)
        assert torch.all(bias[:, 4] == OBJECTNESS_PRIOR_LOGIT) and torch.all(bias[:, :4] == 0)
    meta = model.build_metadata(["a", "b", "c"])
    assert [h.stride for h in meta.heads] == list(model.strides) and meta.arch == arch
    with pytest.raises(ValueError, match="2 class names given for a 3-class model"):
        model.build_metadata(["a", "b"])
