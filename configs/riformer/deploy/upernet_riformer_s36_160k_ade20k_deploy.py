# Inference-time (re-parameterised) twin of
# ../upernet_riformer_s36_160k_ade20k.py
# Every RIFormer block's affine token mixer is folded into its first norm.
# Loads checkpoints written by tools/deploy/reparameterize.py, and
# training-structure ones too (folded while loading).
_base_ = '../upernet_riformer_s36_160k_ade20k.py'
model = dict(backbone=dict(deploy=True))
