# mmseg's Semantic FPN for an mmvitmix backbone on ADE20K: 150 classes,
# batches padded to the 512x512 training crop (crop_size of
# ../datasets/ade20k_512.py). A config replaces the ResNet
# (`backbone=dict(_delete_=True, type='mmvitmix...', ...)`) and sets the
# neck's in_channels to the backbone's stage widths.
_base_ = 'mmseg::_base_/models/fpn_r50.py'

data_preprocessor = dict(size=(512, 512))
model = dict(
    data_preprocessor=data_preprocessor,
    # the base's ResNet `pretrained` would be handed to the backbone
    pretrained=None,
    decode_head=dict(num_classes=150))
