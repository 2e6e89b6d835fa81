# ImageNet-1k classification, ResT v2-Tiny, the official recipe
# (wofmanaf/ResT TRAINING.md + main.py defaults; see README.md):
# 8 GPUs x 256 images, lr 1.5e-4 * 2048 / 256 = 1.2e-3, AdamW (weight
# decay 0.05, none on 1-D parameters), 50 linear warm-up epochs from 0,
# cosine to 1e-6 over 300 epochs, gradient clipping at norm 1.0, EMA of the
# weights (decay 0.9999, evaluated), mixed precision, drop path 0.1; timm's
# augmentation (RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25,
# Mixup 0.8 / CutMix 1.0, label smoothing 0.1, bicubic); evaluation:
# shorter side 224 then the 224 centre crop (main.py's crop_pct 1.0).
# restv2_{small,base,large}_in1k_cls.py inherit this file.
_base_ = [
    '../_base_/models/imageclassifier_deit.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(
        type='mmvitmix.ResTV2',
        arch='tiny',
        out_indices=(3, ),
        drop_path_rate=0.1,
        # stage-4 LayerNorm = the official final norm (eps 1e-6); the
        # backbone's own init is the official one
        init_cfg=None),
    head=dict(in_channels=768))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=224,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs')
]
train_dataloader = dict(batch_size=256)
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW',
        lr=1.5e-4 * 2048 / 256,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(flat_decay_mult=0.0),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    # from (almost) 0, as the official cosine_scheduler's warm-up
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=True,
        begin=0,
        end=50,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=50,
        end=300,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
auto_scale_lr = dict(base_batch_size=2048)
