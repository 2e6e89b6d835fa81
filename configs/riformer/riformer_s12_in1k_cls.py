# ImageNet-1k classification with MMPretrain's ImageClassifier and the
# mmvitmix RIFormer backbone: MMPretrain's riformer-s12_8xb128_in1k.py with
# the backbone swapped. out_indices=(3,) returns the last stage after its
# GroupNorm (MMPretrain's norm6), which the GlobalAveragePooling neck and
# the linear head consume. MMPretrain's release checkpoint
# (riformer-s12_32xb128_in1k_20230406-6741ce71.pth) loads into this model
# with `load_from` after tools/model_converters/riformer2mmvitmix.py, or into
# the backbone through init_cfg=dict(type='Pretrained', checkpoint=...).
_base_ = ['mmpretrain::riformer/riformer-s12_8xb128_in1k.py']

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RIFormer',
        arch='s12',
        out_indices=(3, ),
        drop_path_rate=0.1,
        # None: the backbone's own init is MMPretrain's recipe for RIFormer
        # (trunc-normal(0.02) convs and token mixers, GroupNorm 1/0)
        init_cfg=None))

# MMPretrain's RIFormer token mixer is a depthwise 1x1 Conv2d, weight
# (C, 1, 1, 1): decayed by the schedule's paramwise_cfg (no norm, bias or
# flat exemption reaches it). Here the same weight is a (C, ) vector, which
# flat_decay_mult=0 would exempt; this key restores the official groups.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'.token_mixer.weight': dict(decay_mult=1.0)}))
