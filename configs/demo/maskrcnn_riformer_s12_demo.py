# Mask R-CNN with a RIFormer-S12 backbone trained FROM SCRATCH on the bundled
# demo shapes: maskrcnn_rmt_t_demo.py with the backbone swapped. After
# training, fold the token mixers into the norms and check the outputs:
#   python tools/train.py configs/demo/maskrcnn_riformer_s12_demo.py
#   python tools/deploy/reparameterize.py \
#       configs/demo/maskrcnn_riformer_s12_demo.py \
#       work_dirs/demo_riformer/iter_600.pth work_dirs/demo_riformer/deploy.pth
#   python tools/test.py configs/demo/maskrcnn_riformer_s12_demo.py \
#       work_dirs/demo_riformer/deploy.pth \
#       --cfg-options model.backbone.deploy=True
_base_ = ['./maskrcnn_rmt_t_demo.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RIFormer',
        arch='s12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 320, 512]))
work_dir = 'work_dirs/demo_riformer'
