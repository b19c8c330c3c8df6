from .backbones import BACKBONES, create_backbone
from .grl import GradReverse, grad_reverse
from .network import DomainAdaptNet, create_network

__all__ = ["BACKBONES", "DomainAdaptNet", "GradReverse", "create_backbone", "create_network", "grad_reverse"]
