# Inference-time (re-parameterised) twin of ../maskrcnn_riformer_s36_1x.py
# Every RIFormer block's affine token mixer is folded into its first norm.
# Loads checkpoints written by tools/deploy/reparameterize.py, and
# training-structure ones too (folded while loading).
_base_ = '../maskrcnn_riformer_s36_1x.py'
model = dict(backbone=dict(deploy=True))
