# Fine-tune Container-Light on a user data set (folder per class) from the
# official ImageNet-1k checkpoint; the shared recipe (a new linear head,
# short schedule) and how to point it at your data:
# configs/_base_/finetune_custom_cls.py.
_base_ = ['../_base_/finetune_custom_cls.py']

model = dict(
    backbone=dict(
        type='mmvitmix.ContainerLight',
        arch='light',
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/container/container_light_in1k.pth')))
