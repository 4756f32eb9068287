"""Spatial-aware density-peak clustering (docs/method.md, "Clustering"), as pure tensor functions.

Every function works per image: nothing mixes images of a batch, so an image's clusters do not
depend on the rest of its batch. Distances are computed in fp32 with autocast off and carry no
gradient; the cluster indices they produce are integers.
"""
import math
from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple, Union

import torch
import torch.nn.functional as F

# Side of the square tiles used to compute neighbour distances as small matrix products.
_TILE = 8
# Side, in tokens, of the regions ``balance_by_region`` compares scores within: a 256 px tile at
# patch 16, the tile size at which the study found a per-tile budget to help at small keep ratios.
REGION = 16


@dataclass(frozen=True)
class Clusters:
    """Result of clustering a batch of (H, W) token grids into M clusters each.

    anchors: (B, M) flat grid index (row * W + col) of each cluster's anchor token, by score.
    assign: (B, N) cluster index in [0, M) of every grid token; ``assign[b, anchors[b, m]] == m``.
    counts: (B,) clusters image b uses when images have different budgets: slots m >= counts[b]
        are empty (anchor 0, no token assigned); None when every image uses all M.
    """

    anchors: torch.Tensor
    assign: torch.Tensor
    counts: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class AdaptiveBudget:
    """Each image's cluster count from its own content (``budget="adaptive"``).

    A token is *detail* when its mean squared distance to its 8 grid neighbours, on unit-length
    features (0: all alike, up to 4), is at least ``threshold``; the image gets as many clusters as
    it has detail tokens, clipped to [ceil(min_keep * n), ceil(max_keep * n)] for its n image
    tokens (at least 1). Unit-length features make the threshold independent of the features'
    scale, so one value means the same on every image. Padding keeps its own lattice on top.
    """

    threshold: float
    min_keep: float
    max_keep: float


def neighbour_offsets(radius: int) -> torch.Tensor:
    """(K, 2) (dy, dx) offsets of a (2r+1)^2 Chebyshev neighbourhood, row-major, centre included."""
    span = torch.arange(-radius, radius + 1)
    return torch.cartesian_prod(span, span)


def neighbour_table(
    hw: Tuple[int, int], radius: int, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flat grid index of every token's neighbours.

    Returns:
        index: (N, K) flat index of neighbour k of token i (clamped into the grid where invalid).
        valid: (N, K) False where the neighbour falls outside the grid.
    """
    H, W = hw
    offsets = neighbour_offsets(radius).to(device)
    rows = torch.arange(H, device=device).repeat_interleave(W)[:, None] + offsets[:, 0]
    cols = torch.arange(W, device=device).repeat(H)[:, None] + offsets[:, 1]
    valid = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    index = rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)
    return index, valid


def neighbour_sq_distances(
    f: torch.Tensor, radius: int, table: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
) -> torch.Tensor:
    """Squared feature distance of every token to each of its grid neighbours.

    Computed tile by tile as ``|a|^2 + |b|^2 - 2 a.b`` with one batched matrix product between
    each 8 x 8 tile and its halo, so no (N, K, C) tensor is ever built.

    Args:
        f: (B, H, W, C) token features.
        radius: Chebyshev radius r of the neighbourhood.
        table: ``neighbour_table`` of this grid and radius, where the caller already has it.
    Returns:
        (B, N, K) squared distances, K = (2r+1)^2 in ``neighbour_offsets`` order; +inf for
        neighbours outside the grid.
    """
    B, H, W, C = f.shape
    T, r = _TILE, radius
    nth, ntw = math.ceil(H / T), math.ceil(W / T)
    halo = T + 2 * r
    padded = F.pad(f, (0, 0, r, ntw * T - W + r, r, nth * T - H + r))  # (B, Hp, Wp, C)
    Hp, Wp = padded.shape[1:3]
    centres = padded[:, r : r + nth * T, r : r + ntw * T]
    centres = centres.reshape(B, nth, T, ntw, T, C).permute(0, 1, 3, 2, 4, 5)
    centres = centres.reshape(B * nth * ntw, T * T, C)
    # Each tile's halo gathered by a constant index (not Tensor.unfold, which the TorchScript-based
    # ONNX exporter refuses on the traced sizes of a whole Mask R-CNN), with index_select over the
    # batch's flattened rows: it copies whole rows, 2x faster than advanced indexing on CPUs.
    offset = torch.arange(halo, device=f.device)
    corner = torch.arange(0, nth * T, T, device=f.device)[:, None] * Wp + torch.arange(0, ntw * T, T, device=f.device)
    window = (offset[:, None] * Wp + offset).reshape(-1)  # (halo * halo,) flat offsets within a halo
    in_halo = corner.reshape(-1, 1) + window  # (tiles, halo * halo)
    in_batch = (torch.arange(B, device=f.device)[:, None, None] * (Hp * Wp) + in_halo).reshape(-1)
    halos = padded.reshape(B * Hp * Wp, C).index_select(0, in_batch).reshape(B * nth * ntw, halo * halo, C)
    gram = torch.matmul(centres, halos.transpose(1, 2))  # (tiles, T*T, halo*halo)

    # Column of the halo that holds neighbour (dy, dx) of tile position (ty, tx); the distances are
    # formed on those K columns only.
    offsets = neighbour_offsets(r).to(f.device)
    t = torch.arange(T, device=f.device)
    ty, tx = t.repeat_interleave(T)[:, None], t.repeat(T)[:, None]
    column = (ty + r + offsets[:, 0]) * halo + (tx + r + offsets[:, 1])  # (T*T, K)
    gram = gram.gather(2, column.expand(gram.shape[0], -1, -1))
    # Squared norms once per token, not once per tile that sees it (the halos overlap 4x). The
    # neighbours' are summed over a channel-major copy, in the order the per-tile sums used, so the
    # distances (and every near-tie between them) stay bit for bit what they were.
    sq_c = centres.pow(2).sum(-1, keepdim=True)
    sq_h = padded.reshape(B, -1, C).transpose(1, 2).contiguous().pow(2).sum(1)  # (B, Hp * Wp)
    sq_h = sq_h[:, in_halo[:, column]].reshape(gram.shape)
    sq_dist = (sq_c + sq_h - 2 * gram).clamp_min(0)

    K = offsets.shape[0]
    sq_dist = sq_dist.reshape(B, nth, ntw, T, T, K).permute(0, 1, 3, 2, 4, 5)
    sq_dist = sq_dist.reshape(B, nth * T, ntw * T, K)[:, :H, :W].reshape(B, H * W, K)
    index, valid = table if table is not None else neighbour_table((H, W), r, f.device)
    # Average with the reverse pair (offset K-1-k is -offset k) so d(i, j) and d(j, i) are bitwise
    # equal: exact ties (e.g. the equal densities of mutual nearest neighbours) then stay exact and
    # go to the lower index, instead of to whichever rounding error the batch's GEMMs produced.
    reverse = sq_dist[:, index, torch.arange(K - 1, -1, -1, device=f.device)]
    return ((sq_dist + reverse) / 2).masked_fill(~valid, math.inf)


ScoreMode = Literal["delta", "rho_delta"]


def density_peak_scores(
    sq_dist: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, knn_k: int, score: ScoreMode = "delta"
) -> torch.Tensor:
    """Density-peak score of every token (docs/method.md, "Clustering").

    A token's crowding is the mean squared distance to its ``knn_k`` nearest neighbours (density
    rho = exp(-crowding)); a neighbour is denser if it is less crowded, ties going to the lower grid
    index. delta is the distance to the nearest denser neighbour (the farthest neighbour for a local
    peak). ``score="delta"`` ranks by delta alone: scaling the features scales every delta alike, so
    the anchors do not depend on the features' scale. ``"rho_delta"`` is the first definition,
    rho * delta, whose ranking does depend on it (rho is ~1 for tiny features, ~0 for large ones).

    Args:
        sq_dist: (B, N, K) squared distances to neighbours (+inf outside the grid), centre included.
        index, valid: (N, K) from ``neighbour_table`` for the same radius.
        knn_k: number of nearest neighbours that define the density.
    Returns:
        (B, N) scores.
    """
    N, K = index.shape
    is_other = valid.clone()
    is_other[:, K // 2] = False  # a token is not its own neighbour
    others = sq_dist.masked_fill(~is_other, math.inf)
    crowding = others.topk(knn_k, dim=-1, largest=False).values.mean(-1)  # (B, N); compared, never exp'd

    crowding_nbr = crowding[:, index]  # (B, N, K)
    own = crowding[:, :, None]
    lower_index = index < torch.arange(N, device=index.device)[:, None]
    denser = is_other & ((crowding_nbr < own) | ((crowding_nbr == own) & lower_index))
    dist = others.sqrt()
    nearest_denser = dist.masked_fill(~denser, math.inf).amin(-1)
    farthest = dist.masked_fill(~is_other, -math.inf).amax(-1)
    delta = torch.where(denser.any(-1), nearest_denser, farthest)
    return delta if score == "delta" else torch.exp(-crowding) * delta


def balance_by_region(scores: torch.Tensor, is_pad: torch.Tensor, hw: Tuple[int, int], power: float) -> torch.Tensor:
    """Anchor scores divided by their region's mean image-token score to ``power``, so that anchors
    spread more evenly over the image's ``REGION`` x ``REGION`` regions (0: unchanged; 1: every
    region ranked on its own scale, close to a budget per region).

    Args:
        scores: (B, N); is_pad: (B, N) bool; hw: (H, W) with H * W = N (edge regions may be partial).
    Returns:
        (B, N) scores; padding tokens' are meaningless (anchors on padding are not chosen by score).
    """
    B, N = scores.shape
    H, W = hw
    nh, nw = -(-H // REGION), -(-W // REGION)

    def region_sums(v: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, nh, nw)
        v = F.pad(v.reshape(B, H, W), (0, nw * REGION - W, 0, nh * REGION - H))
        return v.reshape(B, nh, REGION, nw, REGION).sum((2, 4))

    image = (~is_pad).to(scores.dtype)
    mean = region_sums(scores * image) / region_sums(image).clamp(min=1)
    per_token = mean.repeat_interleave(REGION, 1).repeat_interleave(REGION, 2)[:, :H, :W].reshape(B, N)
    return scores / per_token.clamp(min=torch.finfo(scores.dtype).tiny).pow(power)


def fixed_budget(is_pad: torch.Tensor, level: torch.Tensor, num_clusters: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B,) image and (B,) padding anchor counts that share M = ``num_clusters`` per image.

    The image always gets at least its share of the tokens, ceil(M * n_image / N) anchors (all its
    tokens if it has fewer), and everything the padding lattice (``level >= 0``) does not need; a
    padding budget smaller than the lattice thins it (``lattice_level``), one larger than the
    lattice (an image with fewer tokens than its budget) adds off-lattice padding tokens.
    """
    B, N = is_pad.shape
    M = num_clusters
    n_image = (~is_pad).sum(1)
    n_lattice = (is_pad & (level >= 0)).sum(1)
    image_share = (M * n_image + N - 1) // N
    image_take = torch.maximum(image_share, M - n_lattice).clamp(max=n_image)
    return image_take, M - image_take


def adaptive_budget(
    detail: torch.Tensor, is_pad: torch.Tensor, level: torch.Tensor, budget: AdaptiveBudget
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B,) image and (B,) padding anchor counts of ``AdaptiveBudget``: the image's detail tokens,
    clipped, and the whole padding lattice.

    Args:
        detail: (B, N) bool, tokens whose neighbourhood dissimilarity reaches the threshold.
    """
    n_image = (~is_pad).sum(1).double()
    low = (budget.min_keep * n_image - 1e-9).ceil().clamp(min=1)
    high = (budget.max_keep * n_image - 1e-9).ceil().clamp(min=1)
    image_take = (detail & ~is_pad).sum(1).double().clamp(min=low, max=high).clamp(max=n_image).long()
    return image_take, (is_pad & (level >= 0)).sum(1)


def select_anchors(
    scores: torch.Tensor, is_pad: torch.Tensor, level: torch.Tensor, image_take: torch.Tensor, pad_take: torch.Tensor,
    num_slots: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchors: the image's ``image_take`` best by score, then ``pad_take`` padding tokens by lattice
    level (no padding anchor by score: padding is near-constant). Ties go to the lower index.

    Args:
        scores: (B, N); is_pad: (B, N) bool; level: (N,) from ``lattice_level``;
        image_take, pad_take: (B,) counts (``fixed_budget`` or ``adaptive_budget``).
        num_slots: M, at least every image's count: the fixed budget's M, so that the shape is
            known before any value is (no host sync); the adaptive budget's largest count.
    Returns:
        (B, M) flat anchor indices and (B,) counts; slots past an image's count are empty (index 0).
    """
    counts = image_take + pad_take
    M = num_slots
    image_order = torch.where(is_pad, -math.inf, scores).sort(dim=-1, descending=True, stable=True).indices
    pad_rank = torch.where(is_pad, level.to(scores.dtype), -math.inf)
    pad_order = pad_rank.sort(dim=-1, descending=True, stable=True).indices
    slot = torch.arange(M, device=scores.device)
    chosen = torch.cat([slot < image_take[:, None], slot < pad_take[:, None]], 1)
    candidates = torch.cat([image_order[:, :M], pad_order[:, :M]], 1)
    first = torch.sort((~chosen).to(torch.uint8), dim=1, stable=True).indices[:, :M]  # chosen ones, in order
    anchors = torch.where(slot < counts[:, None], candidates.gather(1, first), 0)
    return anchors, counts


def local_dissimilarity(x: torch.Tensor) -> torch.Tensor:
    """(B, N) mean squared distance of each token's unit-length feature to its (up to 8) grid
    neighbours' (0: all alike, 4: opposite).

    Args:
        x: (B, H, W, C).
    """
    sq = neighbour_sq_distances(F.normalize(x.float(), dim=-1), 1)  # (B, N, 9), +inf outside the grid
    K = sq.shape[-1]
    inside = torch.isfinite(sq)
    inside[..., K // 2] = False
    return sq.masked_fill(~inside, 0).sum(-1) / inside.sum(-1).clamp(min=1)


def lattice_level(H: int, W: int, stride: int, device: torch.device) -> torch.Tensor:
    """(N,) nesting level of each grid position in a hierarchy of lattices, -1 off the finest.

    Level 0: the centres of stride x stride cells. Level k: those whose cell row and cell column
    are both multiples of 2^k, so taking the highest levels first thins the lattice evenly.
    """
    def axis(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(n, device=device)
        return pos % stride == stride // 2, pos // stride

    on_r, cell_r = axis(H)
    on_c, cell_c = axis(W)
    on = (on_r[:, None] & on_c[None, :]).reshape(-1)
    cell_r, cell_c = cell_r[:, None].expand(H, W).reshape(-1), cell_c[None, :].expand(H, W).reshape(-1)
    level = torch.zeros(H * W, dtype=torch.long, device=device)
    for k in range(1, int(max(H, W)).bit_length() + 1):
        level += (cell_r % 2**k == 0) & (cell_c % 2**k == 0)
    return torch.where(on, level, -1)


def assign_to_anchors(
    sq_dist: torch.Tensor,
    index: torch.Tensor,
    valid: torch.Tensor,
    anchors: torch.Tensor,
    is_pad: torch.Tensor,
    hw: Tuple[int, int],
    counts: Optional[torch.Tensor] = None,
    window_size: int = 0,
) -> torch.Tensor:
    """Assign every token to the closest anchor (in features) within the neighbourhood.

    Padding and image tokens only join anchors of their own kind, and with ``window_size`` > 0
    only anchors of their own attention window (so clusters do not straddle window borders,
    except for the tokens of a window that holds no anchor of their kind). A token with no such
    anchor in its neighbourhood goes to the spatially nearest allowed one (to the nearest of any
    kind or window if none is allowed); anchors go to themselves.

    Args:
        sq_dist: (B, N, K) squared distances over the assignment neighbourhood.
        index, valid: (N, K) neighbour table of that neighbourhood.
        anchors: (B, M) anchor flat indices.
        is_pad: (B, N) bool.
        hw: grid size (H, W).
        counts: (B,) anchors image b uses (the rest are empty slots), or None for all M.
        window_size: confine clusters to windows of this size (0: no confinement).
    Returns:
        (B, N) cluster index of every token.
    """
    B, M = anchors.shape
    N = index.shape[0]
    device = anchors.device
    rank = torch.arange(M, device=device).expand(B, M)
    used = rank < counts[:, None] if counts is not None else torch.ones_like(rank, dtype=torch.bool)
    target = torch.where(used, anchors, N)  # empty slots write to a dropped extra column
    cluster_of = torch.full((B, N + 1), -1, dtype=torch.long, device=device).scatter_(1, target, rank)[:, :N]

    window = window_ids(hw, window_size, device)  # (N,)
    nbr_cluster = cluster_of[:, index]  # (B, N, K)
    same_kind = is_pad[:, index] == is_pad[:, :, None]
    candidate = valid & (nbr_cluster >= 0) & same_kind & (window[index] == window[:, None])
    best = sq_dist.masked_fill(~candidate, math.inf).argmin(-1, keepdim=True)
    assign = nbr_cluster.gather(2, best).squeeze(2)
    assign = torch.where(candidate.any(-1), assign, -1)

    # Tokens out of reach: the spatially nearest allowed anchor, computed for every token and kept
    # where none was in reach, so that no shape depends on how many there are.
    assign = _nearest_allowed(assign, anchors, used, is_pad, window, window_size, hw)
    return torch.cat([assign, assign.new_zeros(B, 1)], 1).scatter(1, target, rank)[:, :N]  # anchors: themselves


def _nearest_allowed(
    assign: torch.Tensor, anchors: torch.Tensor, used: torch.Tensor, is_pad: torch.Tensor, window: torch.Tensor,
    window_size: int, hw: Tuple[int, int],
) -> torch.Tensor:
    """``assign`` (B, N) with every -1 replaced by the spatially nearest anchor (squared Euclidean
    on the grid, ties to the lower slot) of the token's kind (image or padding; any kind if there
    is none) in the token's window (any window if there is none).

    Args:
        anchors: (B, M); used: (B, M) False for empty slots; is_pad: (B, N); window: (N,)
        ``window_ids`` of ``window_size`` (0: one window).
    """
    B, M = anchors.shape
    (H, W), N = hw, is_pad.shape[1]
    device = anchors.device
    num_windows = math.ceil(H / window_size) * math.ceil(W / window_size) if window_size > 0 else 1
    anchor_pad = is_pad.gather(1, anchors)
    kinds = torch.tensor([False, True], device=device)
    of_kind = (anchor_pad[:, None, :] == kinds[:, None]) & used[:, None, :]  # (B, 2, M): image, padding
    of_kind = _either(of_kind, used[:, None, :])
    in_window = window[anchors][:, None, :] == torch.arange(num_windows, device=device)[:, None]  # (B, w, M)
    allowed = of_kind[:, :, None, :] & in_window[:, None]  # (B, 2, w, M)
    allowed = _either(allowed, of_kind[:, :, None, :])
    token_case = is_pad.long() * num_windows + window  # (B, N): row of ``allowed`` for each token
    allowed = allowed.reshape(B, 2 * num_windows, M).gather(1, token_case[..., None].expand(B, N, M))
    # Squared grid distances, exact in int32 (onnxruntime refused int16 here);
    # the row and column terms are (B, H, M) and (B, W, M), summed by broadcasting in one pass.
    dtype = torch.int32
    d_row = torch.arange(H, device=device, dtype=dtype)[None, :, None] - (anchors // W).to(dtype)[:, None, :]
    d_col = torch.arange(W, device=device, dtype=dtype)[None, :, None] - (anchors % W).to(dtype)[:, None, :]
    d_row, d_col = d_row * d_row, d_col * d_col  # (B, H, M), (B, W, M)
    spatial = (d_row[:, :, None] + d_col[:, None]).reshape(B, N, M)
    spatial = torch.where(allowed, spatial, torch.iinfo(dtype).max)
    return torch.where(assign < 0, spatial.argmin(-1), assign)


def split_singles(
    f: torch.Tensor, anchors: torch.Tensor, assign: torch.Tensor, is_pad: torch.Tensor, num_singles: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Partial merging: the ``num_singles`` image tokens worst represented by their cluster (the
    farthest in features from its anchor) leave it and stay single tokens, in slots after the
    clusters'. A slot for which an image has no such token left (every image token already an
    anchor) stays empty: anchor 0, no token.

    Args:
        f: (B, N, C) features; anchors: (B, M) flat indices; assign: (B, N) in [0, M); is_pad: (B, N).
    Returns:
        (B, M + num_singles) anchors and (B, N) assignment.
    """
    B, N, C = f.shape
    M = anchors.shape[1]
    own_anchor = anchors.gather(1, assign)
    gap = (f - f.gather(1, own_anchor[..., None].expand(B, N, C))).pow(2).sum(-1)  # (B, N)
    is_anchor = torch.zeros_like(is_pad).scatter(1, anchors, torch.ones_like(anchors, dtype=torch.bool))
    gap = torch.where(is_pad | is_anchor, -math.inf, gap)
    singles = gap.sort(dim=-1, descending=True, stable=True).indices[:, :num_singles]  # ties: lower index
    leaves = torch.isfinite(gap.gather(1, singles))
    slot = torch.arange(M, M + num_singles, device=f.device).expand(B, -1)
    assign = assign.scatter(1, singles, torch.where(leaves, slot, assign.gather(1, singles)))
    return torch.cat([anchors, torch.where(leaves, singles, 0)], 1), assign


def _either(preferred: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """``preferred`` (..., M) bool where a row has any True, else ``fallback`` (broadcast): in logical
    ops, since onnxruntime has no boolean Where."""
    has = preferred.any(-1, keepdim=True)
    return (preferred & has) | (fallback & ~has)


def window_id_list(hw: Tuple[int, int], window_size: int) -> List[int]:
    """Attention window of every grid position, row-major (all 0 for ``window_size`` 0): a
    constant of the grid, computed in Python so that it can shape a forward pass."""
    H, W = hw
    if window_size <= 0:
        return [0] * (H * W)
    per_row = math.ceil(W / window_size)
    return [(r // window_size) * per_row + c // window_size for r in range(H) for c in range(W)]


def window_ids(hw: Tuple[int, int], window_size: int, device: torch.device) -> torch.Tensor:
    """(N,) ``window_id_list`` as a tensor."""
    return torch.tensor(window_id_list(hw, window_size), dtype=torch.long, device=device)


def num_clusters_for(num_tokens: int, keep_ratio: float) -> int:
    """M = ceil(keep_ratio * N), at least 1."""
    return max(1, math.ceil(keep_ratio * num_tokens - 1e-9))


@torch.no_grad()
def cluster_tokens(
    x: torch.Tensor,
    num_clusters: int,
    knn_k: int,
    radius: int,
    assign_radius: int,
    is_pad: Optional[torch.Tensor] = None,
    score: ScoreMode = "delta",
    adaptive: Optional[AdaptiveBudget] = None,
    window_size: int = 0,
    single_share: float = 0.0,
    position_weight: float = 0.0,
    region_balance: float = 0.0,
) -> Clusters:
    """Spatial-aware density-peak clustering of a token grid.

    Args:
        x: (B, H, W, C) block output.
        num_clusters: M, the same for every image.
        knn_k: neighbours that define the density.
        radius: Chebyshev radius of the density / distance-indicator neighbourhood.
        assign_radius: Chebyshev radius within which a token looks for its anchor.
        is_pad: (B, H, W) bool, True for tokens of the zero padding Detectron2 adds (or None).
        score: how anchors are ranked (``density_peak_scores``).
        adaptive: each image's count from its content instead of ``num_clusters`` (``AdaptiveBudget``).
        window_size: > 0 keeps every cluster inside one attention window of this size.
        single_share: partial merging (fixed budget): this share of the M tokens goes to the image
            tokens worst represented by their cluster, which stay single (``split_singles``).
        position_weight: the assignment distance adds this times the squared grid distance to the
            anchor, in units of the image's mean squared distance between 4-neighbours, so that
            clusters stay compact where features alone would spread them.
        region_balance: anchors are ranked on scores divided by their region's mean score to this
            power (``balance_by_region``).
    Returns:
        ``Clusters`` with (B, M) anchors and (B, N) assignment (and per-image counts if adaptive).
    """
    B, H, W, C = x.shape
    is_pad = x.new_zeros(B, H * W, dtype=torch.bool) if is_pad is None else is_pad.reshape(B, H * W)
    with torch.autocast(device_type=x.device.type, enabled=False):
        f = x.float() / math.sqrt(C)
        reach = max(radius, assign_radius)
        index, valid = neighbour_table((H, W), reach, x.device)
        sq_dist = neighbour_sq_distances(f, reach, (index, valid))  # (B, N, (2 reach + 1)^2)
        inner = _offsets_within(reach, radius, x.device)
        outer = _offsets_within(reach, assign_radius, x.device)
        scores = density_peak_scores(
            sq_dist[:, :, inner], index[:, inner], valid[:, inner], knn_k, score
        )
        if region_balance > 0:
            scores = balance_by_region(scores, is_pad, (H, W), region_balance)
        level = lattice_level(H, W, 2 * assign_radius + 1, x.device)
        if adaptive is None:
            num_singles = round(single_share * num_clusters)
            num_slots = num_clusters - num_singles
            takes = fixed_budget(is_pad, level, num_slots)
        else:  # the one data-dependent size of the forward pass: the largest image's budget
            num_singles = 0
            detail = local_dissimilarity(x) >= adaptive.threshold
            takes = adaptive_budget(detail, is_pad, level, adaptive)
            num_slots = int((takes[0] + takes[1]).max())
        anchors, counts = select_anchors(scores, is_pad, level, *takes, num_slots)
        assign_dist = sq_dist[:, :, outer]
        if position_weight > 0:
            assign_dist = assign_dist + position_weight * _grid_sq_distances(reach, outer) * _neighbour_scale(sq_dist, reach)
        assign = assign_to_anchors(
            assign_dist, index[:, outer], valid[:, outer], anchors, is_pad, (H, W), counts, window_size
        )
        if num_singles:
            anchors, assign = split_singles(f.reshape(B, H * W, C), anchors, assign, is_pad, num_singles)
    return Clusters(anchors=anchors, assign=assign, counts=None if adaptive is None else counts)


def _grid_sq_distances(reach: int, positions: torch.Tensor) -> torch.Tensor:
    """(K',) squared grid length dy^2 + dx^2 of the radius-``reach`` offsets at ``positions``."""
    offsets = neighbour_offsets(reach).to(positions.device)[positions]
    return offsets.pow(2).sum(-1).float()


def _neighbour_scale(sq_dist: torch.Tensor, reach: int) -> torch.Tensor:
    """(B, 1, 1) mean squared feature distance between 4-neighbours of each image (inside the grid)."""
    K, side = sq_dist.shape[-1], 2 * reach + 1
    centre = K // 2
    adjacent = sq_dist[..., [centre - side, centre - 1, centre + 1, centre + side]]
    inside = torch.isfinite(adjacent)
    total = adjacent.masked_fill(~inside, 0).sum((1, 2))
    return (total / inside.sum((1, 2)).clamp(min=1))[:, None, None]


def _offsets_within(reach: int, radius: int, device: torch.device) -> torch.Tensor:
    """Positions, in the radius-`reach` offset list, of the offsets within `radius` (computed in
    Python: a constant of the forward pass)."""
    span = range(-reach, reach + 1)
    offsets = [(dy, dx) for dy in span for dx in span]  # ``neighbour_offsets`` order
    return torch.tensor([k for k, (dy, dx) in enumerate(offsets) if max(abs(dy), abs(dx)) <= radius], device=device)
