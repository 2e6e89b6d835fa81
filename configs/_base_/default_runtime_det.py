# mmdet's default runtime for every detection config in configs/: the
# mmvitmix backbones registered at start-up, only the latest checkpoint kept.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmdet'

default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
