"""Generators of small datasets in the exact formats of COCO, PASCAL VOC and ADE20K."""
