"""xmkd: cross-modal knowledge distillation between LiDAR and cameras for 3D perception."""

__version__ = "0.1.0"
