# mmseg's default runtime for every segmentation config in configs/, with the
# mmvitmix backbones registered at start-up (checkpoint hooks are set by the
# schedules, as in mmseg).
_base_ = 'mmseg::_base_/default_runtime.py'

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmseg'
