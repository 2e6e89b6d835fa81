# ImageNet-1k classification, ResT-Lite, the official ResT v1 recipe
# (wofmanaf/ResT at 537086d: main.py defaults + get_started.md; see README):
# DeiT recipe, 8 GPUs x 256 images, lr 5e-4 * 2048 / 512 = 2e-3, warm-up
# from 1e-6 and min lr 1e-5 scaled the same way (4e-6, 4e-5), AdamW wd 0.05,
# 5 warm-up epochs, cosine, 300 epochs, gradient clipping at norm 5, no EMA
# (commented out in the v1 main.py), drop path 0.1. Recipe record:
# recipes.yml.
_base_ = [
    '../_base_/models/imageclassifier_deit.py',
    '../_base_/datasets/imagenet_deit_224.py',
    '../_base_/schedules/imagenet_deit_300e.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(
        type='mmvitmix.ResT',
        arch='lite',
        out_indices=(3, ),
        drop_path_rate=0.1,
        # stage-4 LayerNorm = the official final norm; the backbone's own
        # init is the official one
        init_cfg=None),
    head=dict(in_channels=512))

train_dataloader = dict(batch_size=256)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=2e-3), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6 / 5e-4,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5 * 2048 / 512,
        by_epoch=True,
        begin=5,
        end=300,
        convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=2048)

# the official v1 loop keeps the latest checkpoint and the best one (top-1)
default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=1, save_best='accuracy/top1'))
