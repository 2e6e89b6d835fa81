from .container_light import ContainerLight, convert_container
from .rest import ResT, convert_rest
from .restv2 import ResTV2, convert_restv2
from .riformer import RIFormer, convert_riformer
from .rmt import RMT, convert_rmt

__all__ = [
    'ContainerLight', 'convert_container', 'RMT', 'convert_rmt', 'ResT',
    'convert_rest', 'ResTV2', 'convert_restv2', 'RIFormer',
    'convert_riformer'
]
