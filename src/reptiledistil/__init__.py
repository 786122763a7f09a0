"""ReptileDistil: knowledge distillation with Reptile meta-learning for BERT compression."""

__version__ = "0.1.0"
