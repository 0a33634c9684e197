"""From a model's class and mask logits to label maps: MaskFormer merging and Panoptic SegFormer's mask-wise merging."""
