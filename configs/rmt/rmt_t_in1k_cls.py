# ImageNet-1k classification, RMT-T, the official recipe
# (qhfan/RMT classfication_release/main.py defaults + run.sh; see README):
# DeiT recipe, 16 GPUs x 128 images (the official logs peak at lr 2e-3 =
# 5e-4 * 2048 / 512), AdamW wd 0.05, 5 warm-up epochs from 1e-6, cosine to
# 1e-5, 300 epochs, EMA 0.99996 ** (2048 / 512) with both the model and its
# EMA validated every epoch, no gradient clipping, drop path 0.1 (hard-coded
# in the official RMT_T3). Recipe record: recipes.yml.
# Head: the official classifier, Linear(512, 1024) + BN + Swish per position,
# avgpool, Linear (mmvitmix.RMTClsHead); no output norm, no neck.
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
        type='mmvitmix.RMT',
        arch='t',
        out_indices=(3, ),
        drop_path_rate=0.1,
        out_norm_cfg=None,
        # the official init (trunc-normal(0.02) Linear, LN 1/0) is the
        # backbone's own
        init_cfg=None),
    neck=None,
    head=dict(
        _delete_=True,
        type='mmvitmix.RMTClsHead',
        num_classes=1000,
        in_channels=512,
        projection=1024,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader

# lr 5e-4 * 2048 / 512; warm-up from 1e-6 and min lr 1e-5, not scaled.
# Weight decay as timm's create_optimizer gives it (none on parameters with
# ndim <= 1): the official layer scales of RMT-B / L (gamma_1 / gamma_2) are
# (1, 1, 1, C) tensors and so are decayed; here they are (C, ), so the
# flat-parameter rule of the base must not reach them.
optim_wrapper = dict(
    optimizer=dict(lr=2e-3),
    paramwise_cfg=dict(custom_keys={'.gamma': dict(decay_mult=1.0)}))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6 / 2e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=5,
        end=300,
        convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=2048)

# timm ModelEma, decay 0.99996 ** (2048 / 512) per iteration (momentum is
# 1 - decay), averaging the buffers (BatchNorm statistics) too, as ModelEma
# averages the whole state_dict. The official loop validates the model and
# its EMA every epoch and reports the better (published RMT-T 82.4 is the
# model's, RMT-S / B / L the EMA's, RMT_log/*.txt): MMPretrain's EMAHook
# validates both (the model's metrics are logged with the suffix _origin).
custom_hooks = [
    dict(
        type='EMAHook',
        momentum=1 - 0.99996**(2048 / 512),
        update_buffers=True,
        evaluate_on_ema=True,
        evaluate_on_origin=True,
        priority='ABOVE_NORMAL')
]

# the official loop keeps the latest checkpoint and the best one (by the
# better of the model's and the EMA's top-1; here by the EMA's)
default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=1, save_best='accuracy/top1'))
