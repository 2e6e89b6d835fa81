# mmseg's UperNet (with its auxiliary FCN head) for an mmvitmix backbone on
# ADE20K: 150 classes, batches padded to the 512x512 training crop
# (crop_size of ../datasets/ade20k_512.py). A config replaces the ResNet
# (`backbone=dict(_delete_=True, type='mmvitmix...', ...)`) and sets the
# in_channels of both heads to the backbone's stage widths (the auxiliary
# head reads stage 3).
_base_ = 'mmseg::_base_/models/upernet_r50.py'

data_preprocessor = dict(size=(512, 512))
model = dict(
    data_preprocessor=data_preprocessor,
    # the base's ResNet `pretrained` would be handed to the backbone
    pretrained=None,
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
