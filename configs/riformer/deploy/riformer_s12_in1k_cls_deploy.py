# Inference-time (re-parameterised) twin of ../riformer_s12_in1k_cls.py
# Every RIFormer block's affine token mixer is folded into its first norm.
# Loads checkpoints written by tools/deploy/reparameterize.py, and
# training-structure ones too (folded while loading).
_base_ = '../riformer_s12_in1k_cls.py'
model = dict(backbone=dict(deploy=True))
