"""The model and its loss: the blocks, backbones, necks and heads (``common``, ``backbone``, ``neck``, ``head``,
composed by ``yolo``), raw maps and boxes (``box_coding``), the target assignment (``assign``), the loss
(``loss``, with the gather of ``loss_ops``) and Darknet and foreign weights (``darknet``, ``weights``). It
imports torch, numpy and, from utils/, only ``utils.boxes``."""
