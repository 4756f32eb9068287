"""The AiluRus settings, defined once: name, type, default, allowed values and meaning.

``AiluRusSettings`` is the single definition. ``AiluRusViT``'s keyword arguments, its validation,
the yacs ``MODEL.AILURUS`` node, the lazy config's ``use_ailurus`` and the README's settings table
all derive from its fields, so adding a setting means adding one field here.
"""
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, get_args

from .clustering import ScoreMode
from .tokens import SOFT_UNFOLDS, UnfoldMode

__all__ = ["AiluRusSettings", "SETTING_NAMES", "settings_table", "split_settings"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # not NaN


def _quoted(choices: Sequence[str]) -> str:
    names = [repr(c) for c in choices]
    return ", ".join(names[:-1]) + " or " + names[-1]


@dataclass(frozen=True)
class Context:
    """What some checks need besides the settings: the ViT's depth and the reducer registry
    (``ailurus.reducers.REDUCERS``, passed in so that this module stays below the reducers)."""

    depth: int
    reducers: Mapping[str, Any]


Check = Callable[[Any, "AiluRusSettings", Context], bool]
Allowed = Callable[["AiluRusSettings", Context], str]


def _setting(default, meaning: str, ok: Check, allowed: Allowed, docs: str):
    """A field with its check (``ok``), the error text of what is allowed (``allowed``, from the
    other settings and the context) and the same in words for the docs (``docs``)."""
    return field(default=default, metadata=dict(meaning=meaning, ok=ok, allowed=allowed, docs=docs))


def _fixed(text: str) -> Tuple[Allowed, str]:
    return (lambda s, c: text), text


BOOL = (lambda s, c: "True or False (a boolean, not a string or number)"), "bool"


def _ailurus_weight(name: str, meaning: str):
    """A number >= 0, default 0, that only reducer 'ailurus' uses."""
    return _setting(
        0.0, meaning, lambda v, s, c: _is_real(v) and 0 <= v and (v == 0 or s.reducer == "ailurus"),
        lambda s, c: ("a number >= 0" if not (_is_real(getattr(s, name)) and getattr(s, name) >= 0) else
                      "0 unless reducer='ailurus'"),
        "a number >= 0 (reducer 'ailurus')")


def _soft_unfold_knob(name: str, meaning: str, valid: Callable[[Any], bool], text: str):
    """None (the mode's own), or a value ``valid`` accepts where the unfold used is a soft one."""
    def soft(s, c) -> bool:
        return (s.unfold or c.reducers[s.reducer].unfold) in SOFT_UNFOLDS

    return _setting(
        None, meaning, lambda v, s, c: v is None or (valid(v) and soft(s, c)),
        lambda s, c: (f"None or {text}" if not valid(getattr(s, name)) else
                      "None unless the unfold is a soft one (" + _quoted(SOFT_UNFOLDS) + ")"),
        f"None or {text} (soft unfolds)")


@dataclass(frozen=True)
class AiluRusSettings:
    """The AiluRus arguments of ``AiluRusViT`` (docs/method.md); field order is checking order."""

    enabled: bool = _setting(
        True, "False runs every block on the full grid: the baseline, with the same attention kernel",
        lambda v, s, c: isinstance(v, bool), *BOOL)
    cluster_layer: int = _setting(
        3, "the first cluster_layer blocks (0 .. cluster_layer-1) run on the full grid, blocks cluster_layer .. "
           "on the clusters of block cluster_layer-1's output",
        lambda v, s, c: _is_int(v) and 1 <= v <= c.depth - 1,
        lambda s, c: f"an integer in 1..{c.depth - 1}", "an integer in 1..depth-1")
    keep_ratio: float = _setting(
        0.5, "M = ceil(keep_ratio * N) clusters per image, N the canvas's tokens",
        lambda v, s, c: _is_real(v) and 0 < v <= 1,
        *_fixed("a number in (0, 1]: the fraction of all tokens, padding included, kept as clusters"))
    num_clusters: Optional[int] = _setting(
        None, "a fixed M instead of keep_ratio",
        lambda v, s, c: v is None or (_is_int(v) and v >= 1), *_fixed("None or an integer >= 1"))
    reducer: str = _setting(
        "ailurus", "how tokens are reduced: 'ailurus' (density-peak clustering) or a peer "
                   "('tome', 'tome_window', 'expedite', 'pool')",
        lambda v, s, c: isinstance(v, str) and v in c.reducers,
        lambda s, c: "one of " + ", ".join(repr(r) for r in c.reducers), "a name in ailurus.reducers.REDUCERS")
    unfold: Optional[UnfoldMode] = _setting(
        None, "how clusters go back to the grid: 'copy', 'residual', 'reconstruct', 'soft_residual' (docs/method.md); "
              "None: the reducer's own (residual; reconstruct for expedite)",
        lambda v, s, c: v is None or v in get_args(UnfoldMode),
        *_fixed("None (the reducer's own), " + _quoted(get_args(UnfoldMode))))
    unfold_topk: Optional[int] = _soft_unfold_knob(
        "unfold_topk", "soft unfolds: clusters each grid position draws from; None: the mode's own "
                       "(4 for reconstruct, 8 for soft_residual)", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    unfold_temperature: Optional[float] = _soft_unfold_knob(
        "unfold_temperature", "soft unfolds: temperature of the softmax over cosine similarities; None: the mode's "
                              "own (0.05 for reconstruct, 0.1 for soft_residual)",
        lambda v: _is_real(v) and v > 0, "a number > 0")
    budget: str = _setting(
        "fixed", "'fixed': M tokens per image; 'adaptive': as many as the image's content asks for "
                 "(reducer 'ailurus'; keep_ratio and num_clusters unused)",
        lambda v, s, c: v == "fixed" or (v == "adaptive" and c.reducers[s.reducer].adaptive),
        lambda s, c: ("'fixed' or 'adaptive'" if s.budget not in ("fixed", "adaptive") else
                      f"'fixed' with reducer={s.reducer!r} (only "
                      + ", ".join(repr(n) for n, r in c.reducers.items() if r.adaptive) + " supports 'adaptive')"),
        "'fixed' or 'adaptive' (adaptive: reducer 'ailurus' only)")
    budget_threshold: float = _setting(
        0.1, "adaptive budget: a token is detail when the mean squared distance of its unit-length feature "
             "to its 8 neighbours' reaches this (lower keeps more)",
        lambda v, s, c: _is_real(v) and 0 <= v <= 4,
        *_fixed("a number in [0, 4] (a squared distance of unit-length features)"))
    min_keep: float = _setting(
        0.1, "adaptive budget: the fewest tokens an image keeps, as a fraction of its own tokens",
        lambda v, s, c: _is_real(v) and 0 < v <= 1, *_fixed("a number in (0, 1]"))
    max_keep: float = _setting(
        1.0, "adaptive budget: the most tokens an image keeps, as a fraction of its own tokens",
        lambda v, s, c: _is_real(v) and s.min_keep <= v <= 1,
        lambda s, c: f"a number in [min_keep={s.min_keep!r}, 1]", "a number in [min_keep, 1]")
    radius: int = _setting(
        3, "Chebyshev radius of the density-peak neighbourhood",
        lambda v, s, c: _is_int(v) and v >= 1, *_fixed("an integer >= 1"))
    assign_radius: int = _setting(
        4, "Chebyshev radius within which a token looks for its anchor",
        lambda v, s, c: _is_int(v) and v >= 0, *_fixed("an integer >= 0"))
    knn_k: int = _setting(
        5, "nearest neighbours that define a token's density",
        lambda v, s, c: _is_int(v) and 1 <= v <= (s.radius + 1) ** 2 - 1,
        lambda s, c: f"an integer in 1..{(s.radius + 1) ** 2 - 1} for radius={s.radius}",
        "an integer in 1..(radius+1)^2-1")
    score: ScoreMode = _setting(
        "delta", "anchor ranking: 'delta' (distance to the nearest denser neighbour; scale-invariant) or "
                 "'rho_delta' (density times delta)",
        lambda v, s, c: v in get_args(ScoreMode), *_fixed(_quoted(get_args(ScoreMode))))
    confine_windows: bool = _setting(
        False, "keep every cluster inside one window of the later window blocks",
        lambda v, s, c: isinstance(v, bool), *BOOL)
    span_windows: bool = _setting(
        True, "window blocks see a cluster in every window that holds its cells, weighted by its cells there "
               "(False: only in its anchor's window)",
        lambda v, s, c: isinstance(v, bool), *BOOL)
    single_share: float = _setting(
        0.0, "partial merging: this share of the M tokens goes to the image tokens farthest in features from "
             "their cluster's anchor, which stay single tokens instead of merging (0: all merge)",
        lambda v, s, c: _is_real(v) and 0 <= v < 1 and (v == 0 or (s.budget == "fixed" and s.reducer == "ailurus")),
        lambda s, c: ("a number in [0, 1)" if not (_is_real(s.single_share) and 0 <= s.single_share < 1) else
                      "0 unless budget='fixed' and reducer='ailurus'"),
        "a number in [0, 1) (budget 'fixed', reducer 'ailurus')")
    position_weight: float = _ailurus_weight(
        "position_weight", "the anchor assignment adds this times the squared grid distance, in units of the image's "
        "mean squared feature distance between neighbours (0: features only)")
    region_balance: float = _ailurus_weight(
        "region_balance", "anchors are ranked on density-peak scores divided by the mean score of their 16 x "
        "16-token region to this power, spreading them more evenly over the image (0: one ranking for the whole image)")
    check_finite: bool = _setting(
        True, "raise NonFiniteImage for inputs with NaN or Inf pixels",
        lambda v, s, c: isinstance(v, bool), *BOOL)
    freeze_blocks: int = _setting(
        0, "freeze the patch and position embeddings and this many leading blocks (depth: a frozen backbone)",
        lambda v, s, c: _is_int(v) and 0 <= v <= c.depth,
        lambda s, c: f"an integer in 0..{c.depth}", "an integer in 0..depth")

    def validate(self, depth: int, reducers: Mapping[str, Any], residual_block_indexes: Sequence[int] = (),
                 use_act_checkpoint: bool = False) -> "AiluRusSettings":
        """``self``, or ``ValueError`` naming the first setting whose type or value is invalid for a
        ViT of ``depth`` blocks (and for Detectron2's ``residual_block_indexes`` and
        ``use_act_checkpoint``, which AiluRus constrains)."""
        _check(_is_int(depth) and depth >= 2, "depth", depth, "an integer >= 2 (AiluRus clusters between blocks)")
        context = Context(depth=depth, reducers=reducers)
        for f in fields(self):
            value = getattr(self, f.name)
            _check(f.metadata["ok"](value, self, context), f.name, value, f.metadata["allowed"](self, context))
        _check(isinstance(use_act_checkpoint, bool), "use_act_checkpoint", use_act_checkpoint, BOOL[0](self, context))
        late_residual = [i for i in residual_block_indexes if i >= self.cluster_layer]
        _check(not (self.enabled and late_residual), "residual_block_indexes", late_residual,
               f"indexes < cluster_layer={self.cluster_layer} (conv blocks need the full grid)")
        return self


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"AiluRusViT: {name}={value!r} is invalid; it must be {allowed}.")


SETTING_NAMES: Tuple[str, ...] = tuple(f.name for f in fields(AiluRusSettings))
DEFAULTS: Dict[str, Any] = asdict(AiluRusSettings())


def split_settings(kwargs: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(AiluRus settings, the other arguments) of a mapping of ``AiluRusViT`` keyword arguments."""
    ours = {k: v for k, v in kwargs.items() if k in SETTING_NAMES}
    return ours, {k: v for k, v in kwargs.items() if k not in SETTING_NAMES}


def settings_table() -> str:
    """The settings as a markdown table (name, default, allowed, meaning), as in the README."""
    lines = ["| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for f in fields(AiluRusSettings):
        lines.append(f"| `{f.name}` | `{f.default!r}` | {f.metadata['docs']} | {f.metadata['meaning']} |")
    return "\n".join(lines) + "\n"
