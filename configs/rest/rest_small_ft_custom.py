# Fine-tune ResT-Small on a user data set (folder per class) from the
# official ImageNet-1k checkpoint; the shared recipe (a new linear head,
# short schedule) and how to point it at your data:
# configs/_base_/finetune_custom_cls.py.
_base_ = ['../_base_/finetune_custom_cls.py']

model = dict(
    backbone=dict(
        type='mmvitmix.ResT',
        arch='small',
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/rest/rest_small.pth')))
