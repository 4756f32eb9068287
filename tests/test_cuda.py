"""On a CUDA GPU (skipped elsewhere; `make gpu-check` runs it): the same clusters and outputs as on
the CPU, no host sync inside the fixed-budget backbone, clustering in fp32 under fp16 and bf16
autocast, and a fullgraph compile."""
import pytest
import torch
from conftest import tiny_vit_kwargs
from test_deploy import KNOBS, REDUCERS, _images, _relative_error

from ailurus import AiluRusViT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")


def _pair(**knobs):
    cpu = AiluRusViT(**tiny_vit_kwargs(), **{**KNOBS, **knobs}).eval()
    cuda = AiluRusViT(**tiny_vit_kwargs(), **{**KNOBS, **knobs}).eval()
    cuda.load_state_dict(cpu.state_dict())
    return cpu, cuda.cuda()


@pytest.mark.parametrize("reducer", REDUCERS)
def test_cuda_gives_the_cpu_clusters_and_outputs(reducer):
    cpu, cuda = _pair(reducer=reducer)
    images = _images()
    with torch.no_grad():
        grid, is_pad = cpu.grid_tokens(images, cpu.cluster_layer)
        expected = cpu.find_clusters(grid, is_pad, cpu.blocks[cpu.cluster_layer:])
        got = cuda.find_clusters(grid.cuda(), is_pad.cuda(), cuda.blocks[cuda.cluster_layer:])
        assert torch.equal(got.anchors.cpu(), expected.anchors) and torch.equal(got.assign.cpu(), expected.assign)
        assert _relative_error(cuda(images.cuda())["last_feat"].cpu(), cpu(images)["last_feat"]) <= 1e-4


def test_the_fixed_budget_backbone_never_syncs_with_the_host():
    _, cuda = _pair()
    images = _images().cuda()
    with torch.no_grad():
        cuda(images)  # warm-up: lazy initialisation may sync
        cuda.check_finite = False  # the one documented check that reads a value, before the backbone
        torch.cuda.set_sync_debug_mode("error")
        try:
            cuda(images)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_autocast_keeps_the_clustering_in_fp32(dtype):
    _, cuda = _pair()
    images = _images().cuda()
    with torch.no_grad():
        grid, is_pad = cuda.grid_tokens(images, cuda.cluster_layer)
        expected = cuda.find_clusters(grid, is_pad, cuda.blocks[cuda.cluster_layer:])
        with torch.autocast("cuda", dtype=dtype):
            got = cuda.find_clusters(grid, is_pad, cuda.blocks[cuda.cluster_layer:])
            assert torch.isfinite(cuda(images)["last_feat"]).all()
    assert torch.equal(got.anchors, expected.anchors) and torch.equal(got.assign, expected.assign)


def test_the_backbone_compiles_whole_on_cuda():
    _, cuda = _pair()
    images = _images().cuda()
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(cuda, fullgraph=True)
        assert _relative_error(compiled(images)["last_feat"], cuda(images)["last_feat"]) <= 1e-4
