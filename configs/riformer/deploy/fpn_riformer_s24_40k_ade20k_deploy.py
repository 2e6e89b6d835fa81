# Inference-time (re-parameterised) twin of ../fpn_riformer_s24_40k_ade20k.py
# Every RIFormer block's affine token mixer is folded into its first norm.
# Loads checkpoints written by tools/deploy/reparameterize.py, and
# training-structure ones too (folded while loading).
_base_ = '../fpn_riformer_s24_40k_ade20k.py'
model = dict(backbone=dict(deploy=True))
