"""One model under several AiluRus settings, sharing its weights."""
import copy

import torch

from ailurus.vit import AiluRusViT


def with_settings(model: torch.nn.Module, **changes) -> torch.nn.Module:
    """A view of an AiluRus Mask R-CNN whose backbone uses other AiluRus settings (``changes``).

    The view shares every parameter, buffer and submodule with ``model`` (only the containers on
    the path to the ViT are copied), so all settings of a benchmark run the same weights and cost
    no extra memory. The changed settings are validated like the constructor's; ``freeze_blocks``
    acts at construction only, so it cannot be changed here.
    """
    net: AiluRusViT = model.backbone.net
    if "freeze_blocks" in changes:
        raise ValueError("with_settings: freeze_blocks acts when the model is built; build another model instead.")
    view_net = copy.copy(net)
    view_net.settings = net.with_settings(**changes)
    view_backbone = copy.copy(model.backbone)
    view_backbone._modules = {**model.backbone._modules, "net": view_net}
    view = copy.copy(model)
    view._modules = {**model._modules, "backbone": view_backbone}
    return view
