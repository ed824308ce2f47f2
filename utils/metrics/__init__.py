"""Detection metrics, in original image pixels: ``voc`` (VOC AP, 07 11-point and all-point; the per-class
table) and ``coco`` (COCO AP@[.5:.95], through pycocotools and a fast form equal to it). Imports
``utils.boxes`` and ``utils.data.records`` only."""
