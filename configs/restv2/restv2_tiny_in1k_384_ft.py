# ImageNet-1k fine-tuning of ResT v2-Tiny at 384x384 from its 224 weights,
# the official recipe (TRAINING.md "Fine-tuning on ImageNet-1K (384x384)"):
# 8 GPUs x 64 images, lr 1.5e-5 * 512 / 256 = 3e-5, no warm-up, cosine to
# 1e-6 over 30 epochs, weight decay 1e-8, no Mixup / CutMix (label
# smoothing 0.1, RandAugment and random erasing stay), gradient clipping at
# 1.0, no EMA; evaluation warps the image to 384x384 (main.py: no crop at
# 384). restv2_{small,base,large}_in1k_384_ft.py inherit this file.
_base_ = ['./restv2_tiny_in1k_cls.py']

# the whole 224 classifier (backbone and head), converted with
# tools/model_converters/rest2mmvitmix.py --classifier (README.md)
load_from = 'checkpoints/restv2/restv2_tiny_224_in1k_mmpretrain.pth'
# no Mixup / CutMix
model = dict(train_cfg=None)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=384,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=[103.53, 116.28, 123.675],
        fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='Resize',
        scale=(384, 384),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackInputs')
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=1.5e-5 * 512 / 256, weight_decay=1e-8))
param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=0,
        end=30,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
custom_hooks = []
auto_scale_lr = dict(base_batch_size=512)
