"""The factor analysis' whole-image model with the tiles' budget and context (ailurus.experiments.factors)."""
import torch
from conftest import tiny_vit_kwargs

from ailurus.experiments.factors import BlockwiseViT
from ailurus.vit import AiluRusViT

KNOBS = dict(cluster_layer=2, knn_k=3, radius=1, assign_radius=2, keep_ratio=0.3)


def _pair(**blockwise):
    torch.manual_seed(0)
    plain = AiluRusViT(**tiny_vit_kwargs(), **KNOBS).eval()
    model = BlockwiseViT(**tiny_vit_kwargs(), **KNOBS, **blockwise).eval()
    model.load_state_dict(plain.state_dict())
    return plain, model


def test_a_block_as_large_as_the_grid_changes_nothing():
    plain, model = _pair(budget_block=8, context_block=8)  # 128 px: an 8 x 8 grid
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        grid, is_pad = plain.grid_tokens(x, 2)
        a, b = plain.find_clusters(grid, is_pad, plain.blocks[2:]), model.find_clusters(grid, is_pad, model.blocks[2:])
        assert torch.equal(a.anchors, b.anchors) and torch.equal(a.assign, b.assign)
        assert torch.allclose(plain(x)["last_feat"], model(x)["last_feat"], rtol=1e-4, atol=1e-5)


def test_each_block_is_clustered_alone_with_its_own_budget():
    plain, model = _pair(budget_block=4)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        grid, is_pad = model.grid_tokens(x, 2)
        clusters = model.find_clusters(grid, is_pad, model.blocks[2:])
        per_block = model.clusters_for(16)
        assert clusters.anchors.shape == (2, 4 * per_block)
        rows, cols = torch.arange(64) // 8, torch.arange(64) % 8
        block_of = (rows // 4) * 2 + cols // 4
        for b in range(2):
            anchors, assign = clusters.anchors[b], clusters.assign[b]
            assert torch.equal(assign[anchors], torch.arange(4 * per_block))
            assert torch.equal(block_of[anchors], torch.arange(4).repeat_interleave(per_block))
            assert torch.equal(block_of[anchors[assign]], block_of)  # no cluster crosses a block border
            top_left = grid[b, :4, :4][None]
            alone = plain.find_clusters(top_left, is_pad[b : b + 1, :4, :4], plain.blocks[2:])
            assert torch.equal(anchors[:per_block], (alone.anchors[0] // 4) * 8 + alone.anchors[0] % 4)


def test_tile_context_makes_the_global_blocks_attend_within_blocks():
    plain, model = _pair(context_block=4)
    assert [b.window_size for b in model.blocks] == [3 if b.window_size else 4 for b in plain.blocks]
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(plain(x)["last_feat"], model(x)["last_feat"], atol=1e-3)


def test_the_table_compares_each_condition_with_its_own_off_row():
    from ailurus.experiments.factors import markdown

    rows = []
    for seed, shift in ((0, 0.0), (1, 1.0)):
        for condition, off, on in (("whole", 40.0, 39.0), ("tiles", 30.0, 26.0)):
            rows.append(dict(condition=condition, seed=seed, keep=None, mask_ap=off + shift, image_keep_ratio=1.0))
            rows.append(dict(condition=condition, seed=seed, keep=0.5, mask_ap=on + 2 * shift, image_keep_ratio=0.5))
    table = markdown(rows).splitlines()
    assert table[2] == "| whole | 40.50 +- 0.71 | -0.50 +- 0.71 | 0.50 (keep 0.5) | 2 |"
    assert table[3] == "| tiles | 30.50 +- 0.71 | -3.50 +- 0.71 | 0.50 (keep 0.5) | 2 |"
