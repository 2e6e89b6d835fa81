# ImageNet-1k classification with MMPretrain's ImageClassifier and the
# mmvitmix RIFormer backbone: MMPretrain's riformer-s24_8xb128_in1k.py (the
# distillation-free recipe) with the backbone swapped, as
# riformer_s12_in1k_cls.py. The release checkpoint loads with `load_from`
# after tools/model_converters/riformer2mmvitmix.py.
_base_ = ['mmpretrain::riformer/riformer-s24_8xb128_in1k.py']

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RIFormer',
        arch='s24',
        out_indices=(3, ),
        drop_path_rate=0.1,
        init_cfg=None))

# MMPretrain's RIFormer token mixer is a depthwise 1x1 Conv2d, weight
# (C, 1, 1, 1): decayed by the schedule's paramwise_cfg (no norm, bias or
# flat exemption reaches it). Here the same weight is a (C, ) vector, which
# flat_decay_mult=0 would exempt; this key restores the official groups.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'.token_mixer.weight': dict(decay_mult=1.0)}))
