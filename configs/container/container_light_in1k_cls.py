# ImageNet-1k classification, Container-Light, the official recipe
# (allenai/container main.py defaults + README training command; see
# README): DeiT recipe, 8 GPUs x 128 images, lr 5e-4 * 1024 / 512 = 1e-3,
# AdamW wd 0.05, 5 warm-up epochs from 1e-6, cosine to 1e-5, 300 epochs, no
# gradient clipping, EMA 0.99996 kept but not validated, drop path 0.1.
# Recipe record: recipes.yml.
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
        type='mmvitmix.ContainerLight',
        arch='light',
        out_indices=(3, ),
        drop_path_rate=0.1,
        # stage-4 BatchNorm = the official final norm; the backbone's own
        # init is the official one
        init_cfg=None),
    head=dict(in_channels=512))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader

# the schedule base is DeiT's at batch 1024: lr 1e-3, warm-up from 1e-6,
# min lr 1e-5, as the official
# timm ModelEma, decay 0.99996 per iteration (not batch-scaled here),
# averaging the buffers (BatchNorm statistics) too, as ModelEma averages the
# whole state_dict. The official loop validates only the model itself (the
# EMA is saved beside it, never evaluated): evaluate_on_ema=False.
custom_hooks = [
    dict(
        type='EMAHook',
        momentum=1 - 0.99996,
        update_buffers=True,
        evaluate_on_ema=False,
        evaluate_on_origin=True,
        priority='ABOVE_NORMAL')
]

# the official loop keeps only the latest checkpoint (model and EMA)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1))
