"""AiluRusViT: Detectron2's ViT with token clustering after ``cluster_layer`` blocks."""
import inspect
import numbers
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils import checkpoint as activation_checkpoint
from detectron2.modeling.backbone.utils import get_abs_pos
from detectron2.modeling.backbone.vit import ViT, Block

from .attention import reduced_attention
from .clustering import AdaptiveBudget, ScoreMode, num_clusters_for
from .reducers import REDUCERS, ReduceInput
from .reduced import AttentionLayout, ReducedState, UnfoldMode, global_layout, grid_state, merge, unfold, window_layout

__all__ = ["AiluRusViT", "AILURUS_ARGS", "NonFiniteImage", "check_ailurus_args"]

# Profiler event around the clustering step (the benchmark reads its time).
CLUSTER_EVENT = "ailurus.cluster_tokens"

# Constructor arguments that AiluRusViT adds to Detectron2's ViT.
AILURUS_ARGS = (
    "cluster_layer", "keep_ratio", "num_clusters", "knn_k", "radius", "assign_radius", "score", "unfold", "enabled",
    "check_finite", "freeze_blocks", "reducer", "budget", "budget_threshold", "min_keep", "max_keep",
    "confine_windows",
)


class NonFiniteImage(ValueError):
    """Input images with NaN or Inf values.

    counts: {index in the batch: number of non-finite values}; names: a label per index
    (e.g. the file name), filled in by callers that know them.
    """

    def __init__(self, counts: Dict[int, int], names: Optional[Dict[int, str]] = None):
        self.counts, self.names = counts, names or {}
        images = "; ".join(
            f"image {i}" + (f" ({self.names[i]})" if self.names.get(i) else "") + f": {n} non-finite values"
            for i, n in counts.items()
        )
        super().__init__(
            f"non-finite (NaN or Inf) input pixels in the batch: {images}. Fix or drop these images; "
            "AiluRusViT(check_finite=False) lets them through, giving them non-finite outputs "
            "(the other images of the batch are unaffected)."
        )

    def with_names(self, names: Sequence[Optional[str]]) -> "NonFiniteImage":
        return NonFiniteImage(self.counts, {i: names[i] for i in self.counts if names[i]})


class AiluRusViT(ViT):
    """Detectron2's ``ViT`` (same parameters, same state_dict) with AiluRus token clustering.

    Blocks ``0 .. cluster_layer-1`` run on the full H x W grid; the output of block
    ``cluster_layer-1`` is clustered into M tokens, and the remaining blocks run on those. All
    blocks, before and after clustering, use the same attention kernel (``reduced_attention``),
    so ``enabled=False`` is a like-for-like baseline.
    """

    def __init__(
        self,
        *,
        cluster_layer: int = 3,
        keep_ratio: float = 0.5,
        num_clusters: Optional[int] = None,
        knn_k: int = 5,
        radius: int = 3,
        assign_radius: int = 4,
        score: ScoreMode = "delta",
        unfold: Optional[UnfoldMode] = None,
        reducer: str = "ailurus",
        budget: str = "fixed",
        budget_threshold: float = 0.1,
        min_keep: float = 0.1,
        max_keep: float = 1.0,
        confine_windows: bool = False,
        enabled: bool = True,
        check_finite: bool = True,
        use_act_checkpoint: bool = False,
        freeze_blocks: int = 0,
        **vit_kwargs,
    ):
        """
        Args:
            cluster_layer: index of the first block that runs on the clustered tokens (1..depth-1).
            keep_ratio: M = ceil(keep_ratio * N) clusters per image, in (0, 1].
            num_clusters: a fixed M instead of ``keep_ratio`` (>= 1).
            knn_k: nearest neighbours that define a token's density (1 .. (radius+1)^2 - 1).
            radius: Chebyshev radius of the density-peak neighbourhood (>= 1).
            assign_radius: Chebyshev radius within which tokens look for an anchor (>= 0).
            score: anchor ranking, "delta" (scale-invariant) or "rho_delta" (see
                ``ailurus.clustering.density_peak_scores``).
            unfold: "copy", "residual" or "reconstruct" (see ``ailurus.reduced.unfold``); None: the
                reducer's own ("reconstruct" for expedite, "residual" for the others).
            reducer: how tokens are reduced at ``cluster_layer`` (``ailurus.reducers.REDUCERS``):
                "ailurus" (density-peak clustering), or the peers "tome", "tome_window", "expedite",
                "pool"; every knob but the density-peak ones applies to all of them.
            budget: "fixed" (every image gets M = ceil(keep_ratio * N) tokens) or "adaptive" (each
                image as many as its content asks for, ``ailurus.clustering.AdaptiveBudget``;
                ``keep_ratio`` and ``num_clusters`` are then unused; reducer "ailurus" only).
            budget_threshold: the adaptive budget's operating point: a token counts as detail when
                the mean squared distance of its unit-length feature to its 8 neighbours' is at
                least this (0..4; lower keeps more).
            min_keep, max_keep: the adaptive budget's clip, as fractions of the image's own tokens.
            confine_windows: keep every AiluRus cluster inside one window of the later window
                blocks (by default a cluster joins the window of its anchor even if some of its
                tokens lie in the next window).
            enabled: False runs every block on the full grid (the baseline).
            check_finite: raise ``NonFiniteImage`` for inputs with NaN or Inf values.
            use_act_checkpoint: recompute each block's activations in the backward pass
                (``torch.utils.checkpoint``) to save memory while training; no fairscale needed.
            freeze_blocks: freeze the patch and position embeddings and this many leading blocks
                (0: train everything; depth: a frozen pretrained backbone, cheap to fine-tune on).
            vit_kwargs: arguments of Detectron2's ``ViT``.
        """
        check_ailurus_args(
            vit_kwargs.get("depth", _VIT_DEPTH),
            vit_kwargs.get("residual_block_indexes", ()),
            cluster_layer=cluster_layer,
            keep_ratio=keep_ratio,
            num_clusters=num_clusters,
            knn_k=knn_k,
            radius=radius,
            assign_radius=assign_radius,
            score=score,
            unfold=unfold,
            reducer=reducer,
            budget=budget,
            budget_threshold=budget_threshold,
            min_keep=min_keep,
            max_keep=max_keep,
            confine_windows=confine_windows,
            enabled=enabled,
            check_finite=check_finite,
            use_act_checkpoint=use_act_checkpoint,
            freeze_blocks=freeze_blocks,
        )
        # Detectron2 would wrap blocks with fairscale's checkpoint_wrapper, which our block runner
        # bypasses: checkpointing is done by ``run_blocks`` instead.
        super().__init__(use_act_checkpoint=False, **vit_kwargs)
        self.cluster_layer = cluster_layer
        self.keep_ratio = keep_ratio
        self.num_clusters = num_clusters
        self.knn_k = knn_k
        self.radius = radius
        self.assign_radius = assign_radius
        self.score = score
        self.unfold = unfold
        self.reducer = reducer
        self.budget = budget
        self.budget_threshold = budget_threshold
        self.min_keep = min_keep
        self.max_keep = max_keep
        self.confine_windows = confine_windows
        self.enabled = enabled
        self.check_finite = check_finite
        self.use_act_checkpoint = use_act_checkpoint
        if freeze_blocks:
            frozen = [self.patch_embed, *self.blocks[:freeze_blocks]]
            for p in [q for m in frozen for q in m.parameters()] + [self.pos_embed]:
                if p is not None:
                    p.requires_grad_(False)

    def clusters_for(self, num_tokens: int) -> int:
        """M for a grid of ``num_tokens`` tokens."""
        if self.num_clusters is not None:
            return min(self.num_clusters, num_tokens)
        return num_clusters_for(num_tokens, self.keep_ratio)

    @property
    def unfold_mode(self) -> UnfoldMode:
        """The unfold used: ``unfold``, or the reducer's own when that is None."""
        return self.unfold or REDUCERS[self.reducer].unfold

    def grid_tokens(self, x: torch.Tensor, num_blocks: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Output of the first ``num_blocks`` blocks, on the full grid.

        Args:
            x: (B, 3, H_img, W_img) normalised images.
        Returns:
            (B, H, W, C) tokens and (B, H, W) True where the patch is Detectron2's zero padding.
        """
        self._check_input(x)
        is_pad = padding_tokens(x, self.patch_embed.proj.kernel_size)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        B, H, W, C = x.shape
        tokens = run_blocks(self.blocks[:num_blocks], x.reshape(B, H * W, C), grid_state(B, (H, W), x.device),
                            self._checkpointed())
        return tokens.reshape(B, H, W, C), is_pad

    def forward_reduced(self, x: torch.Tensor) -> Tuple[torch.Tensor, ReducedState]:
        """
        Args:
            x: (B, 3, H_img, W_img) normalised images.
        Returns:
            tokens: (B, M, C) output of the last block; state: their geometry on the (H, W) grid.
        """
        split = self.cluster_layer if self.enabled else len(self.blocks)
        grid, is_pad = self.grid_tokens(x, split)
        B, H, W, C = grid.shape
        if not self.enabled:
            return grid.reshape(B, H * W, C), grid_state(B, (H, W), grid.device)
        with torch.profiler.record_function(CLUSTER_EVENT):
            clusters = self.reduce(grid, is_pad, self.blocks[split:])
        tokens, state = merge(grid.reshape(B, H * W, C), clusters, (H, W))
        return run_blocks(self.blocks[split:], tokens, state, self._checkpointed()), state

    def _checkpointed(self) -> bool:
        return self.use_act_checkpoint and self.training and torch.is_grad_enabled()

    def reduce(self, x: torch.Tensor, is_pad: torch.Tensor, later_blocks: Sequence[Block]):
        """Clusters of the grid tokens ``x`` (B, H, W, C) by ``self.reducer``, for ``later_blocks``."""
        B, H, W, C = x.shape
        reducer = REDUCERS[self.reducer]
        keys = None
        if reducer.needs_keys:  # the keys the next block would compute on the grid, mean over heads
            with torch.no_grad():
                attn = later_blocks[0].attn
                qkv = attn.qkv(later_blocks[0].norm1(x))
                keys = qkv.reshape(B, H, W, 3, attn.num_heads, -1)[:, :, :, 1].mean(3)
        return reducer.cluster(ReduceInput(
            x=x, num_clusters=self.clusters_for(H * W), is_pad=is_pad,
            window_size=next((b.window_size for b in later_blocks if b.window_size), 0), keys=keys,
            knn_k=self.knn_k, radius=self.radius, assign_radius=self.assign_radius, score=self.score,
            adaptive=AdaptiveBudget(self.budget_threshold, self.min_keep, self.max_keep) if self.budget == "adaptive" else None,
            confine_windows=self.confine_windows,
        ))

    def _check_input(self, x: torch.Tensor) -> None:
        """ValueError for input the model cannot process correctly: x must be (B, C, H, W) with the
        patch embedding's C channels and at least one patch per side, and finite (``check_finite``)."""
        conv = self.patch_embed.proj
        if x.dim() != 4 or x.shape[1] != conv.in_channels:
            raise ValueError(
                f"AiluRusViT takes (B, {conv.in_channels}, H, W) images, got a tensor of shape {tuple(x.shape)}."
            )
        if x.shape[0] == 0 or min(x.shape[2:]) < max(conv.kernel_size):
            raise ValueError(
                f"AiluRusViT needs a non-empty batch of images of at least {max(conv.kernel_size)} x "
                f"{max(conv.kernel_size)} px (one patch), got a tensor of shape {tuple(x.shape)}."
            )
        if self.check_finite:
            bad = (~torch.isfinite(x)).flatten(1).sum(1)
            if bad.any():
                raise NonFiniteImage({i: int(n) for i, n in enumerate(bad.tolist()) if n})

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        tokens, state = self.forward_reduced(x)
        return {self._out_features[0]: unfold(tokens, state, self.unfold_mode).permute(0, 3, 1, 2)}


def padding_tokens(images: torch.Tensor, patch_size: Tuple[int, int]) -> torch.Tensor:
    """(B, H, W) True for tokens whose patch is all zero: Detectron2 pads normalised images with
    zeros, and a real patch is never exactly zero in every pixel and channel."""
    return F.max_pool2d(images.abs().amax(1, keepdim=True), patch_size)[:, 0] == 0


def run_blocks(
    blocks: Sequence[Block], tokens: torch.Tensor, state: ReducedState, checkpointed: bool = False
) -> torch.Tensor:
    """Run blocks on one token set; its layouts are built once and shared by those blocks.

    Args:
        tokens: (B, M, C) with geometry ``state``.
        checkpointed: recompute each block's activations in the backward pass instead of storing them.
    """
    layouts = {
        size: window_layout(state, size) if size > 0 else global_layout(state)
        for size in {block.window_size for block in blocks}
    }
    for block in blocks:
        layout = layouts[block.window_size]
        if checkpointed:
            tokens = activation_checkpoint.checkpoint(run_block, block, tokens, state, layout, use_reentrant=False)
        else:
            tokens = run_block(block, tokens, state, layout)
    return tokens


def run_block(block: Block, x: torch.Tensor, state: ReducedState, layout: AttentionLayout) -> torch.Tensor:
    """Detectron2's ``Block.forward`` on compact (B, M, C) tokens grouped by ``layout``."""
    x = x + block.drop_path(reduced_attention(block.norm1(x), layout, block.attn))
    x = x + block.drop_path(block.mlp(block.norm2(x)))
    if block.use_residual_block:  # only before clustering (checked at construction): tokens are the grid
        B, _, C = x.shape
        grid = x.reshape(B, *state.grid_hw, C).permute(0, 3, 1, 2)
        x = block.residual(grid).permute(0, 2, 3, 1).reshape(B, -1, C)
    return x


_VIT_DEPTH = inspect.signature(ViT.__init__).parameters["depth"].default


def check_ailurus_args(depth: int, residual_block_indexes: Sequence[int] = (), **knobs) -> None:
    """Raise ``ValueError`` naming the first AiluRus knob (``AILURUS_ARGS``, ``use_act_checkpoint``)
    whose type or value is invalid for a ViT of ``depth`` blocks; knobs not given take
    ``AiluRusViT``'s defaults. Used by the constructor and, before building anything, by train_net."""
    unknown = set(knobs) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"check_ailurus_args: unknown knobs {sorted(unknown)}")
    k = {**_DEFAULTS, **knobs}
    _check(_is_int(depth) and depth >= 2, "depth", depth, "an integer >= 2 (AiluRus clusters between blocks)")
    _check(_is_int(k["cluster_layer"]) and 1 <= k["cluster_layer"] <= depth - 1, "cluster_layer",
           k["cluster_layer"], f"an integer in 1..{depth - 1}")
    keep = k["keep_ratio"]
    _check(isinstance(keep, numbers.Real) and not isinstance(keep, bool) and 0 < keep <= 1, "keep_ratio", keep,
           "a number in (0, 1]: the fraction of all tokens, padding included, kept as clusters")
    _check(k["num_clusters"] is None or (_is_int(k["num_clusters"]) and k["num_clusters"] >= 1), "num_clusters",
           k["num_clusters"], "None or an integer >= 1")
    radius = k["radius"]
    _check(_is_int(radius) and radius >= 1, "radius", radius, "an integer >= 1")
    _check(_is_int(k["assign_radius"]) and k["assign_radius"] >= 0, "assign_radius", k["assign_radius"],
           "an integer >= 0")
    max_k = (radius + 1) ** 2 - 1  # neighbours of a corner token
    _check(_is_int(k["knn_k"]) and 1 <= k["knn_k"] <= max_k, "knn_k", k["knn_k"],
           f"an integer in 1..{max_k} for radius={radius}")
    _check(k["score"] in ("delta", "rho_delta"), "score", k["score"], "'delta' or 'rho_delta'")
    _check(k["unfold"] in (None, "copy", "residual", "reconstruct"), "unfold", k["unfold"],
           "None (the reducer's own), 'copy', 'residual' or 'reconstruct'")
    _check(isinstance(k["reducer"], str) and k["reducer"] in REDUCERS, "reducer", k["reducer"],
           "one of " + ", ".join(repr(r) for r in REDUCERS))
    _check(k["budget"] in ("fixed", "adaptive"), "budget", k["budget"], "'fixed' or 'adaptive'")
    _check(k["budget"] == "fixed" or REDUCERS[k["reducer"]].adaptive, "budget", k["budget"],
           "'fixed' with reducer=" + repr(k["reducer"]) + " (only " +
           ", ".join(repr(n) for n, r in REDUCERS.items() if r.adaptive) + " supports 'adaptive')")
    _check(_is_real(k["budget_threshold"]) and 0 <= k["budget_threshold"] <= 4, "budget_threshold",
           k["budget_threshold"], "a number in [0, 4] (a squared distance of unit-length features)")
    _check(_is_real(k["min_keep"]) and 0 < k["min_keep"] <= 1, "min_keep", k["min_keep"], "a number in (0, 1]")
    _check(_is_real(k["max_keep"]) and _is_real(k["min_keep"]) and k["min_keep"] <= k["max_keep"] <= 1, "max_keep",
           k["max_keep"], f"a number in [min_keep={k['min_keep']!r}, 1]")
    _check(_is_int(k["freeze_blocks"]) and 0 <= k["freeze_blocks"] <= depth, "freeze_blocks", k["freeze_blocks"],
           f"an integer in 0..{depth}")
    for flag in ("enabled", "check_finite", "use_act_checkpoint", "confine_windows"):
        _check(isinstance(k[flag], bool), flag, k[flag], "True or False (a boolean, not a string or number)")
    late_residual = [i for i in residual_block_indexes if i >= k["cluster_layer"]]
    _check(
        not (k["enabled"] and late_residual),
        "residual_block_indexes",
        late_residual,
        f"indexes < cluster_layer={k['cluster_layer']} (conv blocks need the full grid)",
    )


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # not NaN


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"AiluRusViT: {name}={value!r} is invalid; it must be {allowed}.")


_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(AiluRusViT.__init__).parameters.items()
    if name in AILURUS_ARGS + ("use_act_checkpoint",)
}
