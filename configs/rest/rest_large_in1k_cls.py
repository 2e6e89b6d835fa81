# ImageNet-1k classification, ResT-Large: rest_lite_in1k_cls.py (the
# official v1 recipe); get_started.md: drop path 0.3, 8 GPUs x 240, so the
# linearly scaled lr, warm-up start and min lr are 5e-4, 1e-6 and 1e-5
# times 1920 / 512.
_base_ = ['./rest_lite_in1k_cls.py']

model = dict(
    backbone=dict(arch='large', drop_path_rate=0.3),
    head=dict(in_channels=768))

train_dataloader = dict(batch_size=240)

optim_wrapper = dict(optimizer=dict(lr=5e-4 * 1920 / 512))
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
        eta_min=1e-5 * 1920 / 512,
        by_epoch=True,
        begin=5,
        end=300,
        convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=1920)
