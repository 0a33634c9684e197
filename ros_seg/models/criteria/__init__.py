"""Training losses of the model families: Hungarian matching and set criteria (MaskFormer, Panoptic SegFormer)."""
