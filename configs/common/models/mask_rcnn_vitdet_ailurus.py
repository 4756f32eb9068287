# ViTDet's Mask R-CNN (Detectron2 model zoo) with the AiluRus backbone. Same parameter names as
# ViTDet, so its checkpoints and MAE weights load unchanged; AiluRus settings live on backbone.net.
from detectron2 import model_zoo

from ailurus import use_ailurus

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
use_ailurus(model)
