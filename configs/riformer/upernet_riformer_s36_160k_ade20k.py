# UperNet, 160k iterations on ADE20K, RIFormer-S36 backbone.
# Neither RIFormer nor PoolFormer publishes an UperNet recipe; this is the
# one MMSegmentation uses for Swin (AdamW lr 6e-5, betas (0.9, 0.999),
# weight decay 0.01 with none on norms, layer scales and token mixers,
# 1500 iterations of linear warmup, then poly power 1.0; 160k iterations of
# 8 GPUs x 2 images, 512x512 crops).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# MMPretrain's ImageNet-1k checkpoint, converted on the fly at load time
pretrained = 'checkpoints/riformer/riformer-s36_32xb128_in1k_20230406-fdfcd3b0.pth'  # noqa: E501
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RIFormer',
        arch='s36',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                   weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'gamma': dict(decay_mult=0.),
            'token_mixer': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False),
]
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
