# Fine-tune RIFormer-S12 on a user data set (folder per class) from the
# official ImageNet-1k checkpoint; the shared recipe (a new linear head,
# short schedule) and how to point it at your data:
# configs/_base_/finetune_custom_cls.py.
_base_ = ['../_base_/finetune_custom_cls.py']

# MMPretrain's release checkpoint, converted on the fly at load time
pretrained = 'checkpoints/riformer/riformer-s12_32xb128_in1k_20230406-6741ce71.pth'  # noqa: E501

model = dict(
    backbone=dict(
        type='mmvitmix.RIFormer',
        arch='s12',
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint=pretrained)))
